//! Dialing Qlik: the upstream socket opened with the user's Qlik session and CSRF token, through
//! the Qlik proxy of the session's node (or straight to the engine with `qlik.engine_url`). A
//! refused token or session is renewed once; a node that does not answer is taken out
//! ([`crate::qlik::nodes::Nodes::failed`], the one failover decision) and the user moved to
//! another.

use std::pin::Pin;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use tokio::net::TcpStream;

use super::legs::{tap_limit, ws_config, Upstream};
use crate::error::GatewayError;
use crate::net::retry::Retryable;
use crate::net::ws_client::{self, HandshakeError};
use crate::net::Io;
use crate::proxy::frames::Tap;
use crate::qlik_sessions::CsrfError;
use crate::session::{QlikSession, SessionId};
use crate::state::AppState;

/// Opens the upstream socket, renewing the CSRF token or the Qlik session once when Qlik refuses.
pub(super) async fn connect_with_session(
    state: &AppState,
    sid: &SessionId,
    path_q: &str,
    fwd: &HeaderMap,
    mut qlik: QlikSession,
) -> Result<(Upstream, QlikSession), GatewayError> {
    // Read fresh rather than passed along: a reconnect long after the upgrade still uses the
    // session's current identity (header mode puts it on the upgrade).
    let identity = state
        .store
        .get(sid)
        .await?
        .map(|g| g.identity)
        .ok_or_else(|| GatewayError::Unauthenticated {
            login_url: "/_gateway/login".into(),
        })?;
    if let Some(engine) = &state.cfg.qlik.engine_url {
        let up = connect_direct(state, engine, path_q, fwd, &identity).await?;
        return Ok((up, qlik));
    }
    for attempt in 0..2 {
        let token = match state.qlik.csrf_token(sid, &qlik).await {
            Ok(t) => t,
            Err(CsrfError::SessionRejected) if attempt == 0 => {
                qlik = state.qlik.recreate(sid, &qlik).await?;
                continue;
            }
            Err(e) if attempt == 0 && e.is_node_failure() && state.qlik.nodes().all().len() > 1 => {
                // The session's node does not answer: move the user to another node.
                if let Some(n) = state.qlik.node_of(&qlik) {
                    state.qlik.nodes().failed(&n, &e);
                }
                qlik = state.qlik.recreate(sid, &qlik).await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        match connect(state, path_q, fwd, &identity, &qlik, token.as_deref()).await {
            Ok(up) => return Ok((up, qlik)),
            // The session's node is down (connect() took it out): a new session on another.
            Err(GatewayError::Upstream { .. } | GatewayError::UpstreamTimeout { .. })
                if attempt == 0 && state.qlik.nodes().all().iter().any(|n| n.is_up()) =>
            {
                qlik = state.qlik.recreate(sid, &qlik).await?;
            }
            // A stale CSRF token or a session Qlik dropped: renew both once.
            Err(GatewayError::UpgradeRefused { status: 403 }) if attempt == 0 => {
                qlik = state.qlik.recreate(sid, &qlik).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(GatewayError::UpgradeRefused { status: 403 })
}

/// One upstream websocket handshake to the Qlik proxy.
async fn connect(
    state: &AppState,
    path_q: &str,
    fwd: &HeaderMap,
    identity: &crate::identity::Identity,
    qlik: &QlikSession,
    csrf: Option<&str>,
) -> Result<Upstream, GatewayError> {
    let mut target = path_q.to_string();
    if let Some(t) = csrf {
        let sep = if target.contains('?') { '&' } else { '?' };
        let enc = percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC);
        target = format!("{target}{sep}qlik-csrf-token={enc}");
    }
    let node = state
        .qlik
        .node_of(qlik)
        .ok_or(GatewayError::UpgradeRefused { status: 403 })?;
    let mut h = fwd.clone();
    state
        .qlik
        .add_credentials(&mut h, &state.cookies.name, identity, qlik);
    h.insert(header::HOST, node.host.clone());
    // Qlik's host allow list checks Origin; the gateway has checked the browser's already.
    h.insert(header::ORIGIN, node.origin.clone());
    let up = dial(
        state,
        &node.proxy_url,
        &target,
        h,
        state.ws_tls.clone(),
        "the Qlik proxy",
    )
    .await;
    if let Err(e) = &up {
        state.qlik.nodes().failed(&node, e);
    }
    up
}

/// The engine directly (`qlik.engine_url`, port 4747): mutual TLS with the gateway's Qlik client
/// certificate and the user in `X-Qlik-User`, bypassing the proxy (so no Qlik session cookie,
/// CSRF token or `OnAuthenticationInformation`, and no session attributes).
async fn connect_direct(
    state: &AppState,
    engine: &reqwest::Url,
    path_q: &str,
    fwd: &HeaderMap,
    identity: &crate::identity::Identity,
) -> Result<Upstream, GatewayError> {
    let tls = state
        .engine_tls
        .clone()
        .ok_or_else(|| GatewayError::Upstream {
            upstream: "qlik engine",
            detail: "no TLS settings for qlik.engine_url".into(),
        })?;
    let target = path_q
        .strip_prefix(state.upstream_prefix.as_str())
        .unwrap_or(path_q);
    let mut h = fwd.clone();
    crate::headers::rewrite_cookies(&mut h, &state.cookies.name, None);
    h.remove(header::ORIGIN);
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let user = format!(
        "UserDirectory={}; UserId={}",
        enc(&identity.user_directory),
        enc(&identity.user_id)
    );
    if let Ok(v) = HeaderValue::from_str(&user) {
        h.insert("x-qlik-user", v);
    }
    if let Ok(v) = HeaderValue::from_str(&crate::net::upstream::host_header(engine)) {
        h.insert(header::HOST, v);
    }
    dial(state, engine, target, h, tls, "the Qlik engine").await
}

/// TCP (+ TLS for https/wss) to `base`'s host and a websocket handshake for `target`.
async fn dial(
    state: &AppState,
    base: &reqwest::Url,
    target: &str,
    headers: HeaderMap,
    tls_cfg: Arc<rustls::ClientConfig>,
    what: &'static str,
) -> Result<Upstream, GatewayError> {
    let tls = matches!(base.scheme(), "https" | "wss");
    let host = base.host_str().unwrap_or("localhost").to_string();
    let port = base
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let scheme = if tls { "wss" } else { "ws" };
    let authority = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| host.clone());
    let uri = format!("{scheme}://{authority}{target}");
    let tls_cfg = tls.then_some(tls_cfg);
    let io = transport(state, host, port, tls_cfg, what).await?;
    handshake(state, io, &uri, headers, what).await
}

fn up_err(detail: String) -> GatewayError {
    GatewayError::Upstream {
        upstream: "qlik",
        detail,
    }
}

/// The connection under the upstream socket: TCP to `host:port`, with TLS when `tls_cfg` is set.
async fn transport(
    state: &AppState,
    host: String,
    port: u16,
    tls_cfg: Option<Arc<rustls::ClientConfig>>,
    what: &'static str,
) -> Result<Pin<Box<dyn Io>>, GatewayError> {
    let timeout = state.cfg.qlik.connect_timeout;
    let tcp = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| GatewayError::UpstreamTimeout {
            upstream: "qlik",
            after: timeout,
        })?
        .map_err(|e| up_err(format!("connect to {what} at {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let Some(tls_cfg) = tls_cfg else {
        return Ok(Box::pin(tcp));
    };
    let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| up_err(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(tls_cfg);
    let s = tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| GatewayError::UpstreamTimeout {
            upstream: "qlik",
            after: timeout,
        })?
        .map_err(|e| {
            up_err(format!(
                "TLS with {what}: {e}; check qlik.ca_cert (and for the engine qlik.client_cert/client_key)"
            ))
        })?;
    Ok(Box::pin(s))
}

/// The websocket handshake for `uri` on `io`, within `qlik.response_timeout` (the one client
/// handshake, `net::ws_client`, which `doctor` uses too), its bytes counted from the first frame.
async fn handshake(
    state: &AppState,
    io: Pin<Box<dyn Io>>,
    uri: &str,
    headers: HeaderMap,
    what: &'static str,
) -> Result<Upstream, GatewayError> {
    let timeout = state.cfg.qlik.response_timeout;
    let io = Tap::after_head(io, tap_limit(state));
    ws_client::handshake(io, uri, headers, Some(ws_config(state)), timeout)
        .await
        .map_err(|e| match e {
            HandshakeError::Timeout(_) => GatewayError::UpstreamTimeout {
                upstream: "qlik",
                after: timeout,
            },
            HandshakeError::Refused { status, .. } => GatewayError::UpgradeRefused { status },
            HandshakeError::Request(e) => up_err(e),
            HandshakeError::Failed(e) => up_err(format!("websocket handshake with {what}: {e}")),
        })
}
