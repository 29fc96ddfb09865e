//! The engine websocket: the browser's upgrade is checked (Origin, session), the upstream socket is
//! opened with the user's Qlik session and CSRF token, and frames are relayed both ways.
//!
//! Until Qlik has said who the user is (`OnAuthenticationInformation`), the relay watches upstream
//! frames and keeps a copy of what the client sent. If Qlik says `mustAuthenticate: true` (it lost
//! the session), the gateway makes a new Qlik session, reconnects and replays the client's frames:
//! the browser never sees the notification that used to start the login loop.
//!
//! After that, the relay passes bytes through as they come and follows only frame boundaries
//! ([`super::frames`]): an open socket holds no buffers, and large frames stream through. What
//! still needs frames (the client's size limit, Qlik's close, closes the gateway makes) is done
//! on a boundary (see `relay_bytes`).
//!
//! Qlik's fatal proxy notifications (`OnSessionTimedOut`, `OnNoEngineAvailable`, …) always reach
//! the client unchanged, logged with the user and counted ([`crate::stats`]). When one says the
//! Qlik session ended, the gateway renews it at once, so the client's `resume()` or reconnect
//! carries on without a login (see [`FatalWatch`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use super::cut_frame::{Filler, MessageTail};
use super::frames::{self, FrameTracker, Header, Step, Tap};
use crate::error::GatewayError;
use crate::headers;
use crate::metrics::Direction;
use crate::net::retry::Retryable;
use crate::net::Io;
use crate::qlik_sessions::{CsrfError, LifecycleError};
use crate::session::{GatewaySession, QlikSession, SessionId};
use crate::sockets::{CloseReason, SocketGuard};
use crate::state::AppState;
use crate::stats::FATAL_NOTIFICATIONS;

type Upstream = WebSocketStream<Tap<Pin<Box<dyn Io>>>>;
type Client = WebSocketStream<Tap<TokioIo<hyper::upgrade::Upgraded>>>;

/// How many client frames (and bytes) are kept for replay while Qlik has not yet confirmed the session.
const REPLAY_FRAMES: usize = 64;
const REPLAY_BYTES: usize = 4 * 1024 * 1024;
/// Re-creations of the Qlik session per socket. If Qlik still refuses a session the gateway just
/// made, the socket is closed with 1011 and the cause logged (`mustAuthenticate: true` is never
/// passed on while the gateway session lives: it would send the user round the login loop).
const MAX_REAUTH: usize = 2;
/// Close code the client gets when Qlik ended the Qlik session under an open socket
/// (`OnSessionTimedOut`, `OnSessionClosed`). Qlik closes with 1000, which clients take as final:
/// enigma.js ignores 1000 even with `suspendOnClose`. The gateway has made a new Qlik session by
/// the time it sends this close, so the client is told to reconnect instead (a 4xxx code: enigma
/// suspends, and `resume()` reopens the app). The reason and the notification stay Qlik's.
const CLOSE_QLIK_SESSION_LOST: u16 = 4002;
/// How long a socket closed for an oversized frame keeps draining the client's input, so the
/// close frame reaches the client instead of being lost in a TCP reset.
const LINGER: Duration = Duration::from_secs(2);

/// Checks the browser's `Origin` against the public origin and `security.allowed_origins`.
/// Cross-Site WebSocket Hijacking is the first attack on cookie-authenticated websockets.
pub fn origin_allowed(state: &AppState, headers: &HeaderMap) -> Result<(), GatewayError> {
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

/// Handles an engine websocket upgrade for a logged-in user.
pub async fn engine(
    state: Arc<AppState>,
    mut req: Request<Body>,
    peer: SocketAddr,
    sid: SessionId,
    gw: Arc<GatewaySession>,
) -> Result<Response, GatewayError> {
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
    let path_q = super::http::upstream_path_and_query(
        &state,
        req.uri(),
        crate::request_target::UPGRADE_PARAMS,
    );
    let mut fwd = req.headers().clone();
    headers::remove_hop_by_hop(&mut fwd);
    headers::remove_identity_headers(&mut fwd, &state.strip_headers);
    for h in [
        headers::CSRF_HEADER,
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

    // Counted before Qlik is contacted: a refused socket costs no upstream connection.
    let max = state.cfg.security.max_websockets_per_session;
    let guard = state
        .sockets
        .try_register(sid.storage_key(), max)
        .ok_or_else(|| GatewayError::TooManyWebsockets {
            user: format!("{}\\{}", gw.identity.user_directory, gw.identity.user_id),
            limit: max,
        })?;
    let qlik = state.qlik.ensure(&sid, &gw).await?;
    let (upstream, qlik) =
        connect_with_session(&state, &sid, &path_q, &fwd, qlik.into_owned()).await?;

    let on_upgrade = hyper::upgrade::on(&mut req);
    let cfg = ws_config(&state);
    let st = state.clone();
    let user = format!("{}\\{}", gw.identity.user_directory, gw.identity.user_id);
    tokio::spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let client = WebSocketStream::from_raw_socket(
                        Tap::frames(TokioIo::new(upgraded), tap_limit(&st)),
                        Role::Server,
                        Some(cfg),
                    )
                    .await;
                    let fatal = FatalWatch::new(st.clone(), sid.clone(), user);
                    let relay = Relay {
                        state: st,
                        sid,
                        path_q,
                        fwd,
                        qlik,
                        guard,
                        fatal,
                    };
                    relay.run(client, upstream).await;
                }
                Err(e) => tracing::debug!(error = %e, "client upgrade failed"),
            }
        }
        .instrument(tracing::Span::current()),
    );
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert("sec-websocket-accept", v);
    }
    Ok(resp)
}

/// Both legs of every relayed socket. The read buffer is allocated up front for each leg, and
/// tungstenite's 128 KiB default made an idle proxied socket cost ~280 KiB; engine traffic is mostly
/// small JSON frames, and large ones still grow the buffers as they arrive.
fn ws_config(state: &AppState) -> WebSocketConfig {
    let max = state.cfg.security.max_websocket_message;
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// How much a [`Tap`] holds while it waits for the end of a message: beyond the message size
/// limit, tungstenite refuses the message anyway.
fn tap_limit(state: &AppState) -> usize {
    state
        .cfg
        .security
        .max_websocket_message
        .saturating_add(64 * 1024)
}

/// Opens the upstream socket, renewing the CSRF token or the Qlik session once when Qlik refuses.
async fn connect_with_session(
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
    mut headers: HeaderMap,
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

    let timeout = state.cfg.qlik.connect_timeout;
    let up_err = |detail: String| GatewayError::Upstream {
        upstream: "qlik",
        detail,
    };
    let tcp = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| GatewayError::UpstreamTimeout {
            upstream: "qlik",
            after: timeout,
        })?
        .map_err(|e| up_err(format!("connect to {what} at {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let io: Pin<Box<dyn Io>> = if tls {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| up_err(e.to_string()))?;
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
        Box::pin(s)
    } else {
        Box::pin(tcp)
    };

    let mut req = Request::get(uri.as_str())
        .body(())
        .map_err(|e| up_err(e.to_string()))?;
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
    if let Ok(k) = HeaderValue::from_str(&tungstenite::handshake::client::generate_key()) {
        headers.insert("sec-websocket-key", k);
    }
    *req.headers_mut() = headers;
    let cfg = ws_config(state);
    match tokio::time::timeout(
        state.cfg.qlik.response_timeout,
        tokio_tungstenite::client_async_with_config(
            req,
            Tap::after_head(io, tap_limit(state)),
            Some(cfg),
        ),
    )
    .await
    {
        Err(_) => Err(GatewayError::UpstreamTimeout {
            upstream: "qlik",
            after: state.cfg.qlik.response_timeout,
        }),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) => Err(GatewayError::UpgradeRefused {
            status: resp.status().as_u16(),
        }),
        Ok(Err(e)) => Err(up_err(format!("websocket handshake with {what}: {e}"))),
    }
}

/// What a frame from Qlik says about authentication.
#[derive(Debug, PartialEq, Eq)]
enum AuthSignal {
    /// `OnAuthenticationInformation` with `mustAuthenticate: true`.
    MustAuthenticate,
    /// `OnAuthenticationInformation` with `mustAuthenticate: false`.
    Authenticated,
    /// A response (has an `id`): Qlik is serving requests, so it accepted the session.
    Response,
    /// Some other notification.
    Other,
}

fn classify(text: &str) -> AuthSignal {
    // Cheap test first: most frames are responses, and parsing a large one twice is waste.
    if !text.contains("OnAuthenticationInformation") {
        return if text.contains("\"id\"") {
            AuthSignal::Response
        } else {
            AuthSignal::Other
        };
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return AuthSignal::Other;
    };
    if v.get("method").and_then(|m| m.as_str()) != Some("OnAuthenticationInformation") {
        return if v.get("id").is_some() {
            AuthSignal::Response
        } else {
            AuthSignal::Other
        };
    }
    match v
        .pointer("/params/mustAuthenticate")
        .and_then(|m| m.as_bool())
    {
        Some(true) => AuthSignal::MustAuthenticate,
        _ => AuthSignal::Authenticated,
    }
}

struct Relay {
    state: Arc<AppState>,
    sid: SessionId,
    path_q: String,
    fwd: HeaderMap,
    qlik: QlikSession,
    guard: SocketGuard,
    fatal: FatalWatch,
}

enum Settle {
    /// Authentication settled; relay plainly from now on. `Some(side)`: that side's close frame
    /// has been passed on already.
    Relay(Box<Upstream>, Option<Side>),
    /// The socket is done.
    Done,
}

impl Relay {
    async fn run(mut self, mut client: Client, upstream: Upstream) {
        let (upstream, closed) = match self.settle(&mut client, upstream).await {
            Settle::Relay(up, closed) => (*up, closed),
            Settle::Done => return,
        };
        // A task of its own: this one's future is sized for the settle phase (handshakes,
        // reconnects, TLS), several KiB that an open socket would otherwise keep for its lifetime.
        tokio::spawn(
            self.relay(client, upstream, closed)
                .instrument(tracing::Span::current()),
        );
    }

    /// Phase one: watch Qlik's first frames and recover from a lost Qlik session.
    async fn settle(&mut self, client: &mut Client, mut upstream: Upstream) -> Settle {
        let mut replay: Vec<Message> = Vec::new();
        let mut replay_bytes = 0usize;
        let mut replay_ok = true;
        let mut reauths = 0usize;
        loop {
            tokio::select! {
                _ = self.guard.close.changed() => {
                    let reason = *self.guard.close.borrow();
                    if let Some(r) = reason {
                        close_both(client, &mut upstream, r, &self.state).await;
                    }
                    return Settle::Done;
                }
                m = upstream.next() => {
                    let msg = match m {
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) if is_too_big(&e) => {
                            warn_too_big("Qlik", &self.state);
                            let _ = client.close(Some(too_big_frame())).await;
                            return Settle::Done;
                        }
                        Some(Err(_)) | None => {
                            let (notice, close) = self.fatal.ending(&None).await
                                .unwrap_or_else(|| (None, going_away("Qlik closed the connection")));
                            if let Some(n) = notice { let _ = client.send(n).await; }
                            let _ = client.close(Some(close)).await;
                            return Settle::Done;
                        }
                    };
                    match &msg {
                        Message::Text(t) => match classify(t.as_str()) {
                            AuthSignal::MustAuthenticate if reauths < MAX_REAUTH && replay_ok => {
                                reauths += 1;
                                match self.reconnect(&replay).await {
                                    Ok(up) => { upstream = up; continue; }
                                    Err(GatewayError::Unauthenticated { .. }) => {
                                        // The gateway session itself is gone: only now is a login due.
                                        tracing::info!(session = %self.sid.log_tag(), "Qlik lost the session and the gateway session has ended; sending the client to the login");
                                        let _ = client.send(login_prompt(&self.state)).await;
                                        let _ = client.close(Some(close_frame_for(CloseReason::SessionEnded))).await;
                                    }
                                    Err(e) => {
                                        // Qlik or QPS is not answering: a login would not help (and
                                        // would start the very login loop the gateway exists to end).
                                        tracing::warn!(session = %self.sid.log_tag(), error = %e, "Qlik lost the session and re-creating it failed");
                                        let _ = client.close(Some(CloseFrame {
                                            code: CloseCode::Again,
                                            reason: "Qlik Sense is not available; try again".into(),
                                        })).await;
                                    }
                                }
                                finish_close(client).await;
                                return Settle::Done;
                            }
                            AuthSignal::MustAuthenticate if !replay_ok => {
                                // Too much was sent to replay it on a new socket: renew the Qlik
                                // session now and let the client reconnect and repeat.
                                tracing::info!(session = %self.sid.log_tag(), "Qlik lost the session after more client frames than the replay keeps; asking the client to reconnect");
                                if let Err(e) = self.state.qlik.recreate(&self.sid, &self.qlik).await {
                                    tracing::warn!(session = %self.sid.log_tag(), error = %e, "re-creating the Qlik session failed");
                                }
                                let _ = client.close(Some(CloseFrame {
                                    code: CloseCode::from(CLOSE_QLIK_SESSION_LOST),
                                    reason: "Qlik session renewed; reconnect".into(),
                                })).await;
                                finish_close(client).await;
                                return Settle::Done;
                            }
                            AuthSignal::MustAuthenticate => {
                                // Sessions the gateway just made are refused: a configuration fault.
                                // Never pass `mustAuthenticate: true` on while the gateway session is
                                // alive: the client would log in again and land here again.
                                tracing::error!(
                                    session = %self.sid.log_tag(),
                                    session_cookie = %self.state.cfg.qlik.session_cookie,
                                    virtual_proxy = %self.state.cfg.qlik.virtual_proxy,
                                    "Qlik still asks for authentication with a Qlik session the gateway just created; check that qlik.session_cookie is the virtual proxy's session cookie header name and qlik.virtual_proxy its prefix"
                                );
                                let _ = client.close(Some(CloseFrame {
                                    code: CloseCode::Error,
                                    reason: "Qlik does not accept the gateway's session; see the gateway log".into(),
                                })).await;
                                finish_close(client).await;
                                return Settle::Done;
                            }
                            AuthSignal::Authenticated | AuthSignal::Response => {
                                let msg = with_public_urls(&self.state, msg);
                                counted(&self.state, Direction::QlikToClient, &msg);
                                if client.send(msg).await.is_err() { return Settle::Done; }
                                return Settle::Relay(Box::new(upstream), None);
                            }
                            AuthSignal::Other => {
                                self.fatal.observe(t.as_str(), &self.qlik);
                                let msg = with_public_urls(&self.state, msg);
                                counted(&self.state, Direction::QlikToClient, &msg);
                                if client.send(msg).await.is_err() { return Settle::Done; }
                            }
                        },
                        Message::Close(f) => {
                            match self.fatal.ending(f).await {
                                Some((notice, close)) => {
                                    if let Some(n) = notice { let _ = client.send(n).await; }
                                    let _ = client.send(Message::Close(Some(close))).await;
                                }
                                None => { let _ = client.send(msg).await; }
                            }
                            return Settle::Relay(Box::new(upstream), Some(Side::Qlik));
                        }
                        _ => {
                            counted(&self.state, Direction::QlikToClient, &msg);
                            if client.send(msg).await.is_err() { return Settle::Done; }
                        }
                    }
                }
                m = client.next() => {
                    let msg = match m {
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) => {
                            let too_big = is_too_big(&e);
                            let _ = upstream.close(Some(going_away("client connection failed"))).await;
                            if too_big {
                                warn_too_big("client", &self.state);
                                let _ = client.close(Some(too_big_frame())).await;
                                linger(client.get_mut()).await;
                            }
                            return Settle::Done;
                        }
                        None => {
                            let _ = upstream.close(None).await;
                            return Settle::Done;
                        }
                    };
                    if let Message::Close(_) = msg {
                        let _ = upstream.send(msg).await;
                        return Settle::Relay(Box::new(upstream), Some(Side::Client));
                    }
                    if replay_ok {
                        replay_bytes += msg.len();
                        if replay.len() < REPLAY_FRAMES && replay_bytes <= REPLAY_BYTES {
                            replay.push(msg.clone());
                        } else {
                            replay_ok = false;
                            replay.clear();
                        }
                    }
                    counted(&self.state, Direction::ClientToQlik, &msg);
                    if upstream.send(msg).await.is_err() {
                        let _ = client.close(Some(going_away("Qlik closed the connection"))).await;
                        return Settle::Done;
                    }
                }
            }
        }
    }

    async fn reconnect(&mut self, replay: &[Message]) -> Result<Upstream, GatewayError> {
        tracing::info!(session = %self.sid.log_tag(), "Qlik lost the session (mustAuthenticate); re-creating it and reconnecting");
        let qlik = self.state.qlik.recreate(&self.sid, &self.qlik).await?;
        let (mut up, qlik) =
            connect_with_session(&self.state, &self.sid, &self.path_q, &self.fwd, qlik).await?;
        self.qlik = qlik;
        for m in replay {
            up.send(m.clone())
                .await
                .map_err(|e| GatewayError::Upstream {
                    upstream: "qlik",
                    detail: e.to_string(),
                })?;
        }
        Ok(up)
    }

    /// Phase two: bytes both ways as they come, tungstenite gone; see [`relay_bytes`].
    async fn relay(self, client: Client, upstream: Upstream, closed: Option<Side>) {
        let Relay {
            state,
            sid,
            qlik,
            guard,
            fatal,
            path_q,
            fwd,
        } = self;
        // Kept for reconnects, which only the settle phase makes. The header values share the
        // buffer hyper read the upgrade request into (16 KiB): dropped now, not with the socket.
        drop((path_q, fwd));
        let (client, client_rest) = client.into_inner().into_parts();
        let (upstream, upstream_rest) = upstream.into_inner().into_parts();
        let legs = Legs {
            client,
            client_rest,
            upstream,
            upstream_rest,
            closed,
        };
        relay_bytes(&state, &sid, &qlik, guard, fatal, legs).await;
    }
}

/// Which side's close frame has already been passed on when the byte relay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Qlik,
}

/// Both legs of a settled engine socket, with the bytes each tap had read but not passed on.
struct Legs {
    client: TokioIo<hyper::upgrade::Upgraded>,
    client_rest: Vec<u8>,
    upstream: Pin<Box<dyn Io>>,
    upstream_rest: Vec<u8>,
    closed: Option<Side>,
}

/// Why the gateway ends a socket in the byte relay; acted on at the next frame boundary.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Gateway(CloseReason),
    TooBig,
}

/// Phase two of an engine socket: bytes both ways as they come, with only the frame boundaries
/// followed ([`FrameTracker`]). An idle socket holds no buffers, and a large frame streams
/// through instead of being assembled. What still needs frames is done on the boundaries:
///
/// - client → Qlik: a message over `security.max_websocket_message` is not passed on; the client
///   gets 1009 and Qlik a close. Data frames count as activity for the gateway session's idle
///   timer and in the frame metrics.
/// - Qlik → client: small text frames are read by the [`FatalWatch`]; Qlik's close frame is held
///   back until the watch has decided whether it becomes [`CLOSE_QLIK_SESSION_LOST`] (or a
///   login prompt); a gateway close (logout, session end, shutdown) is sent at the next boundary.
async fn relay_bytes(
    state: &Arc<AppState>,
    sid: &SessionId,
    qlik: &QlikSession,
    mut guard: SocketGuard,
    mut fatal: FatalWatch,
    legs: Legs,
) {
    let max = state.cfg.security.max_websocket_message as u64;
    let (mut c_rx, mut c_tx) = tokio::io::split(legs.client);
    let (mut u_rx, mut u_tx) = tokio::io::split(legs.upstream);
    let (client_rest, upstream_rest) = (legs.client_rest, legs.upstream_rest);
    // The client's half cannot write its 1009; the other direction does it, on a boundary.
    let (too_big_tx, mut too_big_rx) = tokio::sync::oneshot::channel::<()>();
    let mut lingering = false;
    {
        let client_to_upstream = async {
            if legs.closed == Some(Side::Client) {
                return;
            }
            let mut activity = Activity::new(state, sid);
            let mut t = FrameTracker::default();
            let mut pending = client_rest;
            let mut spare = Vec::new();
            let mut carry = Vec::new();
            let mut message = 0u64;
            let mut closing = false;
            loop {
                let chunk = if pending.is_empty() {
                    match frames::read_chunk(&mut c_rx, &mut spare).await {
                        Ok(Some(c)) => c,
                        Ok(None) | Err(_) => {
                            if t.at_boundary() {
                                let f = Frame::close(Some(going_away("client connection failed")));
                                let _ = write_flush(&mut u_tx, &frames::encode(f, true)).await;
                            }
                            return;
                        }
                    }
                } else {
                    std::mem::take(&mut pending)
                };
                let chunk = after_carry(&mut carry, chunk);
                let mut i = 0;
                while i < chunk.len() {
                    let step = match t.step(&chunk[i..]) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(session = %sid.log_tag(), error = %e, "client sent bytes that are not websocket frames; closing");
                            return;
                        }
                    };
                    match step {
                        Step::Partial => {
                            // Passed on once complete, so that a frame refused on its header
                            // never reaches Qlik.
                            carry.extend_from_slice(&chunk[i..]);
                            break;
                        }
                        Step::Header { header, used } => {
                            if header.is_data() {
                                if header.opcode != frames::OP_CONTINUATION {
                                    message = 0;
                                }
                                message += header.len;
                                if message > max {
                                    let _ = write_all(&mut u_tx, &chunk[..i]).await;
                                    warn_too_big("client", state);
                                    let f =
                                        Frame::close(Some(going_away("client connection failed")));
                                    let _ = write_flush(&mut u_tx, &frames::encode(f, true)).await;
                                    let _ = too_big_tx.send(());
                                    return;
                                }
                                activity.seen();
                                state
                                    .metrics
                                    .ws_frame(Direction::ClientToQlik, header.len as usize);
                            }
                            closing |= header.opcode == frames::OP_CLOSE;
                            i += used;
                            if closing && header.len == 0 {
                                let _ = write_flush(&mut u_tx, &chunk[..i]).await;
                                return;
                            }
                        }
                        Step::Payload { n, end } => {
                            i += n;
                            if closing && end {
                                let _ = write_flush(&mut u_tx, &chunk[..i]).await;
                                return;
                            }
                        }
                    }
                }
                if write_flush(&mut u_tx, &chunk[..i]).await.is_err() {
                    return;
                }
                frames::keep_for_next_read(chunk, &mut spare);
            }
        };
        let upstream_to_client = async {
            if legs.closed == Some(Side::Qlik) {
                return;
            }
            let mut t = FrameTracker::default();
            let mut tail = MessageTail::default();
            let mut pending = upstream_rest;
            let mut spare = Vec::new();
            let mut carry = Vec::new();
            // A frame being read rather than only passed on: Qlik's close (held back), or a
            // small text frame for the fatal watch (passed on as it comes).
            let mut close: Option<(Header, Vec<u8>)> = None;
            let mut text: Option<Vec<u8>> = None;
            let mut stop: Option<Stop> = None;
            let mut give_up: Option<tokio::time::Instant> = None;
            let mut watch_too_big = true;
            loop {
                if let Some(s) = stop {
                    if t.at_boundary() {
                        lingering = matches!(s, Stop::TooBig);
                        let _ = write_flush(&mut c_tx, &stop_frames(s, state)).await;
                        return;
                    }
                }
                let chunk = if pending.is_empty() {
                    tokio::select! {
                        r = frames::read_chunk(&mut u_rx, &mut spare) => match r {
                            Ok(Some(c)) => c,
                            Ok(None) | Err(_) => {
                                // Qlik dropped the connection. Inside a frame the client has
                                // part of (a held close frame it has none of), so the frame
                                // is finished first: a close it can read beats a reset.
                                let cut = !t.at_boundary() && close.is_none();
                                let ending = fatal.ending(&None).await;
                                let (notice, cf) = match ending {
                                    Some(e) => e,
                                    None if cut => (None, CloseFrame {
                                        code: CloseCode::Error,
                                        reason: "Qlik closed the connection mid-message".into(),
                                    }),
                                    None => (None, going_away("Qlik closed the connection")),
                                };
                                if cut {
                                    tracing::warn!(session = %sid.log_tag(), missing = t.remaining(), "Qlik closed the engine connection in the middle of a frame; the client gets the frame finished with filler and a close 1011");
                                    let filler = tail.filler(t.remaining());
                                    if finish_cut_frame(&mut c_tx, filler).await.is_err() {
                                        return;
                                    }
                                }
                                let _ = write_flush(&mut c_tx, &ending_frames(notice, cf)).await;
                                return;
                            }
                        },
                        r = &mut too_big_rx, if watch_too_big && stop.is_none() => {
                            watch_too_big = false;
                            if r.is_ok() {
                                stop = Some(Stop::TooBig);
                                give_up = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                            }
                            continue;
                        }
                        changed = guard.close.changed(), if stop.is_none() => {
                            let reason = *guard.close.borrow();
                            match (changed, reason) {
                                (Ok(()), Some(r)) => {
                                    stop = Some(Stop::Gateway(r));
                                    give_up = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                                    continue;
                                }
                                (Ok(()), None) => continue,
                                (Err(_), _) => return,
                            }
                        }
                        // A frame boundary that does not come in time: the socket is dropped.
                        _ = tokio::time::sleep_until(give_up.unwrap_or_else(tokio::time::Instant::now)), if give_up.is_some() => return,
                    }
                } else {
                    std::mem::take(&mut pending)
                };
                let chunk = after_carry(&mut carry, chunk);
                let (mut i, mut from) = (0, 0);
                while i < chunk.len() {
                    let step = match t.step(&chunk[i..]) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(session = %sid.log_tag(), error = %e, "Qlik sent bytes that are not websocket frames; closing the socket");
                            return;
                        }
                    };
                    match step {
                        Step::Partial => {
                            carry.extend_from_slice(&chunk[i..]);
                            break;
                        }
                        Step::Header { header, used } => {
                            tail.header(&header);
                            if header.opcode == frames::OP_CLOSE {
                                if write_all(&mut c_tx, &chunk[from..i]).await.is_err() {
                                    return;
                                }
                                let mut held = Vec::with_capacity(used + header.len as usize);
                                held.extend_from_slice(&chunk[i..i + used]);
                                close = Some((header, held));
                                i += used;
                                from = i;
                            } else {
                                if header.is_data() {
                                    state
                                        .metrics
                                        .ws_frame(Direction::QlikToClient, header.len as usize);
                                }
                                if header.opcode == frames::OP_TEXT
                                    && header.fin
                                    && header.mask.is_none()
                                    && (1..=FATAL_NOTICE_MAX as u64).contains(&header.len)
                                {
                                    text = Some(Vec::new());
                                }
                                i += used;
                            }
                            if header.len == 0 && close.is_some() {
                                break;
                            }
                        }
                        Step::Payload { n, end } => {
                            let part = &chunk[i..i + n];
                            i += n;
                            tail.payload(part);
                            if let Some((_, held)) = &mut close {
                                held.extend_from_slice(part);
                                from = i;
                                if end {
                                    break;
                                }
                            } else if let Some(buf) = &mut text {
                                if end && buf.is_empty() {
                                    // The whole payload is in this read: no copy.
                                    observe_bytes(&mut fatal, part, qlik);
                                    text = None;
                                } else {
                                    buf.extend_from_slice(part);
                                    if end {
                                        observe_bytes(&mut fatal, buf, qlik);
                                        text = None;
                                    }
                                }
                            }
                        }
                    }
                }
                if let Some((header, held)) = close.take_if(|_| t.at_boundary()) {
                    // Qlik's close, complete: passed on as is, or as the watch decides.
                    let mut payload = held[held.len() - header.len as usize..].to_vec();
                    if let Some(m) = header.mask {
                        frames::apply_mask(&mut payload, m, 0);
                    }
                    let f = frames::parse_close(&payload);
                    let out = match fatal.ending(&f).await {
                        Some((notice, cf)) => ending_frames(notice, cf),
                        None => held,
                    };
                    let _ = write_flush(&mut c_tx, &out).await;
                    return;
                }
                if write_flush(&mut c_tx, &chunk[from..i]).await.is_err() {
                    return;
                }
                frames::keep_for_next_read(chunk, &mut spare);
            }
        };
        // When one direction ends, give the other a moment to finish the close handshake.
        tokio::pin!(client_to_upstream, upstream_to_client);
        tokio::select! {
            _ = &mut client_to_upstream => { let _ = tokio::time::timeout(Duration::from_secs(5), upstream_to_client).await; }
            _ = &mut upstream_to_client => { let _ = tokio::time::timeout(Duration::from_secs(5), client_to_upstream).await; }
        }
    }
    if lingering {
        drop((u_tx, u_rx));
        let mut client = c_rx.unsplit(c_tx);
        linger(&mut client).await;
    }
}

/// A notification naming Qlik's URLs (`logoutUri`, `loginUri`) with them on the public origin.
fn with_public_urls(state: &AppState, msg: Message) -> Message {
    match &msg {
        Message::Text(t) => match super::public_urls::rewrite_notification(state, t.as_str()) {
            Some(new) => Message::text(new),
            None => msg,
        },
        _ => msg,
    }
}

/// Writes the rest of a frame Qlik cut off ([`super::cut_frame`]), within the time a close
/// waits for a frame boundary.
async fn finish_cut_frame<W: AsyncWrite + Unpin>(w: &mut W, f: Filler) -> std::io::Result<()> {
    let write = async {
        write_all(w, &f.head).await?;
        let block =
            vec![f.fill; usize::try_from(f.rest).map_or(frames::CHUNK, |r| r.min(frames::CHUNK))];
        let mut rest = f.rest;
        while rest > 0 {
            let n = usize::try_from(rest).map_or(block.len(), |r| r.min(block.len()));
            write_all(w, &block[..n]).await?;
            rest -= n as u64;
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// `chunk` behind the start of a header the previous chunk ended with (rare: a copy then).
fn after_carry(carry: &mut Vec<u8>, chunk: Vec<u8>) -> Vec<u8> {
    if carry.is_empty() {
        return chunk;
    }
    let mut joined = std::mem::take(carry);
    joined.extend_from_slice(&chunk);
    joined
}

/// Frames the client gets when the gateway ends its socket.
fn stop_frames(s: Stop, state: &AppState) -> Vec<u8> {
    match s {
        Stop::TooBig => frames::encode(Frame::close(Some(too_big_frame())), false),
        Stop::Gateway(r) => ending_frames(notification_for(r, state), close_frame_for(r)),
    }
}

/// An optional notification, then a close frame, for the client.
fn ending_frames(notice: Option<Message>, close: CloseFrame) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(n) = notice {
        out.extend(frames::encode(frames::text_frame(n.into_data()), false));
    }
    out.extend(frames::encode(Frame::close(Some(close)), false));
    out
}

fn observe_bytes(fatal: &mut FatalWatch, payload: &[u8], qlik: &QlikSession) {
    if let Ok(text) = std::str::from_utf8(payload) {
        fatal.observe(text, qlik);
    }
}

async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, b: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if b.is_empty() {
        return Ok(());
    }
    w.write_all(b).await
}

/// Writes and flushes: a TLS leg keeps written bytes until flushed.
async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, b: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    write_all(w, b).await?;
    w.flush().await
}

/// Keeps the gateway session alive while its user works on an open page: a dashboard can run
/// for hours on the engine websocket alone, without one HTTP request that would refresh the
/// idle timer. Only client frames count (Qlik's notifications are not the user being active),
/// and the store is touched at most once per interval, off the relay path.
struct Activity {
    state: Arc<AppState>,
    sid: SessionId,
    every: Duration,
    last: Instant,
}

impl Activity {
    fn new(state: &Arc<AppState>, sid: &SessionId) -> Self {
        Activity {
            state: state.clone(),
            sid: sid.clone(),
            every: (state.cfg.session.idle_timeout / 4).min(Duration::from_secs(60)),
            last: Instant::now(),
        }
    }

    fn seen(&mut self) {
        if self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        let (state, sid) = (self.state.clone(), self.sid.clone());
        tokio::spawn(async move {
            if let Err(e) = state.store.get_and_touch(&sid).await {
                tracing::warn!(session = %sid.log_tag(), error = %e, "could not refresh the session's idle timer from websocket activity");
            }
        });
    }
}

fn is_too_big(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Capacity(_))
}

fn warn_too_big(from: &str, state: &AppState) {
    tracing::warn!(
        from,
        limit = state.cfg.security.max_websocket_message,
        "websocket message over security.max_websocket_message; closing the socket with 1009"
    );
}

fn too_big_frame() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Size,
        reason: "message over the gateway's size limit".into(),
    }
}

/// After a close frame was sent to a client that may still be sending a large frame: stop
/// writing, then read and discard its input until it closes (or [`LINGER`] passes). Closing a
/// socket with unread input makes the kernel send a reset, which can destroy the close frame.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    use tokio::io::AsyncWriteExt;
    let _ = io.shutdown().await;
    let _ = tokio::time::timeout(LINGER, tokio::io::copy(io, &mut tokio::io::sink())).await;
}

/// Text frames from Qlik up to this size are read for fatal notifications; larger ones are
/// responses.
const FATAL_NOTICE_MAX: usize = 4096;

/// A fatal proxy notification from Qlik (§4); Qlik closes the socket after it.
#[derive(Debug, PartialEq, Eq)]
struct FatalNotice {
    method: String,
    /// `params.message`, Qlik's text for people.
    message: Option<String>,
}

impl FatalNotice {
    /// `OnSessionTimedOut`, `OnSessionClosed`: Qlik ended the Qlik session (inactivity, or the
    /// proxy closed it). The user's login, the gateway session, is untouched by either.
    fn ends_qlik_session(&self) -> bool {
        matches!(
            self.method.as_str(),
            "OnSessionTimedOut" | "OnSessionClosed"
        )
    }

    /// What an operator can do about it, for the log line.
    fn hint(&self) -> &'static str {
        match self.method.as_str() {
            "OnNoEngineAvailable" => "the Qlik proxy has no engine to send the user to: check the engine service and the virtual proxy's load balancing nodes",
            "OnMaxParallelSessionsExceeded" => "the user has more Qlik sessions than Qlik allows (5 by default); each gateway session holds one, so the user is logged in on too many browsers or devices",
            "OnLicenseAccessDenied" => "the user has no Qlik Sense license access: allocate one in the QMC",
            "OnEngineWebsocketFailed" | "OnRepositoryWebsocketFailed" => "the Qlik proxy lost its connection to a Qlik service: check the Qlik services and the proxy's log",
            _ => "see the Qlik proxy's log",
        }
    }
}

/// A frame from Qlik read as a fatal notification: one of [`FATAL_NOTIFICATIONS`], or any other
/// notification with `params.severity: "fatal"`. Notifications are small; bigger frames are
/// responses and are not parsed, nor frames without a `"method"` key (most responses).
fn fatal_notice(text: &str) -> Option<FatalNotice> {
    if text.len() > FATAL_NOTICE_MAX || !text.contains("\"method\"") {
        return None;
    }
    let v = serde_json::from_str::<serde_json::Value>(text).ok()?;
    if v.get("id").is_some() {
        return None;
    }
    let method = v.get("method")?.as_str()?;
    let fatal = FATAL_NOTIFICATIONS.contains(&method)
        || v.pointer("/params/severity").and_then(|s| s.as_str()) == Some("fatal");
    fatal.then(|| FatalNotice {
        method: method.to_string(),
        message: v
            .pointer("/params/message")
            .and_then(|m| m.as_str())
            .map(str::to_string),
    })
}

/// Follows Qlik's fatal notifications on one socket (both phases). The notification itself always
/// goes to the client unchanged; the watch logs and counts it, and when it says the Qlik session
/// ended, renews that session at once and decides how the client's socket ends.
struct FatalWatch {
    state: Arc<AppState>,
    sid: SessionId,
    /// `DIR\id`, for the log.
    user: String,
    /// The Qlik session renewal started when Qlik said the session ended.
    renewal: Option<tokio::task::JoinHandle<Result<QlikSession, LifecycleError>>>,
}

impl FatalWatch {
    fn new(state: Arc<AppState>, sid: SessionId, user: String) -> Self {
        FatalWatch {
            state,
            sid,
            user,
            renewal: None,
        }
    }

    /// Looks at a text frame from Qlik (on its way to the client, unchanged): logs, counts and
    /// acts on a fatal notification; does nothing for any other frame.
    fn observe(&mut self, text: &str, qlik: &QlikSession) {
        let Some(n) = fatal_notice(text) else {
            return;
        };
        self.state.stats.fatal_notification(&n.method);
        let session = self.sid.log_tag();
        let message = n.message.as_deref().unwrap_or("");
        if n.ends_qlik_session() {
            tracing::info!(
                session = %session,
                user = %self.user,
                notification = %n.method,
                qlik_message = message,
                "Qlik ended the user's Qlik session under an open engine websocket; passing the notification on and renewing the Qlik session, so that the client's resume or reconnect needs no login"
            );
            // Renewed now rather than on the reconnect: the client's resume finds the new
            // session at once, and the decision between "reconnect" (4002) and "log in" is made
            // on the gateway session's state before the client's socket closes.
            if self.renewal.is_none() {
                let (state, sid, stale) = (self.state.clone(), self.sid.clone(), qlik.clone());
                self.renewal = Some(tokio::spawn(async move {
                    state.qlik.recreate(&sid, &stale).await
                }));
            }
        } else if n.method == "OnSessionLoggedOut" {
            // Someone ended the Qlik session at QPS (an administrator or a tool through the QPS
            // API, or the Personal API logout). Passed on with Qlik's close as is: the open page
            // shows "logged out" the way Qlik's own clients do, and enigma.js does not resume
            // after Qlik's 1000. No new Qlik session is made behind the back of whoever ended
            // this one (freeing a license, or a parallel-session slot, is a usual reason). But
            // the user did not log out of the gateway, and the gateway session is the login:
            // a reload or reconnect gets a new Qlik session without a login (the stale one is
            // renewed on the next connect), and only `POST /_gateway/logout` logs the user out.
            tracing::info!(
                session = %session,
                user = %self.user,
                notification = %n.method,
                qlik_message = message,
                "Qlik logged the user's Qlik session out (QPS API or Personal API); passing it on; the gateway session stays, so a reconnect gets a new Qlik session without a login"
            );
        } else {
            tracing::warn!(
                session = %session,
                user = %self.user,
                notification = %n.method,
                qlik_message = message,
                hint = n.hint(),
                "Qlik sent a fatal notification on an engine websocket; passing it and Qlik's close on"
            );
        }
    }

    /// How the client's socket ends after Qlik's close `f` (`None`: Qlik dropped the connection).
    /// `None` when Qlik did not say its session ended: Qlik's close is relayed as is. Otherwise
    /// it waits (bounded) for the renewal: done, the client gets [`CLOSE_QLIK_SESSION_LOST`] to
    /// resume or reconnect; the gateway session gone, the client gets the gateway's login prompt
    /// (the one case `mustAuthenticate: true` reaches it) and a normal close.
    async fn ending(&mut self, f: &Option<CloseFrame>) -> Option<(Option<Message>, CloseFrame)> {
        let renewal = self.renewal.take()?;
        let wait = self.state.cfg.qlik.qps_timeout + Duration::from_secs(2);
        let failed = |e: &dyn std::fmt::Display| {
            tracing::warn!(session = %self.sid.log_tag(), user = %self.user, error = %e, "renewing the Qlik session after Qlik ended it failed; the client's reconnect tries again");
        };
        match tokio::time::timeout(wait, renewal).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(LifecycleError::SessionGone))) => {
                tracing::info!(session = %self.sid.log_tag(), user = %self.user, "Qlik ended the Qlik session and the gateway session has ended too; sending the client to the login");
                return Some((
                    Some(login_prompt(&self.state)),
                    close_frame_for(CloseReason::SessionEnded),
                ));
            }
            Ok(Ok(Err(e))) => failed(&e),
            Ok(Err(e)) => failed(&e),
            Err(_) => failed(&format_args!("no result within {wait:?}")),
        }
        Some((None, session_lost_close(f.clone())))
    }
}

/// Counts a relayed message: text and binary only (control frames are each socket's own).
fn counted(state: &AppState, direction: Direction, m: &Message) {
    if let Message::Text(_) | Message::Binary(_) = m {
        state.metrics.ws_frame(direction, m.len());
    }
}

/// Qlik's close after it ended the session, with the code clients treat as a lost connection.
fn session_lost_close(f: Option<CloseFrame>) -> CloseFrame {
    match f {
        Some(f) if f.code != CloseCode::Normal => f,
        Some(f) => CloseFrame {
            code: CloseCode::from(CLOSE_QLIK_SESSION_LOST),
            reason: f.reason,
        },
        None => CloseFrame {
            code: CloseCode::from(CLOSE_QLIK_SESSION_LOST),
            reason: "Qlik session ended".into(),
        },
    }
}

/// After the gateway sent its close frame in the settle phase: wait (briefly) for the client's,
/// so the closing handshake completes.
async fn finish_close(client: &mut Client) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = client.next().await {}
    })
    .await;
}

async fn close_both(
    client: &mut Client,
    upstream: &mut Upstream,
    reason: CloseReason,
    state: &AppState,
) {
    if let Some(n) = notification_for(reason, state) {
        let _ = client.send(n).await;
    }
    let _ = client.close(Some(close_frame_for(reason))).await;
    let _ = upstream.close(None).await;
}

fn going_away(reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::Away,
        reason: reason.to_string().into(),
    }
}

fn close_frame_for(r: CloseReason) -> CloseFrame {
    match r {
        CloseReason::Shutdown => going_away("gateway shutting down"),
        CloseReason::Logout => CloseFrame {
            code: CloseCode::Normal,
            reason: "logged out".into(),
        },
        CloseReason::SessionEnded => CloseFrame {
            code: CloseCode::Normal,
            reason: "session ended".into(),
        },
    }
}

/// The notification a Qlik client understands for the gateway closing its socket.
fn notification_for(r: CloseReason, state: &AppState) -> Option<Message> {
    match r {
        CloseReason::Shutdown => None,
        CloseReason::Logout => Some(Message::text(
            serde_json::json!({
                "jsonrpc": "2.0",
                "method": "OnSessionLoggedOut",
                "params": {"severity": "fatal", "timestamp": timestamp(std::time::SystemTime::now()), "message": "User logged out manually"}
            })
            .to_string(),
        )),
        CloseReason::SessionEnded => Some(login_prompt(state)),
    }
}

/// A UTC RFC 3339 timestamp like the ones in Qlik's proxy messages (`2014-01-10T08:55:17.372Z`):
/// clients that parse `params.timestamp` get the format they know.
fn timestamp(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `OnAuthenticationInformation` pointing the client at the gateway's login, counted. Sent only
/// when the gateway session is gone.
///
/// `loginUri` is absolute on the public origin (Qlik's are absolute too) and has no `return_to`:
/// browsers send no `Referer` on a websocket handshake (the WebSocket standard sets its referrer
/// to "no-referrer") and the upgrade path is the engine endpoint, not a page, so the gateway does
/// not know the page to return to; the login's default is `/`, the mashup. A mashup that wants
/// the current page back appends `?return_to=` + its path itself.
fn login_prompt(state: &AppState) -> Message {
    state.stats.login_prompt();
    Message::text(
        serde_json::json!({
            "jsonrpc": "2.0",
            "method": "OnAuthenticationInformation",
            "params": {"loginUri": format!("{}/_gateway/login", state.cfg.server.public_origin), "mustAuthenticate": true}
        })
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_qlik_frames() {
        assert_eq!(
            classify(
                r#"{"jsonrpc":"2.0","method":"OnAuthenticationInformation","params":{"loginUri":"x","mustAuthenticate":true}}"#
            ),
            AuthSignal::MustAuthenticate
        );
        assert_eq!(
            classify(
                r#"{"jsonrpc":"2.0","method":"OnAuthenticationInformation","params":{"userId":"a","mustAuthenticate":false}}"#
            ),
            AuthSignal::Authenticated
        );
        assert_eq!(
            classify(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            AuthSignal::Response
        );
        assert_eq!(
            classify(r#"{"jsonrpc":"2.0","method":"OnConnected","params":{}}"#),
            AuthSignal::Other
        );
    }

    #[test]
    fn timestamps_look_like_qliks() {
        let at = |s: u64| std::time::UNIX_EPOCH + Duration::from_millis(s);
        assert_eq!(timestamp(at(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(at(1_389_344_117_372)), "2014-01-10T08:55:17.372Z");
        assert_eq!(timestamp(at(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(timestamp(at(4_102_444_799_999)), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn recognises_qlik_ending_the_session() {
        let ends = |t: &str| fatal_notice(t).is_some_and(|n| n.ends_qlik_session());
        assert!(ends(
            r#"{"jsonrpc":"2.0","method":"OnSessionTimedOut","params":{"severity":"fatal","message":"Session timed out due to inactivity"}}"#
        ));
        assert!(ends(
            r#"{"method":"OnSessionClosed","jsonrpc":"2.0","params":{}}"#
        ));
        assert!(!ends(
            r#"{"jsonrpc":"2.0","method":"OnSessionLoggedOut","params":{}}"#
        ));
        assert!(!ends(
            r#"{"jsonrpc":"2.0","id":3,"result":{"qReturn":"OnSessionTimedOut"}}"#
        ));
        assert!(!ends("not json \"OnSessionTimedOut"));
        let f = session_lost_close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "Session timed out due to inactivity".into(),
        }));
        assert_eq!(u16::from(f.code), CLOSE_QLIK_SESSION_LOST);
        assert_eq!(f.reason.as_str(), "Session timed out due to inactivity");
        let f = session_lost_close(Some(going_away("x")));
        assert_eq!(f.code, CloseCode::Away);
    }

    #[test]
    fn reads_fatal_notifications() {
        let n = fatal_notice(
            r#"{"jsonrpc":"2.0","method":"OnLicenseAccessDenied","params":{"severity":"fatal","timestamp":"2014-01-10T08:55:17.3725148Z","message":"Access to the app is denied: No available access type"}}"#,
        )
        .expect("fatal");
        assert_eq!(n.method, "OnLicenseAccessDenied");
        assert_eq!(
            n.message.as_deref(),
            Some("Access to the app is denied: No available access type")
        );
        assert!(!n.ends_qlik_session());
        // Known names count without a severity (their params are not all documented) ...
        let n = fatal_notice(r#"{"jsonrpc":"2.0","method":"OnNoEngineAvailable","params":{}}"#)
            .expect("fatal");
        assert_eq!(n.message, None);
        // ... unknown ones by their severity.
        assert!(fatal_notice(
            r#"{"jsonrpc":"2.0","method":"OnNoRepositoryAvailable","params":{"severity":"fatal"}}"#
        )
        .is_some());
        for not_fatal in [
            r#"{"jsonrpc":"2.0","method":"OnConnected","params":{"qSessionState":"SESSION_CREATED"}}"#,
            r#"{"jsonrpc":"2.0","method":"OnSomething","params":{"severity":"warning"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"OnSessionTimedOut","params":{"severity":"fatal"}}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{"qReturn":{"method":"OnSessionClosed"}}}"#,
        ] {
            assert_eq!(fatal_notice(not_fatal), None, "{not_fatal}");
        }
    }
}

/// Property tests (`PROPTEST_CASES` sets the case count; see the README's long run).
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// JSON shaped like Qlik's frames: the methods and keys the classifiers look for, nested.
    fn qlik_json() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec![
            "jsonrpc",
            "method",
            "params",
            "id",
            "mustAuthenticate",
            "severity",
            "message",
            "result",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            prop::sample::select(vec![
                "OnAuthenticationInformation",
                "OnSessionTimedOut",
                "OnSessionClosed",
                "OnNoEngineAvailable",
                "fatal",
                "warning",
                "",
                "\"id\"",
            ])
            .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn classifiers_never_panic_on_text(text in any::<String>()) {
            let _ = classify(&text);
            let _ = fatal_notice(&text);
        }

        #[test]
        fn classifiers_never_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = classify(&text);
            let _ = fatal_notice(&text);
        }

        /// The login prompt is recognised only where Qlik puts it, and a fatal notice only on a
        /// notification (no `id`) small enough to be one.
        #[test]
        fn classification_follows_the_json(v in qlik_json(), pad in 0usize..5000) {
            let text = v.to_string();
            let method = v.get("method").and_then(Value::as_str);
            let must = method == Some("OnAuthenticationInformation")
                && v.pointer("/params/mustAuthenticate") == Some(&Value::Bool(true));
            prop_assert_eq!(classify(&text) == AuthSignal::MustAuthenticate, must, "{}", text);
            if let Some(n) = fatal_notice(&text) {
                prop_assert!(v.get("id").is_none() && method == Some(n.method.as_str()));
            }
            let padded = format!("{text}{}", " ".repeat(pad));
            if padded.len() > FATAL_NOTICE_MAX {
                prop_assert!(fatal_notice(&padded).is_none());
            }
        }

        /// Deep nesting is refused by the JSON parser's depth limit, not by a stack overflow.
        #[test]
        fn deep_nesting_does_not_overflow(depth in 100usize..20_000) {
            let text = format!(
                "{}\"OnAuthenticationInformation\"{}",
                "[".repeat(depth),
                "]".repeat(depth)
            );
            prop_assert_eq!(classify(&text), AuthSignal::Other);
            let text = format!("{{\"method\":{}1{}", "[".repeat(depth), "]".repeat(depth));
            prop_assert!(fatal_notice(&text).is_none());
        }
    }
}
