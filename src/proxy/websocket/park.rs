//! Parking an engine socket until someone speaks: between the upgrade and the first bytes from
//! either side, both legs are held raw, with no tungstenite state and no read buffers.
//!
//! Qlik's documented order is that `OnAuthenticationInformation` comes only after the client's
//! first frame, so every socket starts quiet, and one whose page has not spoken yet (or whose
//! engine never greets) stays quiet. tungstenite zeroes its whole read buffer before each read,
//! so a settling socket holds a touched read buffer per leg however little arrives; a parked one
//! holds its two connections and the few hundred bytes of its task. The first bytes (or the end
//! of either connection, or the gateway closing the socket) wake it, and the settle phase starts
//! with those bytes in front of what it reads.

use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::close::close_both;
use super::legs::{tap_limit, ws_config, Client, RawClient, RawUpstream, Upstream};
use crate::proxy::frames::{read_chunk, Tap};
use crate::sockets::{CloseReason, SocketGuard};
use crate::state::AppState;

/// How the park ended.
pub(super) enum Parked {
    /// A side spoke (or a connection ended): settle with these legs, which read the bytes the
    /// park took first.
    Woken(Box<(Client, Upstream)>),
    /// The gateway closed the socket while it was parked; both sides have been told.
    Closed,
}

/// Waits, holding no buffers, until either leg has bytes (or ends) or the gateway closes the
/// socket. `qlik_read`: what Qlik sent behind its handshake response; when there is some, Qlik
/// has spoken already and the socket does not park.
pub(super) async fn park(
    state: &AppState,
    guard: &mut SocketGuard,
    mut client: RawClient,
    mut qlik: RawUpstream,
    qlik_read: Vec<u8>,
) -> Parked {
    let mut client_read = Vec::new();
    let mut qlik_read = qlik_read;
    if qlik_read.is_empty() {
        let (mut client_spare, mut qlik_spare) = (Vec::new(), Vec::new());
        let woke = tokio::select! {
            // Cancelling a pending read loses nothing: read_chunk has taken no bytes yet. An
            // error or the end of a connection is met again when settle reads, and handled
            // there like any other.
            r = read_chunk(&mut client, &mut client_spare) => Wake::Client(r.ok().flatten()),
            r = read_chunk(&mut qlik, &mut qlik_spare) => Wake::Qlik(r.ok().flatten()),
            r = guard.closed() => Wake::Close(r),
        };
        match woke {
            Wake::Client(read) => client_read = read.unwrap_or_default(),
            Wake::Qlik(read) => qlik_read = read.unwrap_or_default(),
            Wake::Close(reason) => {
                let (mut client, mut upstream) =
                    legs(state, client, client_read, qlik, qlik_read).await;
                close_both(&mut client, &mut upstream, reason, state).await;
                return Parked::Closed;
            }
        }
    }
    Parked::Woken(Box::new(
        legs(state, client, client_read, qlik, qlik_read).await,
    ))
}

/// What woke a parked socket.
enum Wake {
    Client(Option<Vec<u8>>),
    Qlik(Option<Vec<u8>>),
    Close(CloseReason),
}

/// Both legs as tungstenite streams for the settle phase, each reading `…_read` first.
async fn legs(
    state: &AppState,
    client: RawClient,
    client_read: Vec<u8>,
    qlik: RawUpstream,
    qlik_read: Vec<u8>,
) -> (Client, Upstream) {
    let limit = tap_limit(state);
    let cfg = ws_config(state);
    let client = WebSocketStream::from_raw_socket(
        Tap::frames_after(client, client_read, limit),
        Role::Server,
        Some(cfg),
    );
    let upstream = WebSocketStream::from_raw_socket(
        Tap::frames_after(qlik, qlik_read, limit),
        Role::Client,
        Some(cfg),
    );
    (client.await, upstream.await)
}
