// qlik-embed's loader (@qlik/embed-web-components from npm, unmodified) behind qlik-gateway in
// headless Chromium, with data-auth-type="windowscookie" and data-login-uri. Driven by
// tests/it/qlik_embed_browser.rs (static login; /embed/ is a public mashup path, so the page loads
// without a session).
//
// What runs is the loader's authentication steps against qlik-sim's STAND-IN
// {mount}/qlik-embed/main.js: Qlik's qlik-embed runtime itself is not available here, so no chart
// is drawn; the stand-in only shows which <qlik-embed> props reached it.
//
// Environment: GATEWAY_URL, CHROMIUM, SHOTS. Prints one {"result":…} line.
import { chromium } from 'playwright-core';
import path from 'node:path';

const GATEWAY_URL = process.env.GATEWAY_URL;
const SHOTS = process.env.SHOTS || '.';
const STEP = 20_000;
const result = { steps: [] };
const step = (s) => result.steps.push(s);

let browser;
try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext();
  const page = await context.newPage();
  const navigations = [];
  page.on('request', (r) => { if (r.isNavigationRequest() && r.frame() === page.mainFrame()) navigations.push(r.url()); });
  const mainJs = [];
  page.on('response', (r) => { if (r.url().includes('/qlik-embed/main.js')) mainJs.push(`${r.status()} ${r.request().resourceType()}`); });
  const standIn = () => page.locator('[data-testid="qlik-embed-stand-in"]').waitFor({ timeout: STEP });

  // Without a session: the loader's fetch of main.js is not ok, so it goes to data-login-uri as
  // written ({location} unfilled); the gateway returns to the page it came from.
  const here = `${GATEWAY_URL}/embed/index.html?view=1`;
  await page.goto(here);
  await standIn();
  if (!navigations.some((u) => u.includes('/_gateway/login?return_to={location}') || u.includes('/_gateway/login?return_to=%7Blocation%7D'))) {
    throw new Error(`the loader did not go to the login: ${navigations}`);
  }
  if (page.url() !== here) throw new Error(`came back to ${page.url()}, not ${here}`);
  step(`no session: ${navigations.map((u) => new URL(u).pathname).join(' -> ')}; main.js ${mainJs.join(', ')}`);

  // With the session: main.js loads at once (fetch, then the script), no login.
  navigations.length = 0;
  mainJs.length = 0;
  await page.reload();
  await standIn();
  if (navigations.length !== 1) throw new Error(`navigated: ${navigations}`);
  if (!mainJs.includes('200 script')) throw new Error(`main.js not loaded as a script: ${mainJs}`);
  const loaded = await page.evaluate(() => window.__qlikSimEmbedMain);
  if (loaded.loadedFrom !== `${GATEWAY_URL}/mashup/qlik-embed/main.js`) throw new Error(`main.js from ${loaded.loadedFrom}`);
  const el = page.locator('[data-testid="qlik-embed-stand-in"]');
  const props = { ui: await el.getAttribute('data-ui'), appId: await el.getAttribute('data-app-id') };
  if (props.ui !== 'analytics/chart' || props.appId !== '5a1e5000-5a1e-4000-8000-000000000001') throw new Error(`props: ${JSON.stringify(props)}`);
  step(`with a session: main.js ${mainJs.join(', ')} from ${loaded.loadedFrom}; <qlik-embed> mounted with ${JSON.stringify(props)}`);
  await page.screenshot({ path: path.join(SHOTS, 'qlik-embed.png'), fullPage: true });
  result.ok = true;
} catch (e) {
  result.ok = false;
  result.error = String(e && e.stack || e);
} finally {
  console.log(JSON.stringify({ result }));
  if (browser) await browser.close();
  process.exit(result.ok ? 0 : 1);
}
