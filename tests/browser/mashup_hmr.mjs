// The React example's Vite dev server behind qlik-gateway (mashup.upstream): the page loads through
// the gateway and a source edit reaches it through the HMR websocket, without a reload.
// Driven by tests/it/mashup_dev_browser.rs. Env: GATEWAY_URL, CHROMIUM, SHOTS.
// Protocol: prints {"phase":"loaded"} and waits for a line on stdin (the driver edits App.jsx).
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import path from 'node:path';

const GATEWAY_URL = process.env.GATEWAY_URL;
const STEP = 30_000;
const lines = createInterface({ input: process.stdin });
const result = {};
let browser;
try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const page = await (await browser.newContext()).newPage();
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  await page.goto(`${GATEWAY_URL}/`);
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="cube-row"]').length >= 2, null, { timeout: STEP });
  await page.evaluate(() => { window.__beforeEdit = true; });
  const gatewayHost = new URL(GATEWAY_URL).host;
  const hmr = sockets.filter((u) => !u.includes('/app/'));
  if (!hmr.some((u) => new URL(u).host === gatewayHost)) {
    throw new Error(`no HMR websocket on the gateway's origin: ${sockets.join(', ')}`);
  }
  result.hmrSocket = hmr[0];
  console.log(JSON.stringify({ phase: 'loaded' }));
  await new Promise((resolve) => lines.once('line', resolve));
  await page.waitForFunction(() => document.querySelector('h1')?.textContent.includes('(edited)'), null, { timeout: STEP });
  if (!(await page.evaluate(() => window.__beforeEdit === true))) throw new Error('the page reloaded instead of hot-updating');
  await page.screenshot({ path: path.join(process.env.SHOTS || '.', 'mashup-hmr.png'), fullPage: true });
  result.ok = true;
} catch (e) {
  result.ok = false;
  result.error = String(e && e.stack || e);
} finally {
  console.log(JSON.stringify({ result }));
  lines.close();
  if (browser) await browser.close();
  process.exit(result.ok ? 0 : 1);
}
