// enigma.js with suspendOnClose and its own qlik-csrf-token (Qlik's Nov 2024 way) behind
// qlik-gateway in headless Chromium: Qlik expires the session, then the gateway restarts, and
// each time the page resumes by itself, with no login, and the app still answers. Driven by
// tests/it/enigma_resume_browser.rs.
//
// Environment:
//   GATEWAY_URL   http://127.0.0.1:PORT
//   MASHUP_DIR    the gateway's [mashup] dir: the page's bundle is written there first
//   CHROMIUM, SHOTS
// Protocol (tests/browser/pages.mjs): {"phase":"open"} → the driver expires every Qlik session;
// {"phase":"resumed-1"} → the driver restarts the gateway; {"phase":"resumed-2"} → done. Each
// phase line carries the gateway cookie's value, "open" the page's token too; one {"result":…}
// line at the end.
import path from 'node:path';
import { bundlePage, handshake, run } from './pages.mjs';

const GATEWAY_URL = process.env.GATEWAY_URL;
const SHOTS = process.env.SHOTS || '.';
const STEP = 20_000;
const SALES = [['North', 1500], ['South', 1350], ['East', 1700], ['West', 1050]];

await run(async (browser, step) => {
  await bundlePage('tests/browser/resume/page.js', 'page.js');
  const context = await browser.newContext();
  const page = await context.newPage();
  const navigations = [];
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame()) navigations.push(f.url());
  });
  const cookie = async () => (await context.cookies(GATEWAY_URL)).find((c) => c.name === 'qlik-gateway')?.value;

  // Waits for the page's phase `want`; fails on errors, a login prompt or a wrong answer.
  const reach = async (want) => {
    const ok = await page.waitForFunction((w) => window.__resume?.phase === w || window.__resume?.errors.length, want, { timeout: STEP })
      .then(() => true, () => false);
    const st = await page.evaluate(() => window.__resume);
    await page.screenshot({ path: path.join(SHOTS, `resume-${want}.png`) });
    if (!ok || st.phase !== want) throw new Error(`never reached ${want}: ${JSON.stringify(st)}`);
    if (st.events.includes('mustAuthenticate')) throw new Error(`asked to authenticate: ${st.events}`);
    if (JSON.stringify(st.rows) !== JSON.stringify(SALES)) throw new Error(`wrong data at ${want}: ${JSON.stringify(st.rows)}`);
    step(`${want}: ${JSON.stringify(st.events)}`);
    return st;
  };

  await page.goto(`${GATEWAY_URL}/`);
  const first = await reach('open');
  if (!first.token || !first.url.includes(`qlik-csrf-token=${encodeURIComponent(first.token)}`)) {
    throw new Error(`the page did not put its own token on the URL: ${first.url}`);
  }
  await page.evaluate(() => { window.__stillTheSamePage = true; });
  const navs = navigations.length;
  const cookies = [await cookie()];

  // (a) Qlik expires the session under the open socket.
  await handshake('open', { cookie: cookies[0], token: first.token });
  const lastConnected = (st) => st.events.filter((e) => e.startsWith('OnConnected:')).pop();
  // Qlik's session is new, and so is the engine session.
  if (lastConnected(await reach('resumed-1')) !== 'OnConnected:SESSION_CREATED') throw new Error('not a new engine session');
  cookies.push(await cookie());

  // (b) The gateway restarts (its sessions are in Redis).
  await handshake('resumed-1', { cookie: cookies[1] });
  const last = await reach('resumed-2');
  // The same Qlik session, kept in Redis by the gateway: the engine session is still there.
  if (lastConnected(last) !== 'OnConnected:SESSION_ATTACHED') throw new Error(`not attached: ${last.events}`);
  cookies.push(await cookie());
  if (last.url !== first.url) throw new Error('enigma.js changed its URL');
  if (!(await page.evaluate(() => window.__stillTheSamePage === true))) throw new Error('the page reloaded');
  if (navigations.length !== navs) throw new Error(`navigated: ${navigations.slice(navs)}`);
  if (new Set(cookies).size !== 1 || !cookies[0]) throw new Error(`the gateway session changed: ${cookies}`);
  step('resumed twice on the same URL and gateway session, no navigation');
  await handshake('resumed-2', { cookie: cookies[2] });
});
