// The React example mashup (examples/react-mashup) behind qlik-gateway in headless Chromium.
// Driven by tests/it/mashup_browser.rs, which starts qlik-sim and the gateway (trusted_header login,
// so each browser context can be another user) and answers the handshake on stdin.
//
// Environment:
//   GATEWAY_URL   http://127.0.0.1:PORT
//   CHROMIUM      the browser (default /usr/bin/chromium)
//   SHOTS         directory for screenshots (artifacts)
// Protocol: prints {"phase":"live"} once the page shows data, then waits for a line on stdin (the
// driver expires every Qlik session meanwhile); prints one {"result":…} line at the end.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import path from 'node:path';

const GATEWAY_URL = process.env.GATEWAY_URL;
const SHOTS = process.env.SHOTS || '.';
const STEP = 20_000;
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once('line', resolve));

const result = { steps: [] };
const step = (s) => result.steps.push(s);

async function rows(page) {
  return page.locator('[data-testid="cube-row"]').count();
}

async function userPage(browser, user) {
  const context = await browser.newContext({ extraHTTPHeaders: { 'X-Remote-User': user } });
  const page = await context.newPage();
  const navigations = [];
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame()) navigations.push(new URL(f.url()).pathname);
  });
  await page.goto(`${GATEWAY_URL}/`);
  await page.waitForFunction(
    (u) => document.querySelector('[data-testid="user-name"]')?.textContent.includes(u),
    user,
    { timeout: STEP },
  );
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="cube-row"]').length >= 2, null, { timeout: STEP });
  return { context, page, navigations };
}

let browser;
try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });

  // First visit: the gateway logs alice in and the page shows engine data.
  const alice = await userPage(browser, 'CORP\\alice');
  const all = await rows(alice.page);
  step(`alice sees ${all} rows`);
  if (!alice.navigations.some((p) => p === '/')) throw new Error(`never landed on /: ${alice.navigations}`);
  await alice.page.locator('[data-testid="chart-bar"]').first().waitFor({ timeout: STEP });
  await alice.page.screenshot({ path: path.join(SHOTS, 'mashup-live.png'), fullPage: true });

  // A selection narrows the table; clearing restores it.
  await alice.page.locator('[data-testid="cube-row"]').first().click();
  await alice.page.waitForFunction(() => document.querySelectorAll('[data-testid="cube-row"][aria-selected="true"]').length === 1
    || document.querySelectorAll('[data-testid="cube-row"]').length === 1, null, { timeout: STEP });
  step('selection applied');
  await alice.page.locator('[data-testid="clear-selections"]').click();
  await alice.page.waitForFunction((n) => document.querySelectorAll('[data-testid="cube-row"]').length === n
    && document.querySelectorAll('[data-testid="cube-row"][aria-selected="true"]').length === 0, all, { timeout: STEP });
  step('selections cleared');

  // Qlik expires every session under the open page.
  await alice.page.evaluate(() => { window.__stillTheSamePage = true; });
  const navsBefore = alice.navigations.length;
  console.log(JSON.stringify({ phase: 'live' }));
  await nextLine();
  // The page recovers by itself (enigma.js resume on the gateway's 4002) and keeps working.
  // Bounded by the page's own reconnect backoff (1, 2, 4, 8 s …) on a loaded machine, not by STEP.
  await alice.page.waitForFunction(() => document.querySelector('[data-testid="status"]')?.dataset.state === 'live', null, { timeout: 60_000 });
  // The table is drawn again from the resumed session before it is clicked: a click on a row
  // the re-render then replaces would be lost (seen on a loaded machine).
  await alice.page.waitForFunction((n) => document.querySelectorAll('[data-testid="cube-row"]').length === n, all, { timeout: STEP });
  await alice.page.waitForLoadState('networkidle').catch(() => {});
  await alice.page.locator('[data-testid="cube-row"]').nth(1).click();
  await alice.page.waitForFunction(() => document.querySelectorAll('[data-testid="cube-row"][aria-selected="true"]').length === 1
    || document.querySelectorAll('[data-testid="cube-row"]').length === 1, null, { timeout: STEP });
  await alice.page.locator('[data-testid="clear-selections"]').click();
  await alice.page.waitForFunction((n) => document.querySelectorAll('[data-testid="cube-row"]').length === n, all, { timeout: STEP });
  if (!(await alice.page.evaluate(() => window.__stillTheSamePage === true))) throw new Error('the page reloaded');
  if (alice.navigations.length !== navsBefore) throw new Error(`navigated after the expiry: ${alice.navigations.slice(navsBefore)}`);
  step('kept working after Qlik expired the session, without a login or reload');
  await alice.page.screenshot({ path: path.join(SHOTS, 'mashup-after-expiry.png'), fullPage: true });

  // Another user in another context sees their own page.
  const bob = await userPage(browser, 'CORP\\bob');
  step(`bob sees ${await rows(bob.page)} rows`);
  if (!(await alice.page.locator('[data-testid="user-name"]').textContent()).includes('alice')) throw new Error('alice became someone else');
  await bob.page.screenshot({ path: path.join(SHOTS, 'mashup-bob.png'), fullPage: true });

  // Logout lands on the gateway's logged-out page.
  await alice.page.locator('[data-testid="logout"]').click();
  await alice.page.waitForURL(/\/_gateway\/(logged-out|login)/, { timeout: STEP });
  step(`logout landed on ${new URL(alice.page.url()).pathname}`);
  await alice.page.screenshot({ path: path.join(SHOTS, 'mashup-logged-out.png'), fullPage: true });
  const cookies = await alice.context.cookies(GATEWAY_URL);
  if (cookies.some((c) => c.name === 'qlik-gateway' && c.value)) throw new Error('the session cookie survived logout');

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
