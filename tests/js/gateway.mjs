// What the enigma.js tests share (run by tests/it/enigma_node.rs, which starts a gateway and a
// qlik-sim, logs in and passes GATEWAY_URL, GATEWAY_COOKIE and SIM_CONTROL_URL). Not a test file
// itself: `node --test tests/js/` only runs *.test.mjs.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import enigma from 'enigma.js';
import WebSocket from 'ws';

const require = createRequire(import.meta.url);
export const schema = require('enigma.js/schemas/12.2027.0.json');

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set; run this through \`cargo test --test it enigma_node::\``);
  return v;
}

export const GATEWAY_URL = need('GATEWAY_URL');
export const GATEWAY_COOKIE = need('GATEWAY_COOKIE');
export const SIM_CONTROL_URL = need('SIM_CONTROL_URL');
// qlik-sim's "Sales" sample app: Region × Product, Sales, Quantity.
export const SALES_APP_ID = process.env.SALES_APP_ID || '5a1e5000-5a1e-4000-8000-000000000001';

/// An enigma.js session through the gateway that records every OnAuthenticationInformation, every
/// OnConnected state and the websockets it opened.
export function session(config = {}) {
  const url = `${GATEWAY_URL.replace(/^http/, 'ws')}/mashup/app/${SALES_APP_ID}`;
  const sockets = [];
  const s = enigma.create({
    schema,
    url,
    createSocket: (u) => {
      const ws = new WebSocket(u, { headers: { Cookie: GATEWAY_COOKIE, Origin: GATEWAY_URL } });
      sockets.push(ws);
      return ws;
    },
    ...config,
  });
  s.sockets = sockets;
  s.authInfos = [];
  s.on('notification:OnAuthenticationInformation', (p) => s.authInfos.push(p));
  s.states = [];
  s.on('notification:OnConnected', (p) => s.states.push(p.qSessionState));
  return s;
}

/// The gateway's promise: the page never sees Qlik asking for a login.
export function noLoginPrompt(s) {
  assert.ok(s.authInfos.length >= 1, 'OnAuthenticationInformation arrives');
  assert.ok(s.authInfos.every((p) => p.mustAuthenticate === false), JSON.stringify(s.authInfos));
}

/// Rejects after `ms` so a broken gateway fails the test instead of hanging it.
export function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export const once = (emitter, event) => new Promise((resolve) => emitter.once(event, resolve));
