// Real enigma.js through qlik-gateway (run by tests/enigma_node.rs, which starts a gateway and a
// qlik-sim, logs in and passes GATEWAY_URL, GATEWAY_COOKIE and SIM_CONTROL_URL).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import enigma from 'enigma.js';
import WebSocket from 'ws';

const require = createRequire(import.meta.url);
const schema = require('enigma.js/schemas/12.2027.0.json');

const GATEWAY_URL = need('GATEWAY_URL');
const GATEWAY_COOKIE = need('GATEWAY_COOKIE');
const SIM_CONTROL_URL = need('SIM_CONTROL_URL');
// qlik-sim's "Sales" sample app.
const SALES_APP_ID = process.env.SALES_APP_ID || '5a1e5000-5a1e-4000-8000-000000000001';

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set; run this through \`cargo test --test enigma_node\``);
  return v;
}

function session(config = {}) {
  const url = `${GATEWAY_URL.replace(/^http/, 'ws')}/mashup/app/${SALES_APP_ID}`;
  const s = enigma.create({
    schema,
    url,
    createSocket: (u) => new WebSocket(u, { headers: { Cookie: GATEWAY_COOKIE, Origin: GATEWAY_URL } }),
    ...config,
  });
  // The gateway's promise: the client never sees Qlik asking for authentication.
  s.authInfos = [];
  s.on('notification:OnAuthenticationInformation', (p) => s.authInfos.push(p));
  return s;
}

/// Rejects after `ms` so a broken gateway fails the test instead of hanging it.
function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const cube = {
  qInfo: { qType: 'enigma-test' },
  qHyperCubeDef: {
    qDimensions: [{ qDef: { qFieldDefs: ['Region'] } }],
    qMeasures: [{ qDef: { qDef: 'Sum(Sales)', qLabel: 'Sales' } }],
    qInitialDataFetch: [{ qLeft: 0, qTop: 0, qWidth: 2, qHeight: 10 }],
  },
};

test('enigma.js opens the Sales app and reads a hypercube through the gateway', async () => {
  const s = session();
  try {
    const global = await within(10000, 'session.open', s.open());
    const version = await global.engineVersion();
    assert.equal(typeof version.qComponentVersion, 'string');
    const app = await global.openDoc(SALES_APP_ID);
    const layout = await app.getAppLayout();
    assert.equal(layout.qTitle, 'Sales');
    const obj = await app.createSessionObject(cube);
    const objLayout = await obj.getLayout();
    const rows = objLayout.qHyperCube.qDataPages[0].qMatrix.map((r) => [r[0].qText, r[1].qNum]);
    assert.deepEqual(rows, [['North', 1500], ['South', 1350], ['East', 1700], ['West', 1050]]);
    assert.ok(s.authInfos.length >= 1, 'OnAuthenticationInformation arrives');
    assert.ok(s.authInfos.every((p) => p.mustAuthenticate === false), JSON.stringify(s.authInfos));
  } finally {
    await s.close();
  }
});

test('a Qlik session timeout suspends enigma.js, and resume() works without a new login', async () => {
  const s = session({ suspendOnClose: true });
  try {
    const global = await within(10000, 'session.open', s.open());
    // The engine keeps the first test's session (same user, same app): this socket is attached
    // to it and the app is already open, as on Qlik (1002 ALREADY_OPEN → GetActiveDoc).
    const app = await global.openDoc(SALES_APP_ID).catch((e) => {
      if (e.code === 1002) return global.getActiveDoc();
      throw e;
    });
    assert.equal((await app.getAppLayout()).qTitle, 'Sales');
    const timedOut = new Promise((resolve) => s.once('notification:OnSessionTimedOut', resolve));
    const suspended = new Promise((resolve) => s.once('suspended', resolve));

    const r = await fetch(`${SIM_CONTROL_URL}/control/expire`, { method: 'POST' });
    assert.equal(r.status, 200);

    const notice = await within(10000, 'OnSessionTimedOut', timedOut);
    assert.equal(notice.severity, 'fatal');
    const evt = await within(10000, "the 'suspended' event", suspended);
    assert.equal(evt.initiator, 'network');
    assert.notEqual(evt.code, 1000, 'a normal close would leave enigma.js neither suspended nor closed');

    await within(10000, 'session.resume', s.resume());
    // resume() re-opened the doc on the new Qlik session (GetActiveDoc failed, OpenDoc replayed).
    const layout = await within(10000, 'getAppLayout after resume', app.getAppLayout());
    assert.equal(layout.qTitle, 'Sales');
    assert.ok(s.authInfos.every((p) => p.mustAuthenticate === false), JSON.stringify(s.authInfos));
  } finally {
    await s.close();
  }
});
