// OIDC login end to end in real headless Chromium (driven by tests/it/oidc_browser.rs): the built-in
// page → /_gateway/login → the OpenID Provider's login form (tests/oidc/provider.mjs), filled in
// and submitted → /_gateway/callback → the page with the user and live data over the engine
// websocket, answered by qlik-sim → logout through the IdP's end_session endpoint → back at
// /_gateway/logged-out → the next visit shows the IdP's login form again (its session ended).
//
// Environment:
//   GATEWAY_URL   http://127.0.0.1:PORT (the gateway's public_url)
//   IDP_URL       http://127.0.0.1:PORT2 (the issuer)
//   EXPECT_USER   the user the page must show (default CORP\alice)
//   USERNAME, PASSWORD  what to type into the IdP's form (default alice / alice-pw)
//   LOGOUT        how to log out: `button` (default: the page's own Log out button, which follows
//                 the IdP's end_session_url) or `form` (a form POST to /_gateway/logout, which the
//                 browser follows to the IdP and back)
//   HANDSHAKE     if set, print {"phase":"logged-in",...} once logged in with live data and wait
//                 for a line on stdin before logging out (the driver inspects qlik-sim meanwhile)
//   SCREENSHOT    optional path of a PNG of the final page (also written on failure)
//   CHROMIUM      optional browser binary (default /usr/bin/chromium)
//   STEP_TIMEOUT_MS  per-step timeout (default 20000)
//
// Prints one JSON line `{"ok": true|false, ...}` last and exits non-zero on failure.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const started = Date.now();
const base = (process.env.GATEWAY_URL || '').replace(/\/+$/, '');
const idp = (process.env.IDP_URL || '').replace(/\/+$/, '');
const expectUser = process.env.EXPECT_USER || 'CORP\\alice';
const username = process.env.USERNAME || 'alice';
const password = process.env.PASSWORD || 'alice-pw';
const logoutVia = process.env.LOGOUT || 'button';
const handshake = !!process.env.HANDSHAKE;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const stepTimeout = Number(process.env.STEP_TIMEOUT_MS || 20000);
const screenshot = process.env.SCREENSHOT || '';

const result = { ok: false, gateway: base, idp, step: 'start' };
const log = (...a) => console.error('[oidc.mjs]', ...a);

function check(cond, message) {
  if (!cond) throw new Error(message);
}

/// `url` without the origin when it is the gateway's or the IdP's, and with long query values
/// (codes, tokens, PKCE) cut, for short readable chains.
function short(url) {
  const cut = url.replace(/=([^&]{40})[^&]+/g, '=$1…');
  if (cut.startsWith(`${base}/`)) return `gw:${cut.slice(base.length)}`;
  if (cut.startsWith(`${idp}/`)) return `idp:${cut.slice(idp.length)}`;
  return cut;
}

/// The redirect chain that ended with `resp`, oldest first.
function chainOf(resp) {
  const chain = [];
  for (let r = resp.request(); r; r = r.redirectedFrom()) chain.unshift(r);
  return chain;
}

/// The first line from stdin (the driver's go-ahead).
function readLine() {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: process.stdin });
    const closed = () => reject(new Error('stdin closed before the go-ahead to log out'));
    rl.once('close', closed);
    rl.once('line', (line) => {
      rl.off('close', closed);
      rl.close();
      resolve(line);
    });
  });
}

let context;
const profile = mkdtempSync(join(tmpdir(), 'qlik-gateway-chromium-'));
try {
  check(/^http:\/\/127\.0\.0\.1:\d+$/.test(base), `GATEWAY_URL must be http://127.0.0.1:PORT, got ${JSON.stringify(base)}`);
  check(/^https?:\/\/[^/]+$/.test(idp) && idp !== base, `IDP_URL must be the issuer's origin, got ${JSON.stringify(idp)}`);

  // A fresh profile per run. Playwright adds --headless (headless: true) and --user-data-dir.
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    timeout: stepTimeout,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  context.setDefaultTimeout(stepTimeout);
  const page = context.pages()[0] || (await context.newPage());
  page.on('console', (m) => {
    if (m.type() === 'error') log('page console error:', m.text());
  });
  page.on('pageerror', (e) => log('page error:', e.message));
  page.on('requestfailed', (r) => log('request failed:', r.method(), r.url(), r.failure() && r.failure().errorText));

  // Every top-level navigation request, on either origin, with its answer.
  const navigations = [];
  page.on('response', (resp) => {
    const req = resp.request();
    if (resp.status() >= 400) log('HTTP', resp.status(), req.method(), req.url());
    if (!req.isNavigationRequest() || req.frame() !== page.mainFrame()) return;
    navigations.push({
      method: req.method(),
      url: short(req.url()),
      status: resp.status(),
      location: resp.headers().location ? short(new URL(resp.headers().location, req.url()).href) : undefined,
    });
  });
  result.navigations = navigations;
  const sockets = [];
  page.on('websocket', (ws) => {
    const s = { url: ws.url(), received: 0, sent: 0, closed: false };
    sockets.push(s);
    ws.on('framesent', () => s.sent++);
    ws.on('framereceived', () => s.received++);
    ws.on('close', () => (s.closed = true));
  });

  // 1. Unauthenticated page → 302 /_gateway/login?return_to=/ → 302 IdP /auth?… → 303 the form.
  result.step = 'to the IdP';
  const toForm = await page.goto(`${base}/`);
  check(toForm && toForm.status() === 200, `the IdP's login page answered ${toForm && toForm.status()}`);
  const loginChain = chainOf(toForm);
  result.loginRedirects = loginChain.map((r) => short(r.url()));
  check(
    loginChain.length >= 4 &&
      loginChain[0].url() === `${base}/` &&
      loginChain[1].url().startsWith(`${base}/_gateway/login?return_to=`) &&
      loginChain[2].url().startsWith(`${idp}/auth?`) &&
      page.url().startsWith(`${idp}/interaction/`),
    `expected gw:/ → gw:/_gateway/login?return_to=… → idp:/auth?… → idp:/interaction/…, got ${result.loginRedirects.join(' → ')}`,
  );
  // The authorization request the gateway made: code flow, PKCE S256, state, nonce, our callback.
  const auth = new URL(loginChain[2].url()).searchParams;
  result.authorize = Object.fromEntries([...auth].filter(([k]) => !['state', 'nonce', 'code_challenge'].includes(k)));
  check(auth.get('response_type') === 'code', `response_type=${auth.get('response_type')}`);
  check(auth.get('redirect_uri') === `${base}/_gateway/callback`, `redirect_uri=${auth.get('redirect_uri')}`);
  check(auth.get('code_challenge_method') === 'S256' && auth.get('code_challenge'), 'no PKCE S256 challenge');
  check(auth.get('state') && auth.get('nonce'), 'no state or nonce');
  check(/(^| )groups( |$)/.test(auth.get('scope') || ''), `scope=${auth.get('scope')} lacks groups`);
  // The login cookie that ties the callback to this browser: HttpOnly, scoped to the gateway.
  const pendingCookie = (await context.cookies(base)).find((c) => c.name === 'qlik-gateway-oidc');
  check(pendingCookie && pendingCookie.httpOnly, `no HttpOnly qlik-gateway-oidc cookie while at the IdP`);

  // 2. The IdP's form, as a user fills it in.
  result.step = 'login form';
  await page.locator('input[name=username]').fill(username);
  await page.locator('input[name=password]').fill(password);
  const landed = page.waitForResponse((r) => r.url() === `${base}/` && r.request().isNavigationRequest());
  await page.locator('button[name=login]').click();
  const pageResp = await landed;
  check(pageResp.status() === 200, `the page answered ${pageResp.status()} after login`);
  const backChain = chainOf(pageResp);
  result.callbackRedirects = backChain.map((r) => short(r.url()));
  const callback = backChain.find((r) => r.url().startsWith(`${base}/_gateway/callback?`));
  check(
    backChain[0].method() === 'POST' && backChain[0].url().startsWith(`${idp}/interaction/`) && callback,
    `expected POST idp:/interaction/…/login → … → gw:/_gateway/callback?… → gw:/, got ${result.callbackRedirects.join(' → ')}`,
  );
  const cbParams = new URL(callback.url()).searchParams;
  check(cbParams.get('code') && cbParams.get('state') === auth.get('state'), 'the callback lacks the code or the state');
  const cbResp = await callback.response();
  check(cbResp && cbResp.status() === 302, `the callback answered ${cbResp && cbResp.status()}`);
  await page.waitForURL(`${base}/`);

  // 3. The user from /_gateway/me, and the Sales app's table rendered from engine data.
  result.step = 'live data';
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

  // What the gateway made of the ID token's claims.
  const me = await page.evaluate(() => fetch('/_gateway/me', { headers: { Accept: 'application/json' } }).then((r) => r.json()));
  result.me = { userDirectory: me.userDirectory, userId: me.userId, provider: me.provider, attributes: me.attributes };
  check(me.provider === 'oidc', `/_gateway/me provider ${JSON.stringify(me.provider)}`);

  // The gateway cookie is HttpOnly: present in the browser, invisible to page scripts; the login
  // cookie is gone, and no IdP token reached the page's cookies.
  const docCookie = await page.evaluate(() => document.cookie);
  const jar = await context.cookies(base);
  const gw = jar.find((c) => c.name === 'qlik-gateway' || c.name === '__Host-qlik-gateway');
  result.cookie = gw ? { name: gw.name, httpOnly: gw.httpOnly, sameSite: gw.sameSite, secure: gw.secure } : null;
  result.documentCookie = docCookie;
  result.cookieNames = jar.map((c) => c.name);
  check(gw, `no gateway cookie in the browser: ${JSON.stringify(result.cookieNames)}`);
  check(gw.httpOnly, 'the gateway cookie is not HttpOnly');
  check(!docCookie.includes(gw.name), `document.cookie exposes the gateway cookie: ${docCookie}`);
  check(!jar.some((c) => c.name === 'qlik-gateway-oidc'), 'the login cookie (qlik-gateway-oidc) outlived the callback');

  if (handshake) {
    result.step = 'handshake';
    console.log(JSON.stringify({ phase: 'logged-in', user: first.user }));
    await readLine();
  }

  // 4. Logout: POST /_gateway/logout → 303 the IdP's end_session → its confirmation (submitted by
  //    its script) → 303 /_gateway/logged-out.
  result.step = 'logout';
  const before = navigations.length;
  // The full end_session URL (the navigation log cuts long values such as id_token_hint).
  let endSessionUrl = '';
  const onEnd = (req) => {
    if (req.isNavigationRequest() && req.url().startsWith(`${idp}/session/end?`)) endSessionUrl ||= req.url();
  };
  page.on('request', onEnd);
  if (logoutVia === 'button') {
    await page.locator('#logout').click();
  } else {
    // A same-origin HTML form, as a mashup's logout link would be; a real click, so that
    // Chromium sends the Origin and follows the redirects itself.
    await page.evaluate(() => {
      document.body.insertAdjacentHTML(
        'beforeend',
        '<form id="gw-logout" method="post" action="/_gateway/logout"><button id="gw-logout-submit" type="submit">Log out (form)</button></form>',
      );
    });
    await page.locator('#gw-logout-submit').click();
  }
  await page.waitForURL(`${base}/_gateway/logged-out`, { waitUntil: 'load' });
  page.off('request', onEnd);
  const logoutNavs = navigations.slice(before);
  result.logoutNavigations = logoutNavs.map((n) => `${n.method} ${n.url} ${n.status}`);
  const endSession = logoutNavs.find((n) => n.url.startsWith('idp:/session/end'));
  check(
    endSession,
    `logout never reached the IdP's end_session endpoint (LOGOUT=${logoutVia}): ${result.logoutNavigations.join(' → ')}`,
  );
  if (logoutVia !== 'button') {
    const post = logoutNavs[0];
    check(
      post && post.method === 'POST' && post.url === 'gw:/_gateway/logout' && post.status === 303 && (post.location || '').startsWith('idp:/session/end'),
      `expected POST gw:/_gateway/logout → 303 idp:/session/end…, got ${JSON.stringify(post)}`,
    );
    const hint = new URL(endSessionUrl).searchParams;
    check(hint.get('id_token_hint') && hint.get('post_logout_redirect_uri') === `${base}/_gateway/logged-out`, `end_session URL ${post.location}`);
  }
  check((await page.locator('h1').textContent()) === 'You are logged out', 'the logged-out page is not shown');
  const jarAfter = await context.cookies(base);
  result.cookieNamesAfterLogout = jarAfter.map((c) => c.name);
  check(!jarAfter.some((c) => c.name === gw.name), 'the gateway cookie survived the logout');
  // The logged-out page is the gateway's own, under a `default-src 'none'` CSP that blocks page scripts from
  // fetching; ask with the context's cookie jar instead, which is what the next page load would send.
  const meAfter = (await context.request.get(`${base}/_gateway/me`, { headers: { Accept: 'application/json' } })).status();
  check(meAfter === 401, `/_gateway/me answered ${meAfter} after logout`);

  // 5. The IdP's session ended too: the next visit asks for the password again, no silent SSO.
  result.step = 'after logout';
  const again = await page.goto(`${base}/`);
  const againChain = chainOf(again).map((r) => short(r.url()));
  result.afterLogoutRedirects = againChain;
  check(
    page.url().startsWith(`${idp}/interaction/`) && !againChain.some((u) => u.startsWith('gw:/_gateway/callback')),
    `the next visit did not stop at the IdP's login form (single sign-on survived the logout?): ${againChain.join(' → ')} → ${page.url()}`,
  );
  await page.locator('input[name=username]').waitFor({ state: 'visible' });
  await page.locator('input[name=password]').waitFor({ state: 'visible' });

  result.step = 'done';
  result.ok = true;
} catch (e) {
  result.error = e && e.message ? e.message.split('\n')[0] : String(e);
  log(e && e.stack ? e.stack : e);
} finally {
  if (context) {
    const page = context.pages()[0];
    if (page) result.finalUrl = page.url();
    if (screenshot && page) {
      await page.screenshot({ path: screenshot, fullPage: true }).then(
        () => (result.screenshot = screenshot),
        (e) => log('screenshot failed:', e.message),
      );
    }
    await context.close().catch((e) => log('closing the browser:', e.message));
  }
  rmSync(profile, { recursive: true, force: true });
  result.ms = Date.now() - started;
  console.log(JSON.stringify(result));
  process.exitCode = result.ok ? 0 : 1;
  // stdin may still be open (HANDSHAKE): don't let it keep node alive.
  process.stdin.destroy();
}
