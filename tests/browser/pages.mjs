// What the browser tests of bundled pages share: the esbuild bundle written into the gateway's
// [mashup] dir, Chromium, and the stdin handshake with the Rust driver.
import { chromium } from 'playwright-core';
import { build } from 'esbuild';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * Bundles `entry` (an ES module; a path from the repository root) to `${MASHUP_DIR}/${out}`,
 * resolving packages from tests/browser/node_modules; `define` replaces globals as esbuild's.
 */
export async function bundlePage(entry, out, define = {}) {
  await build({
    entryPoints: [path.join(here, '../..', entry)],
    bundle: true,
    format: 'esm',
    minify: true,
    outfile: path.join(process.env.MASHUP_DIR, out),
    nodePaths: [path.join(here, 'node_modules')],
    define: { 'process.env.NODE_ENV': '"production"', ...define },
    logLevel: 'error',
  });
}

/** Headless Chromium ($CHROMIUM, else /usr/bin/chromium). */
function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

const lines = createInterface({ input: process.stdin });

/** Tells the driver `phase` (with `extra`) and waits for its answer line. */
export function handshake(phase, extra = {}) {
  console.log(JSON.stringify({ phase, ...extra }));
  return new Promise((resolve) => lines.once('line', resolve));
}

/**
 * Runs `body(browser, step)` in a fresh Chromium, `step(text)` noting what it saw, then prints
 * the one {"result":…} line (`ok`, the steps, the error) and exits.
 */
export async function run(body) {
  const result = { steps: [] };
  let browser;
  try {
    browser = await launch();
    await body(browser, (s) => result.steps.push(s));
    result.ok = true;
  } catch (e) {
    result.ok = false;
    result.error = String((e && e.stack) || e);
  } finally {
    console.log(JSON.stringify({ result }));
    lines.close();
    if (browser) await browser.close();
    process.exit(result.ok ? 0 : 1);
  }
}
