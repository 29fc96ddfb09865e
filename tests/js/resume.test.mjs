// Real enigma.js recovering through qlik-gateway after Qlik ends the user's Qlik session under an
// open socket (run by tests/it/enigma_node.rs, like enigma.test.mjs, one file at a time): Qlik's fatal
// notification reaches enigma.js unchanged, then `suspendOnClose` + `resume()`, or a new session
// (a reconnect), carries on on a Qlik session the gateway renewed. Never a login, never
// `mustAuthenticate: true`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SIM_CONTROL_URL, SALES_APP_ID, session, noLoginPrompt, within, once } from './gateway.mjs';

async function control(path) {
  const r = await fetch(`${SIM_CONTROL_URL}${path}`, { method: 'POST' });
  const body = await r.text();
  assert.equal(r.status, 200, body);
  return JSON.parse(body);
}

async function counters() {
  const r = await fetch(`${SIM_CONTROL_URL}/control/counters`);
  assert.equal(r.status, 200);
  return r.json();
}

/// Makes Qlik send `method` on every open engine websocket, then close it.
const notify = (method) => control(`/control/notify?method=${method}&close=true`);

/// The Sales app; a socket attached to an engine session that has it open gets 1002 ALREADY_OPEN
/// from OpenDoc, as on Qlik, and takes the open one.
async function openSales(global) {
  return global.openDoc(SALES_APP_ID).catch((e) => {
    if (e.code === 1002) return global.getActiveDoc();
    throw e;
  });
}

/// Sales by region, read from a session hypercube.
async function salesByRegion(app) {
  const obj = await app.createSessionObject({
    qInfo: { qType: 'resume-test' },
    qHyperCubeDef: {
      qDimensions: [{ qDef: { qFieldDefs: ['Region'] } }],
      qMeasures: [{ qDef: { qDef: 'Sum(Sales)', qLabel: 'Sales' } }],
      qInitialDataFetch: [{ qLeft: 0, qTop: 0, qWidth: 2, qHeight: 10 }],
    },
  });
  const layout = await obj.getLayout();
  return layout.qHyperCube.qDataPages[0].qMatrix.map((r) => [r[0].qText, r[1].qNum]);
}

const SALES = [['North', 1500], ['South', 1350], ['East', 1700], ['West', 1050]];

test('OnSessionClosed suspends enigma.js; resume() carries on on the renewed Qlik session', async () => {
  const s = session({ suspendOnClose: true });
  try {
    const global = await within(10000, 'session.open', s.open());
    const app = await openSales(global);
    assert.deepEqual(await salesByRegion(app), SALES);
    const before = await counters();
    const closed = once(s, 'notification:OnSessionClosed');
    const suspended = once(s, 'suspended');

    await notify('OnSessionClosed');

    const notice = await within(10000, 'OnSessionClosed', closed);
    assert.equal(notice.severity, 'fatal');
    assert.equal(notice.message, 'Session closed by server');
    const evt = await within(10000, "the 'suspended' event", suspended);
    assert.equal(evt.initiator, 'network');
    assert.equal(evt.code, 4002, 'a code enigma.js resumes from (Qlik closed with 1000)');
    assert.equal(evt.reason, 'Session closed by server');
    // The gateway renewed the Qlik session before it closed the socket.
    assert.equal((await counters()).sessions_created, before.sessions_created + 1);

    await within(10000, 'session.resume', s.resume());
    const layout = await within(10000, 'getAppLayout after resume', app.getAppLayout());
    assert.equal(layout.qTitle, 'Sales');
    assert.deepEqual(await salesByRegion(app), SALES);
    assert.equal(s.states.at(-1), 'SESSION_CREATED', 'resumed on a new Qlik session');
    const after = await counters();
    assert.equal(after.sessions_created, before.sessions_created + 1, 'no Qlik session besides the renewal');
    assert.equal(after.ws_must_authenticate, before.ws_must_authenticate, 'Qlik never asked either');
    noLoginPrompt(s);
  } finally {
    await s.close();
  }
});

test('after OnSessionTimedOut, a new enigma.js session (a reconnect) carries on without a login', async () => {
  const first = session();
  let second;
  try {
    const global = await within(10000, 'session.open', first.open());
    assert.deepEqual(await salesByRegion(await openSales(global)), SALES);
    const before = await counters();
    const timedOut = once(first, 'notification:OnSessionTimedOut');
    // Without suspendOnClose enigma.js reports the lost connection as 'closed'.
    const closed = once(first, 'closed');

    await control('/control/expire');

    const notice = await within(10000, 'OnSessionTimedOut', timedOut);
    assert.equal(notice.message, 'Session timed out due to inactivity');
    const evt = await within(10000, "the 'closed' event", closed);
    assert.equal(evt.code, 4002);

    second = session();
    const global2 = await within(10000, 'a new session.open', second.open());
    const app = await openSales(global2);
    assert.equal((await app.getAppLayout()).qTitle, 'Sales');
    assert.deepEqual(await salesByRegion(app), SALES);
    assert.deepEqual(second.states, ['SESSION_CREATED']);
    const after = await counters();
    assert.equal(after.sessions_created, before.sessions_created + 1);
    assert.equal(after.ws_must_authenticate, before.ws_must_authenticate);
    noLoginPrompt(first);
    noLoginPrompt(second);
  } finally {
    await first.close().catch(() => {});
    if (second) await second.close();
  }
});

test('OnSessionLoggedOut reaches enigma.js with Qlik\'s close, and a reconnect needs no login', async () => {
  const first = session({ suspendOnClose: true });
  let second;
  try {
    const global = await within(10000, 'session.open', first.open());
    assert.deepEqual(await salesByRegion(await openSales(global)), SALES);
    const before = await counters();
    const loggedOut = once(first, 'notification:OnSessionLoggedOut');
    let suspended = false;
    first.on('suspended', () => { suspended = true; });
    const socketClosed = new Promise((resolve) => first.sockets[0].once('close', (code) => resolve(code)));

    await notify('OnSessionLoggedOut');

    const notice = await within(10000, 'OnSessionLoggedOut', loggedOut);
    assert.equal(notice.message, 'User logged out manually');
    // Qlik's normal close, as is: the page learns "logged out"; enigma.js does not resume.
    assert.equal(await within(10000, 'the close', socketClosed), 1000);
    assert.equal(suspended, false);
    // No Qlik session is made behind the back of whoever ended this one...
    assert.equal((await counters()).sessions_created, before.sessions_created);

    // ...but the user is still logged in to the gateway.
    second = session();
    const global2 = await within(10000, 'a new session.open', second.open());
    assert.deepEqual(await salesByRegion(await openSales(global2)), SALES);
    assert.equal((await counters()).sessions_created, before.sessions_created + 1);
    noLoginPrompt(first);
    noLoginPrompt(second);
  } finally {
    await first.close().catch(() => {});
    if (second) await second.close();
  }
});
