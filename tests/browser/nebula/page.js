// A nebula.js bar chart of qlik-sim's Sales app through qlik-gateway, bundled by
// tests/browser/nebula.mjs. No authentication code: the engine URL is relative to the page and
// the gateway adds the user's Qlik session. What the test needs to see is on `window.__nebula`.
import enigma from 'enigma.js';
import schema from 'enigma.js/schemas/12.2027.0.json';
import { embed } from '@nebula.js/stardust';
import barchart from '@nebula.js/sn-bar-chart';

const SALES = '5a1e5000-5a1e-4000-8000-000000000001';
const state = { errors: [], renders: 0 };
window.__nebula = state;
const status = document.getElementById('status');
const setStatus = (s) => {
  status.textContent = s;
  status.dataset.state = s;
};

const url = new URL(`mashup/app/${SALES}`, window.location.href);
url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
const session = enigma.create({ schema, url: url.href });
// Engine errors the chart would otherwise swallow: the test reports them.
session.on('traffic:received', (data) => {
  if (data && data.error) state.errors.push(data.error);
});
state.calls = [];
session.on('traffic:sent', (data) => state.calls.push(`${data.method}@${data.handle}`));

try {
  const global = await session.open();
  const app = await global.openDoc(SALES);
  const nebbie = embed(app, { types: [{ name: 'barchart', load: () => Promise.resolve(barchart) }] });
  const viz = await nebbie.render({
    element: document.getElementById('chart'),
    type: 'barchart',
    fields: ['Region', '=Sum(Sales)'],
  });
  state.objectId = viz.id;
  setStatus('rendered');
} catch (e) {
  state.errors.push(String((e && e.stack) || e));
  setStatus('failed');
}
