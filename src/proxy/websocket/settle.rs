//! Settling an engine socket: until Qlik has said who the user is (`OnAuthenticationInformation`),
//! the gateway reads Qlik's frames and keeps a copy of what the client sent. If Qlik says
//! `mustAuthenticate: true` (it lost the session), the gateway makes a new Qlik session,
//! reconnects and replays the client's frames: the browser never sees the notification that used
//! to start the login loop. Once settled, the socket goes to the byte relay.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::header::HeaderMap;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

use super::close::{
    close_both, close_frame_for, finish_close, going_away, is_too_big, linger, login_prompt,
    too_big_frame, warn_too_big, CLOSE_QLIK_SESSION_LOST,
};
use super::dial::connect_with_session;
use super::legs::{Client, Side, Upstream};
use super::notices::FatalWatch;
use crate::error::GatewayError;
use crate::metrics::Direction;
use crate::session::{QlikSession, SessionId};
use crate::sockets::{CloseReason, SocketGuard};
use crate::state::AppState;

/// How many client frames (and bytes) are kept for replay while Qlik has not yet confirmed the session.
const REPLAY_FRAMES: usize = 64;
const REPLAY_BYTES: usize = 4 * 1024 * 1024;
/// Re-creations of the Qlik session per socket. If Qlik still refuses a session the gateway just
/// made, the socket is closed with 1011 and the cause logged (`mustAuthenticate: true` is never
/// passed on while the gateway session lives: it would send the user round the login loop).
const MAX_REAUTH: usize = 2;

/// What a frame from Qlik says about authentication.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AuthSignal {
    /// `OnAuthenticationInformation` with `mustAuthenticate: true`.
    MustAuthenticate,
    /// `OnAuthenticationInformation` with `mustAuthenticate: false`.
    Authenticated,
    /// A response (has an `id`): Qlik is serving requests, so it accepted the session.
    Response,
    /// Some other notification.
    Other,
}

/// Reads a text frame from Qlik for what it says about authentication.
pub(super) fn classify(text: &str) -> AuthSignal {
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

/// A socket in the settle phase: what it needs to reconnect, and what the relay takes over.
pub(super) struct Settling {
    pub(super) state: Arc<AppState>,
    pub(super) sid: SessionId,
    pub(super) path_q: String,
    pub(super) fwd: HeaderMap,
    pub(super) qlik: QlikSession,
    pub(super) guard: SocketGuard,
    pub(super) fatal: FatalWatch,
}

/// How the settle phase ended.
pub(super) enum Settled {
    /// Authentication settled; relay plainly from now on. `Some(side)`: that side's close frame
    /// has been passed on already.
    Relay(Box<Upstream>, Option<Side>),
    /// The socket is done.
    Done,
}

/// What one frame (or event) did to the settle phase.
enum Next {
    /// Still settling: wait for the next frame.
    Wait,
    /// Settled; see [`Settled::Relay`].
    Relay(Option<Side>),
    /// The socket is done.
    Done,
}

/// The client's frames kept for a replay on a new upstream socket.
enum Replay {
    Kept {
        frames: Vec<Message>,
        bytes: usize,
    },
    /// More than [`REPLAY_FRAMES`] or [`REPLAY_BYTES`] were sent: nothing is kept any more.
    TooMuch,
}

impl Replay {
    fn keep(&mut self, msg: &Message) {
        let Replay::Kept { frames, bytes } = self else {
            return;
        };
        *bytes += msg.len();
        if frames.len() < REPLAY_FRAMES && *bytes <= REPLAY_BYTES {
            frames.push(msg.clone());
        } else {
            *self = Replay::TooMuch;
        }
    }
}

type Read = Option<Result<Message, tungstenite::Error>>;

impl Settling {
    /// Watches Qlik's first frames and recovers from a lost Qlik session.
    pub(super) async fn run(&mut self, client: &mut Client, mut upstream: Upstream) -> Settled {
        let mut replay = Replay::Kept {
            frames: Vec::new(),
            bytes: 0,
        };
        let mut reauths = 0usize;
        loop {
            let next = tokio::select! {
                r = self.guard.closed() => {
                    close_both(client, &mut upstream, r, &self.state).await;
                    Next::Done
                }
                m = upstream.next() => self.on_qlik_frame(m, client, &mut upstream, &replay, &mut reauths).await,
                m = client.next() => self.on_client_frame(m, client, &mut upstream, &mut replay).await,
            };
            match next {
                Next::Wait => {}
                Next::Relay(closed) => return Settled::Relay(Box::new(upstream), closed),
                Next::Done => return Settled::Done,
            }
        }
    }

    /// A frame from Qlik (or the end of its connection).
    async fn on_qlik_frame(
        &mut self,
        m: Read,
        client: &mut Client,
        upstream: &mut Upstream,
        replay: &Replay,
        reauths: &mut usize,
    ) -> Next {
        let msg = match m {
            Some(Ok(msg)) => msg,
            Some(Err(e)) if is_too_big(&e) => {
                warn_too_big("Qlik", &self.state);
                let _ = client.close(Some(too_big_frame())).await;
                return Next::Done;
            }
            Some(Err(_)) | None => {
                let (notice, close) = self
                    .fatal
                    .ending(&None)
                    .await
                    .unwrap_or_else(|| (None, going_away("Qlik closed the connection")));
                if let Some(n) = notice {
                    let _ = client.send(n).await;
                }
                let _ = client.close(Some(close)).await;
                return Next::Done;
            }
        };
        match &msg {
            Message::Text(t) => match classify(t.as_str()) {
                AuthSignal::MustAuthenticate => {
                    self.must_authenticate(client, upstream, replay, reauths)
                        .await
                }
                AuthSignal::Authenticated | AuthSignal::Response => {
                    match self.to_client(client, msg).await {
                        Next::Wait => Next::Relay(None),
                        other => other,
                    }
                }
                AuthSignal::Other => {
                    self.fatal.observe(t.as_str(), &self.qlik);
                    self.to_client(client, msg).await
                }
            },
            Message::Close(f) => {
                match self.fatal.ending(f).await {
                    Some((notice, close)) => {
                        if let Some(n) = notice {
                            let _ = client.send(n).await;
                        }
                        let _ = client.send(Message::Close(Some(close))).await;
                    }
                    None => {
                        let _ = client.send(msg).await;
                    }
                }
                Next::Relay(Some(Side::Qlik))
            }
            _ => {
                counted(&self.state, Direction::QlikToClient, &msg);
                if client.send(msg).await.is_err() {
                    return Next::Done;
                }
                Next::Wait
            }
        }
    }

    /// A text frame from Qlik on to the client, its URLs public and counted.
    async fn to_client(&self, client: &mut Client, msg: Message) -> Next {
        let msg = with_public_urls(&self.state, msg);
        counted(&self.state, Direction::QlikToClient, &msg);
        if client.send(msg).await.is_err() {
            return Next::Done;
        }
        Next::Wait
    }

    /// Qlik said `mustAuthenticate: true`: reconnect with a new Qlik session and replay, or end
    /// the socket with the close that fits.
    async fn must_authenticate(
        &mut self,
        client: &mut Client,
        upstream: &mut Upstream,
        replay: &Replay,
        reauths: &mut usize,
    ) -> Next {
        match replay {
            Replay::Kept { frames, .. } if *reauths < MAX_REAUTH => {
                *reauths += 1;
                match self.reconnect(frames).await {
                    Ok(up) => {
                        *upstream = up;
                        return Next::Wait;
                    }
                    Err(GatewayError::Unauthenticated { .. }) => {
                        // The gateway session itself is gone: only now is a login due.
                        tracing::info!(session = %self.sid.log_tag(), "Qlik lost the session and the gateway session has ended; sending the client to the login");
                        let _ = client.send(login_prompt(&self.state)).await;
                        let _ = client
                            .close(Some(close_frame_for(CloseReason::SessionEnded)))
                            .await;
                    }
                    Err(e) => {
                        // Qlik or QPS is not answering: a login would not help (and
                        // would start the very login loop the gateway exists to end).
                        tracing::warn!(session = %self.sid.log_tag(), error = %e, "Qlik lost the session and re-creating it failed");
                        let _ = client
                            .close(Some(CloseFrame {
                                code: CloseCode::Again,
                                reason: "Qlik Sense is not available; try again".into(),
                            }))
                            .await;
                    }
                }
            }
            Replay::TooMuch => {
                // Too much was sent to replay it on a new socket: renew the Qlik
                // session now and let the client reconnect and repeat.
                tracing::info!(session = %self.sid.log_tag(), "Qlik lost the session after more client frames than the replay keeps; asking the client to reconnect");
                if let Err(e) = self.state.qlik.recreate(&self.sid, &self.qlik).await {
                    tracing::warn!(session = %self.sid.log_tag(), error = %e, "re-creating the Qlik session failed");
                }
                let _ = client
                    .close(Some(CloseFrame {
                        code: CloseCode::from(CLOSE_QLIK_SESSION_LOST),
                        reason: "Qlik session renewed; reconnect".into(),
                    }))
                    .await;
            }
            Replay::Kept { .. } => {
                // Sessions the gateway just made are refused: a configuration fault.
                // Never pass `mustAuthenticate: true` on while the gateway session is
                // alive: the client would log in again and land here again.
                tracing::error!(
                    session = %self.sid.log_tag(),
                    session_cookie = %self.state.cfg.qlik.session_cookie,
                    virtual_proxy = %self.state.cfg.qlik.virtual_proxy,
                    "Qlik still asks for authentication with a Qlik session the gateway just created; check that qlik.session_cookie is the virtual proxy's session cookie header name and qlik.virtual_proxy its prefix"
                );
                let _ = client
                    .close(Some(CloseFrame {
                        code: CloseCode::Error,
                        reason: "Qlik does not accept the gateway's session; see the gateway log"
                            .into(),
                    }))
                    .await;
            }
        }
        finish_close(client).await;
        Next::Done
    }

    /// A frame from the client (or the end of its connection) on to Qlik, kept for a replay.
    async fn on_client_frame(
        &self,
        m: Read,
        client: &mut Client,
        upstream: &mut Upstream,
        replay: &mut Replay,
    ) -> Next {
        let msg = match m {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                let too_big = is_too_big(&e);
                let _ = upstream
                    .close(Some(going_away("client connection failed")))
                    .await;
                if too_big {
                    warn_too_big("client", &self.state);
                    let _ = client.close(Some(too_big_frame())).await;
                    linger(client.get_mut()).await;
                }
                return Next::Done;
            }
            None => {
                let _ = upstream.close(None).await;
                return Next::Done;
            }
        };
        if let Message::Close(_) = msg {
            let _ = upstream.send(msg).await;
            return Next::Relay(Some(Side::Client));
        }
        replay.keep(&msg);
        counted(&self.state, Direction::ClientToQlik, &msg);
        if upstream.send(msg).await.is_err() {
            let _ = client
                .close(Some(going_away("Qlik closed the connection")))
                .await;
            return Next::Done;
        }
        Next::Wait
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
}

/// A notification naming Qlik's URLs (`logoutUri`, `loginUri`) with them on the public origin.
fn with_public_urls(state: &AppState, msg: Message) -> Message {
    match &msg {
        Message::Text(t) => {
            match crate::proxy::public_urls::rewrite_notification(state, t.as_str()) {
                Some(new) => Message::text(new),
                None => msg,
            }
        }
        _ => msg,
    }
}

/// Counts a relayed message: text and binary only (control frames are each socket's own).
fn counted(state: &AppState, direction: Direction, m: &Message) {
    if let Message::Text(_) | Message::Binary(_) = m {
        state.metrics.ws_frame(direction, m.len());
    }
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
}
