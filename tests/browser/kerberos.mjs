// Windows login end to end in real headless Chromium (driven by tests/it/kerberos_browser.rs):
// the built-in page → Kerberos/SPNEGO login → back to the page → live data over the engine
// websocket, answered by qlik-sim.
//
// Environment:
//   GATEWAY_URL   http://localhost:PORT (the host must be `localhost`: the ticket is HTTP/localhost)
//   KRB5_CONFIG, KRB5CCNAME  passed through to Chromium, which reads the ticket from that cache
//   EXPECT_USER   the user the page must show (default TEST\alice)
//   SCREENSHOT    optional path of a PNG of the final page (also written on failure)
//   CHROMIUM      optional browser binary (default /usr/bin/chromium)
//   STEP_TIMEOUT_MS  per-step timeout (default 20000)
//
// Prints one JSON line `{"ok": true|false, ...}` and exits non-zero on failure.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const started = Date.now();
const base = (process.env.GATEWAY_URL || '').replace(/\/+$/, '');
const expectUser = process.env.EXPECT_USER || 'TEST\\alice';
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const stepTimeout = Number(process.env.STEP_TIMEOUT_MS || 20000);
const screenshot = process.env.SCREENSHOT || '';

const result = { ok: false, gateway: base };
const log = (...a) => console.error('[kerberos.mjs]', ...a);

function check(cond, message) {
  if (!cond) throw new Error(message);
}

let context;
const profile = mkdtempSync(join(tmpdir(), 'qlik-gateway-chromium-'));
try {
  check(/^http:\/\/localhost:\d+$/.test(base), `GATEWAY_URL must be http://localhost:PORT, got ${JSON.stringify(base)}`);
  check(process.env.KRB5CCNAME, 'KRB5CCNAME is not set: Chromium would have no Kerberos ticket');

  // A fresh profile per run. Playwright adds --headless (headless: true), --no-sandbox
  // (chromiumSandbox: false, its default) and --user-data-dir (the persistent context's dir).
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    timeout: stepTimeout,
    env: process.env,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // Without an allowlist Chromium never answers Negotiate; `--auth-server-whitelist` is gone.
      '--auth-server-allowlist=localhost',
    ],
  });
  context.setDefaultTimeout(stepTimeout);
  const page = context.pages()[0] || (await context.newPage());
  page.on('console', (m) => {
    if (m.type() === 'error') log('page console error:', m.text());
  });
  page.on('pageerror', (e) => log('page error:', e.message));

  // Warm-up: Chromium 156 fails the first Negotiate challenge after launch
  // (ERR_UNSUPPORTED_AUTH_SCHEME); every later one works. Its outcome doesn't matter, and any
  // session it might create is dropped so the real navigation runs the whole flow.
  const warm = await page.goto(`${base}/_gateway/login`).catch((e) => ({ status: () => `error: ${e.message}` }));
  result.warmupStatus = warm ? warm.status() : null;
  await context.clearCookies();

  // Everything the main navigation and the page do over the network.
  const exchanges = [];
  page.on('response', (resp) => {
    const req = resp.request();
    if (!req.url().startsWith(base)) return;
    exchanges.push({
      method: req.method(),
      path: req.url().slice(base.length),
      status: resp.status(),
      location: resp.headers().location,
    });
  });
  const sockets = [];
  page.on('websocket', (ws) => {
    const s = { url: ws.url(), received: 0, sent: 0, closed: false };
    sockets.push(s);
    ws.on('framesent', () => s.sent++);
    ws.on('framereceived', () => s.received++);
    ws.on('close', () => (s.closed = true));
  });

  // Unauthenticated page → 302 /_gateway/login?return_to=/ → 401 Negotiate → token → 302 /.
  const resp = await page.goto(`${base}/`);
  result.exchanges = exchanges;
  result.finalUrl = page.url();
  check(resp && resp.status() === 200, `the page answered ${resp && resp.status()} after login`);
  check(page.url() === `${base}/`, `ended at ${page.url()}, not ${base}/`);
  // The redirect chain of the main navigation, as Chromium followed it. Chromium answers the
  // 401 Negotiate challenge inside its network stack, so the 401 and the retry with
  // `Authorization: Negotiate …` are not events here; the proof that SPNEGO ran is the login's
  // final 302, which carries the gateway's last SPNEGO token: a NegTokenResp (tag a1) with
  // negState accept-completed (a0 03 0a 01 00), and an AP-REP only if the browser had asked for
  // mutual authentication (Chromium doesn't).
  const chain = [];
  for (let r = resp.request(); r; r = r.redirectedFrom()) chain.unshift(r);
  result.redirectChain = chain.map((r) => r.url().slice(base.length));
  check(
    chain.length === 3 &&
      result.redirectChain[0] === '/' &&
      result.redirectChain[1].startsWith('/_gateway/login?return_to=') &&
      result.redirectChain[2] === '/',
    `expected / → /_gateway/login?return_to=… → /, got ${result.redirectChain.join(' → ')}`,
  );
  const loginResp = await chain[1].response();
  const loginHeaders = loginResp ? await loginResp.allHeaders() : {};
  result.login = { status: loginResp && loginResp.status(), wwwAuthenticate: loginHeaders['www-authenticate'] };
  const spnego = Buffer.from((loginHeaders['www-authenticate'] || '').replace(/^Negotiate /i, ''), 'base64');
  check(
    loginResp && loginResp.status() === 302 && spnego[0] === 0xa1 && spnego.includes(Buffer.from([0xa0, 0x03, 0x0a, 0x01, 0x00])),
    `the login's 302 carries no SPNEGO accept-completed token: ${JSON.stringify(result.login)}`,
  );

  // The user from /_gateway/me, and the Sales app's table rendered from engine data.
  const fn = ({ user }) => {
    const $ = (id) => document.getElementById(id);
    const rows = [...$('cube').tBodies[0].rows].map((tr) => [...tr.cells].slice(0, 3).map((c) => c.textContent));
    const ready = $('user').textContent === user && /^live · /.test($('status').textContent) && rows.length > 0;
    return ready && { user: $('user').textContent, title: $('title').textContent, status: $('status').textContent, rows };
  };
  const first = await (await page.waitForFunction(fn, { user: expectUser }, { polling: 100 })).jsonValue();
  Object.assign(result, { user: first.user, title: first.title, rows: first.rows });
  check(first.title === 'Sales', `app title ${JSON.stringify(first.title)}, expected "Sales"`);
  const sales = Object.fromEntries(first.rows.map((r) => [r[0], r[1]]));
  const want = { North: '1500', South: '1350', East: '1700', West: '1050' };
  check(JSON.stringify(sales) === JSON.stringify(want), `Sum(Sales) by region ${JSON.stringify(sales)}, expected ${JSON.stringify(want)}`);

  // Live: the page re-reads the layout every 2 s; qlik-sim's Live() measure changes each time.
  const liveBefore = first.rows.map((r) => r[2]).join(',');
  const liveAfter = await (
    await page.waitForFunction(
      (before) => {
        const now = [...document.getElementById('cube').tBodies[0].rows].map((tr) => tr.cells[2].textContent).join(',');
        return now !== before && now;
      },
      liveBefore,
      { polling: 100 },
    )
  ).jsonValue();
  result.live = [liveBefore, liveAfter];

  result.websockets = sockets.map((s) => ({ ...s }));
  const engine = sockets.find((s) => new URL(s.url).pathname.endsWith('/app/') && s.received > 0);
  check(engine, `no engine websocket with answers: ${JSON.stringify(sockets)}`);
  check(new URL(engine.url).host === new URL(base).host, `the engine websocket went to ${engine.url}, not the page's origin`);

  // The gateway cookie is HttpOnly: present in the browser, invisible to page scripts.
  const docCookie = await page.evaluate(() => document.cookie);
  const jar = await context.cookies(base);
  const gw = jar.find((c) => c.name === 'qlik-gateway' || c.name === '__Host-qlik-gateway');
  result.cookie = gw ? { name: gw.name, httpOnly: gw.httpOnly, sameSite: gw.sameSite, secure: gw.secure } : null;
  result.documentCookie = docCookie;
  check(gw, `no gateway cookie in the browser: ${JSON.stringify(jar.map((c) => c.name))}`);
  check(gw.httpOnly, 'the gateway cookie is not HttpOnly');
  check(!docCookie.includes(gw.name), `document.cookie exposes the gateway cookie: ${docCookie}`);

  result.ok = true;
} catch (e) {
  result.error = e && e.message ? e.message.split('\n')[0] : String(e);
  log(e && e.stack ? e.stack : e);
} finally {
  if (context) {
    if (screenshot) {
      const page = context.pages()[0];
      if (page) {
        await page.screenshot({ path: screenshot, fullPage: true }).then(
          () => (result.screenshot = screenshot),
          (e) => log('screenshot failed:', e.message),
        );
      }
    }
    await context.close().catch((e) => log('closing the browser:', e.message));
  }
  rmSync(profile, { recursive: true, force: true });
  result.ms = Date.now() - started;
  console.log(JSON.stringify(result));
  process.exitCode = result.ok ? 0 : 1;
}
