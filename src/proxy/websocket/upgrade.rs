//! The browser's upgrade: checked (Origin, the handshake's headers, the per-session socket limit)
//! before Qlik is contacted, the headers Qlik gets derived from it, and the browser's 101.

use std::net::SocketAddr;

use axum::body::Body;
use axum::response::Response;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, StatusCode};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::error::GatewayError;
use crate::headers;
use crate::session::{GatewaySession, SessionId};
use crate::sockets::SocketGuard;
use crate::state::AppState;

/// Checks the browser's `Origin` against the public origin and `security.allowed_origins`.
/// Cross-Site WebSocket Hijacking is the first attack on cookie-authenticated websockets.
pub(crate) fn origin_allowed(state: &AppState, headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Err(GatewayError::Forbidden(
            "websocket handshake without an Origin header refused".into(),
        ));
    };
    let allowed = origin.eq_ignore_ascii_case(&state.cfg.server.public_origin)
        || state
            .cfg
            .security
            .allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin));
    if allowed {
        Ok(())
    } else {
        Err(GatewayError::Forbidden(format!(
            "websocket from origin {origin} refused; add it to security.allowed_origins if it is yours"
        )))
    }
}

/// A browser upgrade that passed the handshake checks.
pub(super) struct Upgrade {
    /// `Sec-WebSocket-Key`, for the 101's `Sec-WebSocket-Accept`.
    pub(super) key: HeaderValue,
    /// The path and query Qlik gets (under the virtual proxy).
    pub(super) path_q: String,
    /// The browser's headers as Qlik gets them: hop-by-hop, identity and websocket handshake
    /// headers (and the gateway's CSRF header) removed, forwarding headers set.
    pub(super) fwd: HeaderMap,
}

/// Checks the handshake (a key, version 13) and derives what the upstream handshake sends.
pub(super) fn check(
    state: &AppState,
    req: &Request<Body>,
    peer: SocketAddr,
) -> Result<Upgrade, GatewayError> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .cloned()
        .ok_or_else(|| {
            GatewayError::BadRequest("websocket upgrade without Sec-WebSocket-Key".into())
        })?;
    if req
        .headers()
        .get("sec-websocket-version")
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(GatewayError::BadRequest(
            "only websocket version 13 is supported".into(),
        ));
    }
    let path_q = crate::proxy::http::upstream_path_and_query(
        state,
        req.uri(),
        crate::request_target::UPGRADE_PARAMS,
    );
    let mut fwd = req.headers().clone();
    headers::remove_hop_by_hop(&mut fwd);
    headers::remove_identity_headers(&mut fwd, &state.strip_headers);
    fwd.remove(&headers::CSRF_HEADER);
    for h in [
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-accept",
    ] {
        fwd.remove(h);
    }
    headers::set_forwarding(
        &mut fwd,
        peer.ip(),
        state.public_proto,
        &state.public_host,
        &state.qlik_host,
    );
    // Kept for reconnects for as long as the socket settles (or is parked). hyper's header
    // values are slices of the buffer it read the whole request into: copied, so that buffer
    // goes with the request instead of staying with every quiet socket.
    for v in fwd.values_mut() {
        if let Ok(mut owned) = http::HeaderValue::from_bytes(v.as_bytes()) {
            owned.set_sensitive(v.is_sensitive());
            *v = owned;
        }
    }
    Ok(Upgrade { key, path_q, fwd })
}

/// `DIR\id`, for the log and the refusal.
pub(super) fn user_of(gw: &GatewaySession) -> String {
    format!("{}\\{}", gw.identity.user_directory, gw.identity.user_id)
}

/// Counts the socket against `security.max_websockets_per_session`. Counted before Qlik is
/// contacted: a refused socket costs no upstream connection.
pub(super) fn register(
    state: &AppState,
    sid: &SessionId,
    gw: &GatewaySession,
) -> Result<SocketGuard, GatewayError> {
    let max = state.cfg.security.max_websockets_per_session;
    state
        .sockets
        .try_register(sid.storage_key(), max)
        .ok_or_else(|| GatewayError::TooManyWebsockets {
            user: user_of(gw),
            limit: max,
        })
}

/// The browser's `101 Switching Protocols`.
pub(super) fn switching_protocols(key: &HeaderValue) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert("sec-websocket-accept", v);
    }
    resp
}
