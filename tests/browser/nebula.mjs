// The nebula.js example (examples/nebula-mashup: @nebula.js/stardust + @nebula.js/sn-bar-chart)
// behind qlik-gateway in headless Chromium. Driven by tests/it/nebula_browser.rs, which starts
// qlik-sim and the gateway with MASHUP_DIR (holding the example's index.html) as its [mashup] dir.
//
// Environment:
//   GATEWAY_URL   http://127.0.0.1:PORT
//   MASHUP_DIR    the gateway's [mashup] dir: the page's bundle is written there first
//   CHROMIUM      the browser (default /usr/bin/chromium)
//   SHOTS         directory for screenshots (artifacts)
// Protocol (tests/browser/pages.mjs): {"phase":"selected","region":…} once the click's selection
// was confirmed; the driver checks qlik-sim's selections, expires every Qlik session and answers;
// one {"result":…} line at the end.
import path from 'node:path';
import { bundlePage, handshake, run } from './pages.mjs';

const GATEWAY_URL = process.env.GATEWAY_URL;
const SHOTS = process.env.SHOTS || '.';
const STEP = 20_000;

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

await run(async (browser, step) => {
  // The example as its build makes it (examples/nebula-mashup/build.mjs), for the gateway's mount.
  await bundlePage('examples/nebula-mashup/src/main.js', 'main.js', {
    'process.env.QLIK_MOUNT': '"/mashup"',
    'process.env.QLIK_APP': '"5a1e5000-5a1e-4000-8000-000000000001"',
  });
  const page = await browser.newPage({ viewport: { width: 800, height: 600 } });
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  page.on('pageerror', (e) => problems.push(String(e)));
  // The engine traffic, seen from the browser: the methods the page sent, the errors it got.
  const sent = [];
  const engineErrors = [];
  page.on('websocket', (ws) => {
    ws.on('framesent', (f) => { try { sent.push(JSON.parse(f.payload).method); } catch { /* not JSON-RPC */ } });
    ws.on('framereceived', (f) => {
      try {
        const m = JSON.parse(f.payload);
        if (m.error) engineErrors.push(m.error);
      } catch { /* not JSON-RPC */ }
    });
  });
  const layouts = () => sent.filter((m) => m === 'GetLayout').length;
  const stuck = async (what) => {
    await page.screenshot({ path: path.join(SHOTS, 'nebula-stuck.png') });
    return new Error(`${what}; sent ${sent}; engine errors ${JSON.stringify(engineErrors)}; console: ${problems}`);
  };

  await page.goto(`${GATEWAY_URL}/`);
  const status = page.locator('[data-testid="status"]');
  const rendered = await page.waitForFunction(() => document.querySelector('[data-testid="status"]')?.dataset.state !== 'loading', null, { timeout: STEP })
    .then(() => true, () => false);
  if (!rendered || (await status.getAttribute('data-state')) !== 'rendered') throw await stuck(`the chart did not render: ${await status.textContent()}`);
  if (engineErrors.length) throw await stuck('engine errors');
  const canvas = await page.waitForFunction(() => document.querySelector('#chart canvas'), null, { timeout: STEP })
    .then(() => true, () => false);
  if (!canvas) throw await stuck(`no canvas in ${await page.innerHTML('#chart')}`);
  // Bars are drawn once the layout's data is in: one per region.
  await page.evaluate(installBars);
  await page.evaluate(installSettled);
  const drawn = await waitForBars(page, 4);
  await settledShot(page, 'nebula-bars.png');
  step(`4 bars drawn (${drawn.pixels} coloured pixels); sent ${[...new Set(sent)]}`);

  // A click on the first bar (North) starts a selection; the toolbar's confirm accepts it.
  const before = layouts();
  await page.mouse.click(drawn.centres[0].x, drawn.centres[0].y);
  const confirm = page.locator('.actions-toolbar-confirm');
  await confirm.waitFor({ timeout: STEP });
  await page.screenshot({ path: path.join(SHOTS, 'nebula-selecting.png') });
  await confirm.click();
  await confirm.waitFor({ state: 'detached', timeout: STEP });
  await waitForBars(page, 1);
  await settledShot(page, 'nebula-selected.png');
  const reLaid = layouts() - before;
  if (reLaid < 1) throw await stuck('the chart never fetched a new layout after the selection');
  if (!sent.includes('SelectHyperCubeValues') || !sent.includes('EndSelections')) throw await stuck('no selection sent');
  if (engineErrors.length) throw await stuck('engine errors');
  step(`selected: 1 bar drawn after ${reLaid} new layouts`);
  await page.evaluate(() => { window.__firstChart = document.querySelector('.njs-viz'); });
  await handshake('selected', { region: 'North' });

  // Qlik expires the session under the open page (the driver did, before answering): enigma.js
  // resumes on a new engine session, without the selection, and the example draws the chart
  // again, with every region.
  const redrawn = await page.waitForFunction(() => {
    const chart = document.querySelector('.njs-viz');
    return chart && chart !== window.__firstChart && chart.querySelector('canvas')
      && document.querySelector('[data-testid="status"]')?.dataset.state === 'rendered';
  }, null, { timeout: STEP }).then(() => true, () => false);
  if (!redrawn) throw await stuck('the chart was not drawn again after the expiry');
  await waitForBars(page, 4);
  await settledShot(page, 'nebula-after-expiry.png');
  if (page.url() !== `${GATEWAY_URL}/`) throw await stuck(`navigated to ${page.url()}`);
  step('after a Qlik expiry: resumed and redrawn with 4 bars, no navigation');
});
