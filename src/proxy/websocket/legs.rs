//! The two legs of an engine socket (the browser's and Qlik's): their types, the tungstenite
//! settings both share, and raw writes for the byte relay.

use std::pin::Pin;

use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use crate::net::Io;
use crate::proxy::frames::Tap;
use crate::state::AppState;

/// Qlik's connection, raw (parked, and in the byte relay).
pub(super) type RawUpstream = Pin<Box<dyn Io>>;
/// The browser's connection, raw (parked, and in the byte relay).
pub(super) type RawClient = TokioIo<hyper::upgrade::Upgraded>;
/// Qlik's leg, while tungstenite reads it (the settle phase).
pub(super) type Upstream = WebSocketStream<Tap<RawUpstream>>;
/// The browser's leg, while tungstenite reads it (the settle phase).
pub(super) type Client = WebSocketStream<Tap<RawClient>>;

/// Which side's close frame has already been passed on when the byte relay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Client,
    Qlik,
}

/// Both legs of every relayed socket. The read buffer is allocated up front for each leg, and
/// tungstenite's 128 KiB default made an idle proxied socket cost ~280 KiB; engine traffic is mostly
/// small JSON frames, and large ones still grow the buffers as they arrive.
pub(super) fn ws_config(state: &AppState) -> WebSocketConfig {
    let max = state.cfg.security.max_websocket_message;
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// How much a [`Tap`] holds while it waits for the end of a message: beyond the message size
/// limit, tungstenite refuses the message anyway.
pub(super) fn tap_limit(state: &AppState) -> usize {
    state
        .cfg
        .security
        .max_websocket_message
        .saturating_add(64 * 1024)
}

/// Writes `b`, nothing at all when it is empty.
pub(super) async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, b: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if b.is_empty() {
        return Ok(());
    }
    w.write_all(b).await
}

/// Writes and flushes: a TLS leg keeps written bytes until flushed.
pub(super) async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, b: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    write_all(w, b).await?;
    w.flush().await
}
