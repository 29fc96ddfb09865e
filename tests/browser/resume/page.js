// enigma.js as Qlik's November 2024 article shows it, through qlik-gateway: the page fetches
// `{mount}/qps/csrftoken`, reads the `qlik-csrf-token` response header and appends it to the
// engine URL itself; `suspendOnClose: true`, and `resume()` whenever the socket closes. enigma.js
// resumes on the SAME URL, so the token it carries is stale after Qlik renewed the session: the
// gateway replaces it. No other auth code. Bundled by tests/browser/enigma_resume.mjs; what
// the test needs to see is on `window.__resume`.
import enigma from 'enigma.js';
import schema from 'enigma.js/schemas/12.2027.0.json';

const MOUNT = 'mashup';
const SALES = '5a1e5000-5a1e-4000-8000-000000000001';
const state = { phase: 'loading', events: [], errors: [], resumes: 0, rows: [] };
window.__resume = state;

function show(phase, rows) {
  state.phase = phase;
  state.rows = rows;
  document.getElementById('phase').textContent = phase;
  document.getElementById('rows').replaceChildren(...rows.map(([region, sales]) => {
    const li = document.createElement('li');
    li.textContent = `${region}: ${sales}`;
    return li;
  }));
}

// Qlik's guidance: the token is in the response header; the URL is relative to the page.
const response = await fetch(`${MOUNT}/qps/csrftoken`);
state.token = response.headers.get('qlik-csrf-token');
const url = new URL(`${MOUNT}/app/${SALES}`, window.location.href);
url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
url.searchParams.set('qlik-csrf-token', state.token);
state.url = url.href;

const session = enigma.create({ schema, url: url.href, suspendOnClose: true });
session.on('notification:OnAuthenticationInformation', (info) => {
  if (info.mustAuthenticate) state.events.push('mustAuthenticate');
});
session.on('notification:*', (method, params) => {
  state.events.push(method === 'OnConnected' ? `OnConnected:${params.qSessionState}` : method);
});
session.on('closed', () => state.events.push('closed'));
session.on('resumed', () => state.events.push('resumed'));

let app;

async function salesByRegion() {
  const obj = await app.createSessionObject({
    qInfo: { qType: 'resume-page' },
    qHyperCubeDef: {
      qDimensions: [{ qDef: { qFieldDefs: ['Region'] } }],
      qMeasures: [{ qDef: { qDef: 'Sum(Sales)' } }],
      qInitialDataFetch: [{ qLeft: 0, qTop: 0, qWidth: 2, qHeight: 10 }],
    },
  });
  const layout = await obj.getLayout();
  await app.destroySessionObject(obj.id);
  return layout.qHyperCube.qDataPages[0].qMatrix.map((r) => [r[0].qText, r[1].qNum]);
}

// A suspended session is resumed at once, then again with backoff while the gateway is away
// (restarting); resume() reopens the app, on a new Qlik engine session if Qlik's was renewed.
session.on('suspended', async (evt) => {
  state.events.push(`suspended:${evt.code}`);
  state.phase = 'suspended';
  for (let delay = 250; ; delay = Math.min(delay * 2, 2000)) {
    try {
      await session.resume();
      break;
    } catch (e) {
      state.events.push(`resume failed: ${(e && e.message) || (e && e.type) || e}`);
      await new Promise((r) => { setTimeout(r, delay); });
    }
  }
  state.resumes += 1;
  try {
    show(`resumed-${state.resumes}`, await salesByRegion());
  } catch (e) {
    state.errors.push(String(e && e.message || e));
  }
});

try {
  const global = await session.open();
  app = await global.openDoc(SALES);
  show('open', await salesByRegion());
} catch (e) {
  state.errors.push(String(e && e.message || e));
  state.phase = 'failed';
}
