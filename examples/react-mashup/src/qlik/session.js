// An enigma.js session through qlik-gateway, and what keeps it going.
import enigma from 'enigma.js';
import schema from 'enigma.js/schemas/12.2027.0.json';
import { engineUrl } from '../config.js';
import { goToLogin, isLeaving, sessionEnded } from '../gateway.js';

const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 30000;

/**
 * Opens an enigma.js session for `appId` and keeps it alive.
 *
 * - `suspendOnClose: true`: when the socket drops (Qlik timed the Qlik session out and the gateway
 *   already renewed it: close code 4002; the gateway restarting: 1001; the network), enigma.js
 *   suspends instead of closing, and `session.resume()` reconnects and reopens the app. The first
 *   attempt is immediate, later ones back off up to 30 s.
 * - The gateway sends `OnAuthenticationInformation` with `mustAuthenticate: true` only when the
 *   user's gateway session has ended: then, and when `/_gateway/me` says 401, the page goes to
 *   the gateway's login.
 * - A normal close (1000: a logout elsewhere, Qlik's OnSessionLoggedOut) ends the session:
 *   `closed`, or the login when the gateway session is gone.
 *
 * `onStatus(state, message)` reports `live`, `reconnecting` or `closed`.
 * Returns `{ session, open, dispose }`: `open()` resolves to the Global API.
 */
export function openSession(appId, onStatus) {
  let disposed = false;
  let opened = false;
  let resuming = false;
  let timer = null;
  let delay = 0;
  let lastNotice = '';

  const session = enigma.create({
    schema,
    url: engineUrl(appId),
    suspendOnClose: true,
    // The browser's own WebSocket; only watched for the one close enigma.js keeps quiet about.
    createSocket: (url) => {
      const ws = new WebSocket(url);
      ws.addEventListener('close', (evt) => {
        if (evt.code === 1000) onNormalClose(evt);
      });
      return ws;
    },
  });

  session.on('notification:OnAuthenticationInformation', (info) => {
    if (info.mustAuthenticate) goToLogin();
  });
  // Qlik's fatal notifications (OnSessionLoggedOut, OnNoEngineAvailable, …) say why a close follows.
  session.on('notification:*', (method, params) => {
    if (params?.severity === 'fatal') lastNotice = params.message || method;
  });

  const resume = () => {
    timer = setTimeout(async () => {
      timer = null;
      resuming = true;
      try {
        await session.resume();
        delay = 0;
        lastNotice = '';
        if (!disposed) onStatus('live', 'Reconnected');
      } catch (err) {
        if (disposed || isLeaving()) return;
        if (await sessionEnded()) {
          goToLogin();
          return;
        }
        delay = Math.min(delay ? delay * 2 : FIRST_RETRY_MS, MAX_RETRY_MS);
        onStatus('reconnecting', `Reconnecting in ${Math.round(delay / 1000)} s (${err.message || 'no connection'})…`);
        resume();
      } finally {
        resuming = false;
      }
    }, delay);
  };

  session.on('suspended', (evt) => {
    // Before the first open succeeded there is nothing to resume: the caller of open() handles it.
    if (!opened || disposed || isLeaving()) return;
    onStatus('reconnecting', `Connection lost (${evt.code ?? evt.initiator}); reconnecting…`);
    resume();
  });

  // A normal close (1000) from the other side: enigma.js neither suspends nor emits 'closed' for
  // it. The gateway closes so after its logout (in another tab, say), after a login prompt, and
  // passes Qlik's on after OnSessionLoggedOut and other fatal notifications. The gateway session
  // decides: gone, log in again; still there, the user may reconnect (a new Qlik session, no login).
  async function onNormalClose(evt) {
    if (!opened || disposed || resuming || isLeaving()) return;
    if (await sessionEnded()) {
      goToLogin();
      return;
    }
    if (!disposed) onStatus('closed', `Disconnected: ${lastNotice || evt.reason || 'the connection was closed'}`);
  }

  let started = false;
  const open = async () => {
    started = true;
    const global = await session.open();
    opened = true;
    return global;
  };

  const dispose = () => {
    disposed = true;
    if (timer) clearTimeout(timer);
    // enigma.js can only close a session whose socket it opened.
    if (started) session.close().catch(() => {});
  };
  return { session, open, dispose };
}

/**
 * Opens `appId` on a new session. A socket that joins an engine session which already has the app
 * open gets error 1002 (App already open), as on Qlik Sense: then the open one is used.
 */
export async function openApp(global, appId) {
  try {
    return await global.openDoc(appId);
  } catch (err) {
    if (err.code === 1002) return global.getActiveDoc();
    throw err;
  }
}

/** After a failed open: the login when the gateway session is gone, else the error to show. */
export async function explainOpenFailure(err) {
  if (isLeaving()) return null;
  if (await sessionEnded()) {
    goToLogin();
    return null;
  }
  // A websocket that could not connect rejects with its error event, which has no message.
  return err?.message || 'cannot reach the Qlik engine';
}
