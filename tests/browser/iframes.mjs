// Single and App Integration iframes inside a mashup page behind qlik-gateway, in headless Chromium:
// qlik-sim's {mount}/single/ page opens the engine websocket itself (relative to the frame) and
// shows live data, updated on a selection. The gateway adds no frame-blocking header to Qlik's
// responses; its own pages refuse to be framed (frame-ancestors 'none'), even by its own origin.
// Driven by tests/it/qlik_embed_browser.rs (static login).
//
// Environment: GATEWAY_URL, CHROMIUM, SHOTS. Prints one {"result":…} line.
import { chromium } from 'playwright-core';
import path from 'node:path';

const GATEWAY_URL = process.env.GATEWAY_URL;
const SHOTS = process.env.SHOTS || '.';
const STEP = 20_000;
const result = { steps: [] };
const step = (s) => result.steps.push(s);
const frameBlocking = (h) => ({ xfo: h['x-frame-options'] || null, csp: h['content-security-policy'] || null });
// Resolves once the frame's object table shows `n` rows (polled in the frame, with a deadline).
const waitRows = (frame, n) => frame.locator('table[data-testid="object"]').evaluate((t, n) => new Promise((resolve, reject) => {
  const deadline = Date.now() + 20_000;
  (function check() {
    const rows = t.querySelectorAll('[data-testid="row"]').length;
    if (rows === n) resolve();
    else if (Date.now() > deadline) reject(new Error(`${rows} rows, not ${n}`));
    else requestAnimationFrame(check);
  })();
}), n);

let browser;
try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const page = await (await browser.newContext()).newPage();
  const documents = {};
  page.on('response', (r) => {
    if (r.request().resourceType() === 'document') documents[new URL(r.url()).pathname] = frameBlocking(r.headers());
  });
  await page.goto(`${GATEWAY_URL}/iframe/index.html`);

  const single = page.frameLocator('[data-testid="single"]');
  await single.locator('body[data-state="live"]').waitFor({ timeout: STEP });
  const rows = single.locator('[data-testid="row"]');
  const all = await rows.count();
  if (all < 2) throw new Error(`${all} rows`);
  const first = await rows.first().textContent();
  step(`Single Integration iframe live: ${all} rows, first "${first}"`);
  await rows.nth(1).click();
  await waitRows(single, 1);
  const layouts = await single.locator('table[data-testid="object"]').getAttribute('data-layouts');
  step(`selection in the iframe: 1 row "${await rows.first().textContent()}" after ${layouts} layouts`);
  const qlik = documents['/mashup/single/'];
  if (!qlik || qlik.xfo || (qlik.csp && qlik.csp.includes('frame-ancestors'))) throw new Error(`Qlik's page: ${JSON.stringify(qlik)}`);
  step(`Qlik's page carries no frame-blocking header: ${JSON.stringify(qlik)}`);
  // The App Integration frame: same user, same app, no identity, so the same engine session as on
  // Qlik: it shows the selection made in the Single frame.
  const app = page.frameLocator('[data-testid="app"]');
  await app.locator('body[data-state="live"]').waitFor({ timeout: STEP });
  await waitRows(app, 1);
  step(`App Integration iframe live: "${await app.locator('[data-testid="title"]').textContent()}", shows the selection: "${await app.locator('[data-testid="row"]').first().textContent()}"`);
  await page.screenshot({ path: path.join(SHOTS, 'single-iframe.png'), fullPage: true });

  // The gateway's own pages in the same page's frames: refused by the browser.
  for (const [testid, p] of [['gateway-page', '/_gateway/logged-out'], ['gateway-login', '/_gateway/login']]) {
    const h = documents[p];
    if (!h || !h.csp || !h.csp.includes("frame-ancestors 'none'") || h.xfo !== 'DENY') throw new Error(`${p}: ${JSON.stringify(h)}`);
    const frame = await (await page.$(`[data-testid="${testid}"]`)).contentFrame();
    const deadline = Date.now() + STEP;
    while (!frame.url().startsWith('chrome-error:') && Date.now() < deadline) await page.waitForTimeout(50);
    if (!frame.url().startsWith('chrome-error:')) throw new Error(`${p} was framed: ${frame.url()}`);
    step(`${p} not framed (${frame.url()}): ${h.csp.match(/frame-ancestors [^;]+/)[0]}, X-Frame-Options ${h.xfo}`);
  }
  result.ok = true;
} catch (e) {
  result.ok = false;
  result.error = String(e && e.stack || e);
} finally {
  console.log(JSON.stringify({ result }));
  if (browser) await browser.close();
  process.exit(result.ok ? 0 : 1);
}
