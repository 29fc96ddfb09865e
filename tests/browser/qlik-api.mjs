// @qlik/api (examples/qlik-api, bundled) behind qlik-gateway in headless Chromium, with
// authType "windowscookie", host = gateway origin + mount and loginUri = the gateway's login with
// {location}. Driven by tests/it/qlik_api_browser.rs (static login: DEV\alice).
//
// Environment: GATEWAY_URL, CHROMIUM, SHOTS (screenshot directory).
// Protocol: prints {"phase":"live"} once the page works and waits for a line on stdin (the driver
// drops every Qlik session meanwhile); prints one {"result":…} line at the end.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import path from 'node:path';

const GATEWAY_URL = process.env.GATEWAY_URL;
const SHOTS = process.env.SHOTS || '.';
const STEP = 20_000;
const XRFKEY = 'Ab3dEf6hIj9lMn0p';
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once('line', resolve));
const result = { steps: [] };
const step = (s) => result.steps.push(s);

const rowCount = (page) => page.locator('[data-testid="row"]').count();
const waitRows = (page, n) => page.waitForFunction(
  (n) => document.querySelector('[data-testid="status"]')?.dataset.state === 'live'
    && document.querySelectorAll('[data-testid="row"]').length === n, n, { timeout: STEP });

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
  // Every navigation request of the tab, redirects included (a 302 commits no document).
  page.on('request', (r) => { if (r.isNavigationRequest() && r.frame() === page.mainFrame()) navigations.push(r.url()); });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') result.console = [...(result.console || []), m.text()].slice(-20); });
  page.on('response', (r) => { if (r.status() >= 300) result.responses = [...(result.responses || []), `${r.status()} ${r.request().method()} ${r.url()}`].slice(-20); });
  result.pageErrors = errors;

  // First visit: no session; the gateway's login and back; then @qlik/api opens the app.
  const here = `${GATEWAY_URL}/qlik-api/index.html?view=sales#top`;
  await page.goto(here);
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="row"]').length >= 2, null, { timeout: STEP });
  const all = await rowCount(page);
  step(`@qlik/api: ${all} regions (${await page.locator('[data-testid="status"]').textContent()})`);
  if (page.url() !== here) throw new Error(`landed on ${page.url()}, not ${here}`);

  // A selection narrows the cube; clearing restores it.
  await page.locator('[data-testid="row"]').first().click();
  await waitRows(page, 1);
  await page.locator('[data-testid="clear"]').click();
  await waitRows(page, all);
  step('selection applied and cleared');

  // The Capability API's way to call QRS: the xrfkey pair, from the page.
  const about = await page.evaluate(async (key) => {
    const r = await fetch(`/mashup/qrs/about?xrfkey=${key}`, { headers: { 'X-Qlik-Xrfkey': key } });
    return { status: r.status, body: await r.text() };
  }, XRFKEY);
  if (about.status !== 200 || !about.body.includes('"schemaPath":"About"')) throw new Error(`qrs/about: ${JSON.stringify(about)}`);
  step('qrs/about with the xrfkey pair: 200');
  await page.screenshot({ path: path.join(SHOTS, 'qlik-api-live.png'), fullPage: true });

  // A second app session without autoResume (@qlik/api's classic enigma.js session, opened
  // through the same runtime module the page's facade uses), resumed by hand below.
  await page.evaluate(async () => {
    const qix = window.__qlikSimRuntimeModules['qix@v1'];
    const session = qix.openAppSession({ appId: '5a1e5000-5a1e-4000-8000-000000000001', identity: 'classic' });
    const events = [];
    session.onWebSocketEvent((e) => events.push(`${e.eventType}:${e.code ?? ''}`));
    const doc = await session.getDoc();
    window.__classic = { session, doc, events, title: (await doc.getAppLayout()).qTitle };
  });
  step(`classic session open: ${await page.evaluate(() => window.__classic.title)}`);

  // Qlik drops every session under the open page.
  await page.evaluate(() => { window.__stillTheSamePage = true; });
  const navsBefore = navigations.length;
  console.log(JSON.stringify({ phase: 'live' }));
  await nextLine();
  await page.waitForFunction(() => document.querySelector('[data-testid="status"]')?.dataset.state === 'suspended', null, { timeout: STEP });
  step(`suspended: ${await page.locator('[data-testid="status"]').textContent()}`);
  // The next use reconnects (autoResume) onto the Qlik session the gateway renewed.
  await page.locator('[data-testid="row"]').nth(1).click();
  await waitRows(page, 1);
  await page.locator('[data-testid="clear"]').click();
  await waitRows(page, all);
  if (!(await page.evaluate(() => window.__stillTheSamePage === true))) throw new Error('the page reloaded');
  if (navigations.length !== navsBefore) throw new Error(`navigated: ${navigations.slice(navsBefore)}`);
  step('kept working after Qlik dropped its sessions, with no login and no reload');
  // The classic session: suspended; resume() checks api/v1/user-locale, then reconnects.
  await page.waitForFunction(() => window.__classic.events.some((e) => e.startsWith('suspended')), null, { timeout: STEP });
  const resumed = await page.evaluate(async () => {
    await window.__classic.session.resume();
    return { title: (await window.__classic.doc.getAppLayout()).qTitle, events: window.__classic.events };
  });
  if (resumed.title !== 'Sales' || !resumed.events.includes('resumed:')) throw new Error(`classic resume: ${JSON.stringify(resumed)}`);
  step(`classic session resumed by resume(): ${resumed.events.join(', ')}`);
  await page.screenshot({ path: path.join(SHOTS, 'qlik-api-after-qlik-expiry.png'), fullPage: true });

  // The gateway session ends: logged out in another tab.
  const other = await context.newPage();
  await other.goto(`${GATEWAY_URL}/`);
  const loggedOut = await other.evaluate(async () => (await fetch('/_gateway/logout', { method: 'POST', redirect: 'manual' })).type);
  step(`logged out in another tab (${loggedOut})`);
  await other.close();
  await page.waitForFunction(() => document.querySelector('[data-testid="status"]')?.dataset.state === 'suspended', null, { timeout: STEP });
  // The next use: @qlik/api gets "not authenticated" and goes to loginUri with {location}; the
  // (static) login comes straight back to where the page was.
  const navsAtLogout = navigations.length;
  await page.locator('[data-testid="row"]').first().click();
  await page.waitForFunction(() => window.__stillTheSamePage === undefined
    && document.querySelectorAll('[data-testid="row"]').length >= 2, null, { timeout: STEP });
  const after = navigations.slice(navsAtLogout);
  if (!after.some((u) => u.includes('/_gateway/login?return_to='))) throw new Error(`no login: ${after}`);
  if (page.url() !== here) throw new Error(`came back to ${page.url()}, not ${here}`);
  step(`after the logout: ${after.map((u) => new URL(u).pathname).join(' -> ')}`);
  await page.screenshot({ path: path.join(SHOTS, 'qlik-api-after-login.png'), fullPage: true });
  if (errors.length) step(`page errors: ${errors.join(' | ')}`);
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
