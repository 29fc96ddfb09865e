// A mashup's everyday flows with real enigma.js through qlik-gateway (run by tests/it/enigma_node.rs,
// like the other files here, one file at a time): open the Sales app, read a session hypercube,
// select (Field.select, selectHyperCubeValues), see 'changed' fire and the layout follow, clear;
// a second enigma.js session on the same Qlik session (a second tab) sees the selection too; then
// Qlik times the session out under a suspendOnClose session and resume() carries on.
//
// What Qlik does after that timeout, and so what this checks: the gateway's new Qlik session
// gives a *new* engine session (OnConnected SESSION_CREATED). enigma.js re-opens the app and
// re-fetches every object by id with GetObject; app objects (sales-by-region) come back and fire
// 'changed', but session objects and Field handles lived only in the old engine session, so
// enigma.js closes them ('closed'), and the mashup re-creates them, as it must on Qlik. The new
// engine session starts without selections.
//
// No test waits on a timer: every wait is for an event or a reply, bounded by within().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SIM_CONTROL_URL, SALES_APP_ID, session, noLoginPrompt, within, once } from './gateway.mjs';

/// The next `event` of `emitter` (listen *before* the call that causes it: enigma.js emits
/// 'changed' before the call's promise resolves).

/// Leaves the Qlik session without selections even when a test failed half-way: the files here
/// share one gateway session, and the next file expects the Sales app unfiltered.
async function cleanUp(s, ...apps) {
  for (const app of apps) {
    if (app) await within(5000, 'clearAll on cleanup', app.clearAll()).catch(() => {});
  }
  await s.close().catch(() => {});
}

async function counters() {
  const r = await fetch(`${SIM_CONTROL_URL}/control/counters`);
  assert.equal(r.status, 200);
  return r.json();
}

/// The Sales app; a socket attached to an engine session that has it open already gets
/// 1002 ALREADY_OPEN from OpenDoc, as on Qlik, and takes the open one.
async function openSales(global) {
  return global.openDoc(SALES_APP_ID).catch((e) => {
    if (e.code === 1002) return global.getActiveDoc();
    throw e;
  });
}

const cube = (dim, measure) => ({
  qInfo: { qType: 'mashup-flow' },
  qHyperCubeDef: {
    qDimensions: [{ qDef: { qFieldDefs: [dim] } }],
    qMeasures: [{ qDef: { qDef: measure } }],
    qInitialDataFetch: [{ qLeft: 0, qTop: 0, qWidth: 2, qHeight: 50 }],
  },
});

/// [text, number, state] per row of a layout's first page.
const rows = (layout) => layout.qHyperCube.qDataPages[0].qMatrix.map((r) => [r[0].qText, r[1].qNum, r[0].qState]);

const ALL_REGIONS = [['North', 1500, 'O'], ['South', 1350, 'O'], ['East', 1700, 'O'], ['West', 1050, 'O']];

test('a mashup selects through the gateway: changed fires, layouts follow, clearAll restores', async () => {
  const s = session();
  let app;
  try {
    const global = await within(10000, 'session.open', s.open());
    app = await within(10000, 'the Sales app', openSales(global));
    // Whatever an earlier socket of this Qlik session left selected.
    await app.clearAll();
    const regions = await app.createSessionObject(cube('Region', 'Sum(Sales)'));
    const products = await app.createSessionObject(cube('Product', 'Sum(Sales)'));
    assert.deepEqual(rows(await regions.getLayout()), ALL_REGIONS);
    const productLayout = await products.getLayout();
    assert.deepEqual(rows(productLayout), [['Bikes', 4300, 'O'], ['Helmets', 750, 'O'], ['Gloves', 550, 'O']]);

    // Field.select: both objects change.
    let changed = Promise.all([once(regions, 'changed'), once(products, 'changed')]);
    const region = await app.getField('Region');
    assert.equal(await region.select('North'), true);
    await within(5000, "'changed' after Field.select", changed);
    assert.deepEqual(rows(await regions.getLayout()), [['North', 1500, 'S']]);
    assert.deepEqual(rows(await products.getLayout()), [['Bikes', 1200, 'O'], ['Helmets', 300, 'O']]);
    // A value that is not there: refused, nothing changes.
    assert.equal(await region.select('Atlantis'), false);

    // A click on "Helmets" in the product chart (selectHyperCubeValues takes qElemNumbers).
    const helmets = productLayout.qHyperCube.qDataPages[0].qMatrix[1][0];
    assert.equal(helmets.qText, 'Helmets');
    changed = Promise.all([once(regions, 'changed'), once(products, 'changed')]);
    assert.equal(await products.selectHyperCubeValues('/qHyperCubeDef', 0, [helmets.qElemNumber], false), true);
    await within(5000, "'changed' after selectHyperCubeValues", changed);
    assert.deepEqual(rows(await products.getLayout()), [['Helmets', 300, 'S']]);
    assert.deepEqual(rows(await regions.getLayout()), [['North', 300, 'S']]);

    // selectValues in toggle mode adds South (which also sells helmets).
    changed = once(regions, 'changed');
    assert.equal(await region.selectValues([{ qText: 'South' }], true, false), true);
    await within(5000, "'changed' after Field.selectValues", changed);
    assert.deepEqual(rows(await regions.getLayout()), [['North', 300, 'S'], ['South', 450, 'S']]);

    // clearAll: everything back, 'changed' again.
    changed = Promise.all([once(regions, 'changed'), once(products, 'changed')]);
    await app.clearAll();
    await within(5000, "'changed' after clearAll", changed);
    assert.deepEqual(rows(await regions.getLayout()), ALL_REGIONS);
    assert.equal((await products.getLayout()).qHyperCube.qSize.qcy, 3);

    // Qlik's errors arrive as enigma.js errors with Qlik's code.
    await assert.rejects(app.getField('NoSuchField'), (e) => e.code === 2);
    noLoginPrompt(s);
  } finally {
    await cleanUp(s, app);
  }
});

test('a second enigma.js session on the same Qlik session (another tab) sees the selection', async () => {
  const first = session();
  const second = session();
  let app1;
  let app2;
  try {
    app1 = await openSales(await within(10000, 'first session.open', first.open()));
    app2 = await openSales(await within(10000, 'second session.open', second.open()));
    assert.equal(second.states.at(-1), 'SESSION_ATTACHED', 'the same Qlik session and app: one engine session');
    await app1.clearAll();
    const mine = await app1.createSessionObject(cube('Region', 'Sum(Sales)'));
    const theirs = await app2.createSessionObject(cube('Region', 'Sum(Sales)'));
    assert.deepEqual(rows(await mine.getLayout()), ALL_REGIONS);
    assert.deepEqual(rows(await theirs.getLayout()), ALL_REGIONS);

    // Qlik pushes the change to the other socket unasked; the gateway relays it.
    const theirsChanged = once(theirs, 'changed');
    assert.equal(await (await app1.getField('Region')).select('East'), true);
    await within(5000, "'changed' on the other tab's object", theirsChanged);
    assert.deepEqual(rows(await theirs.getLayout()), [['East', 1700, 'S']]);

    const mineChanged = once(mine, 'changed');
    await app2.clearAll();
    await within(5000, "'changed' back on the first tab", mineChanged);
    assert.deepEqual(rows(await mine.getLayout()), ALL_REGIONS);
    noLoginPrompt(first);
    noLoginPrompt(second);
  } finally {
    await cleanUp(second);
    await cleanUp(first, app1);
  }
});

test('a Qlik session timeout under a selection: suspended, resume(), objects back, selections empty', async () => {
  const s = session({ suspendOnClose: true });
  let app;
  try {
    const global = await within(10000, 'session.open', s.open());
    app = await within(10000, 'the Sales app', openSales(global));
    await app.clearAll();
    // An app object (persisted in the app) and a session object (lives in the engine session).
    const chart = await app.getObject('sales-by-region');
    const regions = await app.createSessionObject(cube('Region', 'Sum(Sales)'));
    const region = await app.getField('Region');
    assert.equal((await chart.getLayout()).qHyperCube.qSize.qcy, 4);
    assert.deepEqual(rows(await regions.getLayout()), ALL_REGIONS);
    const selected = Promise.all([once(chart, 'changed'), once(regions, 'changed')]);
    assert.equal(await region.select('West'), true);
    await within(5000, "'changed' after the selection", selected);
    assert.deepEqual(rows(await regions.getLayout()), [['West', 1050, 'S']]);
    const before = await counters();

    const timedOut = once(s, 'notification:OnSessionTimedOut');
    const suspended = once(s, 'suspended');
    const r = await fetch(`${SIM_CONTROL_URL}/control/expire`, { method: 'POST' });
    assert.equal(r.status, 200, await r.text());
    assert.equal((await within(10000, 'OnSessionTimedOut', timedOut)).severity, 'fatal');
    const evt = await within(10000, "the 'suspended' event", suspended);
    assert.equal(evt.initiator, 'network');

    const chartBack = once(chart, 'changed');
    const regionsClosed = once(regions, 'closed');
    const fieldClosed = once(region, 'closed');
    await within(10000, 'session.resume', s.resume());
    assert.equal(s.states.at(-1), 'SESSION_CREATED', 'a new engine session, as on Qlik after a timeout');
    // enigma.js got the app object back by id...
    await within(5000, "'changed' on the restored app object", chartBack);
    const chartLayout = await within(5000, 'getLayout after resume', chart.getLayout());
    const chartRows = chartLayout.qHyperCube.qDataPages[0].qMatrix.map((r) => [r[0].qText, r[0].qState]);
    // ...with Qlik's state of a new session: nothing selected.
    assert.deepEqual(chartRows, [['North', 'O'], ['South', 'O'], ['East', 'O'], ['West', 'O']]);
    // ...and closed what lived only in the old engine session.
    await within(5000, "'closed' on the session object", regionsClosed);
    await within(5000, "'closed' on the Field handle", fieldClosed);

    // The mashup re-creates them, and carries on.
    const again = await app.createSessionObject(cube('Region', 'Sum(Sales)'));
    assert.deepEqual(rows(await again.getLayout()), ALL_REGIONS);
    const changed = once(again, 'changed');
    assert.equal(await (await app.getField('Region')).select('South'), true);
    await within(5000, "'changed' after resume", changed);
    assert.deepEqual(rows(await again.getLayout()), [['South', 1350, 'S']]);
    await app.clearAll();

    const after = await counters();
    assert.equal(after.sessions_created, before.sessions_created + 1, 'one renewal, no other Qlik session');
    assert.equal(after.ws_must_authenticate, before.ws_must_authenticate, 'Qlik never asked for a login');
    noLoginPrompt(s);
  } finally {
    await cleanUp(s, app);
  }
});
