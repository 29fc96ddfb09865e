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

try {
  const session = enigma.create({ schema, url: url.href });
  const global = await session.open();
  const app = await global.openDoc(APP_ID);
  const nebbie = embed(app, {
    types: [{ name: 'barchart', load: () => Promise.resolve(barchart) }],
  });
  await nebbie.render({
    element: document.getElementById('chart'),
    type: 'barchart',
    fields: ['Region', '=Sum(Sales)'],
  });
  setStatus('rendered');
} catch (e) {
  setStatus('failed', `failed: ${e.message}`);
}
