// nebula.js (@nebula.js/stardust + @nebula.js/sn-bar-chart) behind qlik-gateway in headless
// Chromium. Driven by tests/nebula_browser.rs, which starts qlik-sim and the gateway with
// MASHUP_DIR (holding tests/browser/nebula/index.html) as its [mashup] dir.
//
// Environment:
//   GATEWAY_URL   http://127.0.0.1:PORT
//   MASHUP_DIR    the gateway's [mashup] dir: the page's bundle is written there first
//   CHROMIUM      the browser (default /usr/bin/chromium)
//   SHOTS         directory for screenshots (artifacts)
// Protocol: prints {"phase":"selected","region":…} after the click's selection was confirmed and
// waits for a line on stdin (the driver checks qlik-sim's selections); prints one {"result":…}.
import { chromium } from 'playwright-core';
import { build } from 'esbuild';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const GATEWAY_URL = process.env.GATEWAY_URL;
const SHOTS = process.env.SHOTS || '.';
const STEP = 20_000;
const here = path.dirname(fileURLToPath(import.meta.url));
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once('line', resolve));

const result = { steps: [] };
const step = (s) => result.steps.push(s);

// Pixels of the chart's canvases that are neither transparent nor (near) white nor grey: bars.
async function colouredPixels(page) {
  return page.evaluate(() => {
    let n = 0;
    for (const c of document.querySelectorAll('#chart canvas')) {
      if (!c.width || !c.height) continue;
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 4) {
        const [r, g, b, a] = [d[i], d[i + 1], d[i + 2], d[i + 3]];
        if (a > 200 && Math.max(r, g, b) - Math.min(r, g, b) > 40) n += 1;
      }
    }
    return n;
  });
}

let browser;
try {
  await build({
    entryPoints: [path.join(here, 'nebula/page.js')],
    bundle: true,
    format: 'esm',
    minify: true,
    outfile: path.join(process.env.MASHUP_DIR, 'page.js'),
    define: { 'process.env.NODE_ENV': '"production"' },
    logLevel: 'error',
  });
  step('bundled');
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 800, height: 600 } });
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  await page.goto(`${GATEWAY_URL}/`);
  const loaded = await page.waitForFunction(() => document.getElementById('status')?.dataset.state !== 'loading', null, { timeout: STEP })
    .then(() => true, () => false);
  if (!loaded) {
    await page.screenshot({ path: path.join(SHOTS, 'nebula-stuck.png') });
    throw new Error(`the chart never rendered: ${JSON.stringify(await page.evaluate(() => window.__nebula))}; console: ${consoleErrors}`);
  }
  const state = await page.evaluate(() => window.__nebula);
  if (state.errors.length) throw new Error(`engine errors: ${JSON.stringify(state.errors)}; console: ${consoleErrors}`);
  const drawn = await page.waitForFunction(() => document.querySelector('#chart canvas'), null, { timeout: STEP })
    .then(() => true, () => false);
  if (!drawn) {
    await page.screenshot({ path: path.join(SHOTS, 'nebula-stuck.png') });
    throw new Error(`no canvas: ${JSON.stringify(await page.evaluate(() => window.__nebula))}; console: ${consoleErrors}; DOM: ${await page.innerHTML('#chart')}`);
  }
  await page.screenshot({ path: path.join(SHOTS, 'nebula-bars.png') });
  step(`coloured pixels ${await colouredPixels(page)}`);
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
