//! How an engine socket ends: the close frames (and notifications) the gateway sends, the end of
//! a frame Qlik cut off, and the waits that let a closing handshake complete.
//!
//! Close codes: 1000 for a logout or the gateway session's end, 1001 when a side goes away or the
//! gateway shuts down, 1009 for a message over `security.max_websocket_message`, 1011 when Qlik
//! fails, 1013 when Qlik is not available, and [`CLOSE_QLIK_SESSION_LOST`] when Qlik ended the
//! Qlik session.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

use super::legs::{write_all, Client, Upstream};
use crate::proxy::cut_frame::Filler;
use crate::proxy::frames;
use crate::sockets::CloseReason;
use crate::state::AppState;

/// Close code the client gets when Qlik ended the Qlik session under an open socket
/// (`OnSessionTimedOut`, `OnSessionClosed`). Qlik closes with 1000, which clients take as final:
/// enigma.js ignores 1000 even with `suspendOnClose`. The gateway has made a new Qlik session by
/// the time it sends this close, so the client is told to reconnect instead (a 4xxx code: enigma
/// suspends, and `resume()` reopens the app). The reason and the notification stay Qlik's.
pub(super) const CLOSE_QLIK_SESSION_LOST: u16 = 4002;
/// How long a socket closed for an oversized frame keeps draining the client's input, so the
/// close frame reaches the client instead of being lost in a TCP reset.
const LINGER: Duration = Duration::from_secs(2);
/// How long one side is given to finish a close once the gateway has decided on it.
pub(super) const CLOSE_WAIT: Duration = Duration::from_secs(5);

pub(super) fn going_away(reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::Away,
        reason: reason.to_string().into(),
    }
}

/// The close the client gets when the gateway ends its socket for `r`.
pub(super) fn close_frame_for(r: CloseReason) -> CloseFrame {
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
pub(super) fn notification_for(r: CloseReason, state: &AppState) -> Option<Message> {
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
pub(super) fn login_prompt(state: &AppState) -> Message {
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

/// Qlik's close after it ended the session, with the code clients treat as a lost connection.
pub(super) fn session_lost_close(f: Option<CloseFrame>) -> CloseFrame {
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

pub(super) fn is_too_big(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Capacity(_))
}

pub(super) fn warn_too_big(from: &str, state: &AppState) {
    tracing::warn!(
        from,
        limit = state.cfg.security.max_websocket_message,
        "websocket message over security.max_websocket_message; closing the socket with 1009"
    );
}

pub(super) fn too_big_frame() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Size,
        reason: "message over the gateway's size limit".into(),
    }
}

/// An optional notification, then a close frame, for the client (the byte relay's encoding).
pub(super) fn ending_frames(notice: Option<Message>, close: CloseFrame) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(n) = notice {
        out.extend(frames::encode(frames::text_frame(n.into_data()), false));
    }
    out.extend(frames::encode(Frame::close(Some(close)), false));
    out
}

/// Writes the rest of a frame Qlik cut off ([`crate::proxy::cut_frame`]), within the time a close
/// waits for a frame boundary.
pub(super) async fn finish_cut_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    f: Filler,
) -> std::io::Result<()> {
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
    tokio::time::timeout(CLOSE_WAIT, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// After a close frame was sent to a client that may still be sending a large frame: stop
/// writing, then read and discard its input until it closes (or [`LINGER`] passes). Closing a
/// socket with unread input makes the kernel send a reset, which can destroy the close frame.
pub(super) async fn linger<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    use tokio::io::AsyncWriteExt;
    let _ = io.shutdown().await;
    let _ = tokio::time::timeout(LINGER, tokio::io::copy(io, &mut tokio::io::sink())).await;
}

/// After the gateway sent its close frame in the settle phase: wait (briefly) for the client's,
/// so the closing handshake completes.
pub(super) async fn finish_close(client: &mut Client) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = client.next().await {}
    })
    .await;
}

/// The gateway ends a socket in the settle phase (logout, session end, shutdown).
pub(super) async fn close_both(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_qliks() {
        let at = |s: u64| std::time::UNIX_EPOCH + Duration::from_millis(s);
        assert_eq!(timestamp(at(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(at(1_389_344_117_372)), "2014-01-10T08:55:17.372Z");
        assert_eq!(timestamp(at(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(timestamp(at(4_102_444_799_999)), "2099-12-31T23:59:59.999Z");
    }
}
