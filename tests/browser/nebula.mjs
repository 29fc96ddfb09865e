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

// The bars picasso.js drew on the chart's canvas: the coloured runs (neither white, grey nor
// transparent) of the canvas row that crosses the most of them, with their centres in page
// coordinates, and how many coloured pixels the canvas has in all.
function installBars() {
  window.__bars = () => {
    const coloured = (d, i) => d[i + 3] > 200 && Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 40;
    let best = { runs: [], pixels: 0 };
    for (const c of document.querySelectorAll('#chart canvas')) {
      if (!c.width || !c.height) continue;
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let pixels = 0;
      for (let i = 0; i < d.length; i += 4) if (coloured(d, i)) pixels += 1;
      const rect = c.getBoundingClientRect();
      const scale = rect.width / c.width;
      for (let y = c.height - 1; y >= 0; y -= 4) {
        const runs = [];
        let from = -1;
        for (let x = 0; x <= c.width; x += 1) {
          const on = x < c.width && coloured(d, (y * c.width + x) * 4);
          if (on && from < 0) from = x;
          if (!on && from >= 0) {
            if (x - from > 3) runs.push({ x: rect.left + ((from + x) / 2) * scale, y: rect.top + y * scale });
            from = -1;
          }
        }
        if (runs.length > best.runs.length || (runs.length === best.runs.length && pixels > best.pixels)) best = { runs, pixels };
      }
    }
    return { count: best.runs.length, centres: best.runs, pixels: best.pixels };
  };
}

// A checksum of the chart's canvases, and whether it stayed the same for the last 5 calls: the
// chart's transitions (picasso.js animates in stages) are over once it stops changing.
function installSettled() {
  window.__settled = () => {
    let sum = 0;
    for (const c of document.querySelectorAll('#chart canvas')) {
      if (!c.width || !c.height) continue;
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 1) sum = (sum * 31 + d[i]) % 1000000007;
    }
    window.__stable = sum === window.__lastSum ? (window.__stable || 0) + 1 : 0;
    window.__lastSum = sum;
    return window.__stable >= 5;
  };
}

// Waits until the chart's transitions are over, then keeps a screenshot.
async function settledShot(page, name) {
  await page.waitForFunction(() => window.__settled(), null, { timeout: STEP, polling: 100 });
  await page.screenshot({ path: path.join(SHOTS, name) });
}

// Waits until the chart shows `n` bars; returns them.
async function waitForBars(page, n) {
  const ok = await page.waitForFunction((want) => window.__bars().count === want, n, { timeout: STEP, polling: 100 })
    .then(() => true, () => false);
  const seen = await page.evaluate(() => window.__bars());
  if (!ok) throw new Error(`expected ${n} bars, saw ${JSON.stringify(seen)}`);
  return seen;
}

const layouts = (page) => page.evaluate(() => window.__nebula.calls.filter((c) => c.startsWith('GetLayout')).length);

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
  const canvas = await page.waitForFunction(() => document.querySelector("#chart canvas"), null, { timeout: STEP })
    .then(() => true, () => false);
  if (!canvas) {
    await page.screenshot({ path: path.join(SHOTS, 'nebula-stuck.png') });
    throw new Error(`no canvas: ${JSON.stringify(await page.evaluate(() => window.__nebula))}; console: ${consoleErrors}; DOM: ${await page.innerHTML('#chart')}`);
  }
  // Bars are drawn once the layout's data is in: one per region.
  await page.waitForFunction(() => document.querySelector('.njs-viz')?.dataset.renderCount, null, { timeout: STEP });
  await page.evaluate(installBars);
  await page.evaluate(installSettled);
  const drawn = await waitForBars(page, 4);
  await settledShot(page, 'nebula-bars.png');
  step(`4 bars drawn (${drawn.pixels} coloured pixels)`);

  // A click on the first bar (North) starts a selection; the toolbar's confirm accepts it.
  const before = await layouts(page);
  await page.mouse.click(drawn.centres[0].x, drawn.centres[0].y);
  const confirm = page.locator('.actions-toolbar-confirm');
  await confirm.waitFor({ timeout: STEP });
  await page.screenshot({ path: path.join(SHOTS, 'nebula-selecting.png') });
  await confirm.click();
  await confirm.waitFor({ state: 'detached', timeout: STEP });
  await waitForBars(page, 1);
  await settledShot(page, 'nebula-selected.png');
  const reLaid = (await layouts(page)) - before;
  if (reLaid < 1) throw new Error('the chart never fetched a new layout after the selection');
  step(`selected: 1 bar drawn after ${reLaid} new layouts`);
  const st = await page.evaluate(() => window.__nebula);
  if (st.errors.length) throw new Error(`engine errors: ${JSON.stringify(st.errors)}`);
  console.log(JSON.stringify({ phase: 'selected', region: 'North' }));
  await nextLine();
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
