// Where Qlik is on this page's own origin. Baked in at build time from Vite env variables.

/** qlik-gateway's `qlik.mount`: Qlik's HTTP and the engine websocket live under it. */
export const MOUNT = (import.meta.env.VITE_QLIK_MOUNT || '/mashup').replace(/\/+$/, '');

/** The app to open: qlik-sim's "Sales" sample app unless VITE_QLIK_APP says otherwise. */
export const APP_ID = import.meta.env.VITE_QLIK_APP || '5a1e5000-5a1e-4000-8000-000000000001';

/**
 * The engine websocket for `appId`, on the page's own origin. No host, no port, no ticket: the
 * gateway adds the user's Qlik session to the upgrade.
 */
export function engineUrl(appId) {
  const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${window.location.host}${MOUNT}/app/${encodeURIComponent(appId)}`;
}
