// A nebula.js bar chart behind qlik-gateway. There is no authentication code: no tickets, no
// Qlik cookies, no qlik-csrf-token, no Qlik host name. The engine URL is relative to the page,
// so the browser talks to the gateway's origin only, and the gateway adds the user's Qlik
// session on the server. A click on a bar selects (confirm with the toolbar's ✓).
import enigma from 'enigma.js';
import schema from 'enigma.js/schemas/12.2027.0.json';
import { embed } from '@nebula.js/stardust';
import barchart from '@nebula.js/sn-bar-chart';

// Replaced at build time (build.mjs: QLIK_MOUNT, QLIK_APP).
const MOUNT = process.env.QLIK_MOUNT;
const APP_ID = process.env.QLIK_APP;

const status = document.querySelector('[data-testid="status"]');
function setStatus(state, text = state) {
  status.dataset.state = state;
  status.textContent = text;
}

const url = new URL(`${MOUNT}/app/${encodeURIComponent(APP_ID)}`, window.location.href);
url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';

// The gateway session ended (a timeout, a logout elsewhere): log in, then come back here.
function goToLogin() {
  const here = window.location.pathname + window.location.search + window.location.hash;
  window.location.assign(`/_gateway/login?return_to=${encodeURIComponent(here)}`);
}

const session = enigma.create({ schema, url: url.href, suspendOnClose: true });
session.on('notification:OnAuthenticationInformation', (info) => {
  if (info.mustAuthenticate) goToLogin();
});

let nebbie;
let viz;
async function render() {
  viz = await nebbie.render({
    element: document.getElementById('chart'),
    type: 'barchart',
    fields: ['Region', '=Sum(Sales)'],
  });
  setStatus('rendered');
}

// Qlik renewed the session (close 4002) or the gateway restarted (1001): resume() reopens the app
// on the same URL. The chart's session object lived in the old engine session: draw it again.
session.on('suspended', async function retry(_evt, delay = 500) {
  setStatus('reconnecting');
  try {
    await session.resume();
    viz?.destroy();
    await render();
  } catch {
    const me = await fetch('/_gateway/me', { headers: { Accept: 'application/json' } }).catch(() => null);
    if (me?.status === 401) return goToLogin();
    setTimeout(() => retry(_evt, Math.min(delay * 2, 30000)), delay);
  }
});

try {
  const global = await session.open();
  const app = await global.openDoc(APP_ID);
  nebbie = embed(app, {
    types: [{ name: 'barchart', load: () => Promise.resolve(barchart) }],
  });
  await render();
} catch (e) {
  setStatus('failed', `failed: ${e.message}`);
}
