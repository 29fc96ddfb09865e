// Real enigma.js through qlik-gateway (run by tests/it/enigma_node.rs, which starts a gateway and a
// qlik-sim, logs in and passes GATEWAY_URL, GATEWAY_COOKIE and SIM_CONTROL_URL).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GATEWAY_URL, GATEWAY_COOKIE, SIM_CONTROL_URL, SALES_APP_ID, session, within, once } from './gateway.mjs';

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
