//! One engine websocket's life: registered with the shared state, greeted, then a loop over
//! its frames, the orders of the shared state (fatal messages, shutdown) and the changes the
//! engine session's other sockets make, until it closes.

use super::dispatch::Rpc;
use super::messages::{self, text};
use super::upgrade::SocketParams;
use crate::engine_session::{lock, Push};
use crate::options::AuthInfoTiming;
use crate::state::{Shared, SocketCmd, SocketKind};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// How long to wait for the peer's close frame after sending ours.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Serves one upgraded engine websocket until it closes.
pub(crate) async fn run(mut ws: WebSocket, shared: Arc<Shared>, params: SocketParams) {
    let (socket_id, mut commands, alive) = shared.register_socket(
        params.kind,
        params.session_id.as_deref(),
        params.user.as_ref(),
    );
    if alive {
        serve(&mut ws, &shared, &params, socket_id, &mut commands).await;
    } else {
        close(&mut ws, 1000, "Session ended").await;
    }
    shared.unregister_socket(socket_id);
    if let Some(path) = &params.direct {
        shared.release_direct_engine(&path.key, path.ttl);
    }
}

async fn close(ws: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.to_string().into(),
    };
    if ws.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    // Wait for the peer's close frame so the closing handshake completes.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = ws.recv().await {}
    })
    .await;
}

/// What a websocket command asks of the serving loop.
enum Next {
    Continue,
    Stop,
}

async fn obey(ws: &mut WebSocket, cmd: Option<SocketCmd>) -> Next {
    match cmd {
        Some(SocketCmd::Fatal {
            method,
            message,
            close: then_close,
        }) => {
            if ws.send(messages::fatal(method, message)).await.is_err() {
                return Next::Stop;
            }
            if !then_close {
                return Next::Continue;
            }
            close(ws, 1000, message.unwrap_or("")).await;
        }
        Some(SocketCmd::Shutdown) | None => close(ws, 1001, "Server shutting down").await,
        // Dropping the socket drops the connection, without a close frame.
        Some(SocketCmd::Abort) => {}
    }
    Next::Stop
}

/// The next change another socket of this engine session made (never, without a session).
async fn next_push(pushes: &mut Option<broadcast::Receiver<Push>>, me: u64) -> Vec<i64> {
    let Some(rx) = pushes else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(p) if p.origin != me => return p.change,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

/// Sends the greeting; false when the socket is done: sending failed, or it is an
/// unauthenticated socket the options close after `mustAuthenticate`.
async fn greet(
    ws: &mut WebSocket,
    shared: &Shared,
    params: &SocketParams,
    closes_unauthenticated: bool,
) -> bool {
    for m in messages::greeting(shared, params) {
        if ws.send(m).await.is_err() {
            return false;
        }
    }
    if closes_unauthenticated {
        close(ws, 1000, "Authentication required").await;
        return false;
    }
    true
}

async fn serve(
    ws: &mut WebSocket,
    shared: &Arc<Shared>,
    params: &SocketParams,
    socket_id: u64,
    commands: &mut mpsc::UnboundedReceiver<SocketCmd>,
) {
    let authenticated = params.user.is_some();
    let closes_unauthenticated = !authenticated && shared.opts.close_after_must_authenticate;
    let mut greeted =
        shared.opts.auth_info_timing == AuthInfoTiming::Never && params.kind != SocketKind::Direct;
    if params.kind == SocketKind::Direct
        || shared.opts.auth_info_timing == AuthInfoTiming::Immediate
    {
        if !greet(ws, shared, params, closes_unauthenticated).await {
            return;
        }
        greeted = true;
    }
    let mut rpc = Rpc {
        shared: shared.clone(),
        user: params.user.clone(),
        engine: params.engine.as_ref().map(|(e, _)| e.clone()),
        socket_id,
    };
    let mut pushes = match (&params.user, &params.engine) {
        (Some(_), Some((e, _))) => Some(lock(e).pushes.subscribe()),
        _ => None,
    };
    loop {
        tokio::select! {
            cmd = commands.recv() => {
                if let Next::Stop = obey(ws, cmd).await {
                    return;
                }
            }
            change = next_push(&mut pushes, socket_id) => {
                if ws.send(messages::change(change)).await.is_err() {
                    return;
                }
            }
            msg = ws.recv() => {
                let Some(Ok(msg)) = msg else { return };
                if let Some(id) = &params.session_id {
                    shared.touch(id);
                }
                if !greeted {
                    greeted = true;
                    if !greet(ws, shared, params, closes_unauthenticated).await {
                        return;
                    }
                }
                let reply = match msg {
                    Message::Text(t) => rpc.handle_frame(t.as_str()).map(text),
                    Message::Binary(b) if authenticated => Some(Message::Binary(b)),
                    // Pings are answered by tungstenite; a close frame is echoed by it too,
                    // and the next recv() ends the loop.
                    _ => None,
                };
                if let Some(reply) = reply {
                    if ws.send(reply).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
