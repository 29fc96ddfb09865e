// The three things a mashup asks qlik-gateway: who am I, log me out, log me in again.
// There is no authentication code here: the gateway's HttpOnly cookie goes with every same-origin
// request by itself.

let leaving = false;

/** True once the page is navigating away (login, logout): ignore the sockets closing under it. */
export function isLeaving() {
  return leaving;
}

function go(url) {
  leaving = true;
  window.location.assign(url);
}

/** The gateway's login, coming back to the page the user is on. */
export function loginUrl() {
  const { pathname, search, hash } = window.location;
  return `/_gateway/login?return_to=${encodeURIComponent(pathname + search + hash)}`;
}

/** The gateway session has ended: log in again and come back here. */
export function goToLogin() {
  if (!leaving) go(loginUrl());
}

/**
 * `GET /_gateway/me`: `{ userDirectory, userId, attributes, provider, loginAt, expiresAt, … }`.
 * Resolves to `null` (and starts the login) when the gateway answers 401.
 */
export async function fetchMe() {
  const r = await fetch('/_gateway/me', { headers: { Accept: 'application/json' } });
  if (r.status === 401) {
    goToLogin();
    return null;
  }
  if (!r.ok) throw new Error(`/_gateway/me answered ${r.status}`);
  return r.json();
}

/** Whether the gateway session is gone (`/_gateway/me` answers 401). Network errors say no. */
export async function sessionEnded() {
  try {
    const r = await fetch('/_gateway/me', { headers: { Accept: 'application/json' } });
    return r.status === 401;
  } catch {
    return false;
  }
}

/**
 * `POST /_gateway/logout`: ends the Qlik session, the gateway session and this user's engine
 * websockets. With an identity provider that has its own session (OIDC), `end_session_url` is
 * where the browser must go next, or the next login would silently reuse that session.
 */
export async function logout() {
  leaving = true;
  let out = {};
  try {
    const r = await fetch('/_gateway/logout', {
      method: 'POST',
      headers: { Accept: 'application/json' },
    });
    out = await r.json();
  } catch {
    // Logged out or not, the page is done: the logged-out page offers a new login.
  }
  window.location.assign(out.end_session_url || '/_gateway/logged-out');
}
