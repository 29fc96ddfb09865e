//! What the engine websocket sends without being asked: the greeting (`OnAuthenticationInformation`,
//! `OnConnected`), fatal proxy messages and the changes other sockets of the session made.

use super::upgrade::SocketParams;
use crate::state::{Shared, SocketKind};
use crate::util::now_rfc3339;
use axum::extract::ws::Message;
use serde_json::{json, Value};

/// A JSON-RPC notification.
fn notification(method: &str, params: Value) -> Message {
    text(json!({"jsonrpc": "2.0", "method": method, "params": params}))
}

/// A JSON value as a text frame.
pub(super) fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

/// The first messages of a socket: what the proxy says about the user (proxy sockets only),
/// then `OnConnected` (sockets with an engine session).
pub(super) fn greeting(shared: &Shared, params: &SocketParams) -> Vec<Message> {
    let connected = |attached: bool| {
        notification(
            "OnConnected",
            json!({"qSessionState": if attached { "SESSION_ATTACHED" } else { "SESSION_CREATED" }}),
        )
    };
    match (params.kind, &params.user, &params.engine) {
        // The engine itself says only OnConnected; OnAuthenticationInformation is the proxy's.
        (SocketKind::Direct, _, Some((_, attached))) => vec![connected(*attached)],
        (SocketKind::Proxy, Some(user), Some((_, attached))) => vec![
            notification(
                "OnAuthenticationInformation",
                json!({
                    "userId": user.user_id,
                    "userDirectory": user.user_directory,
                    "logoutUri": format!("{}/qps/user", shared.proxy_base()),
                    "mustAuthenticate": false
                }),
            ),
            connected(*attached),
        ],
        _ => vec![notification(
            "OnAuthenticationInformation",
            json!({"loginUri": params.login_uri, "mustAuthenticate": true}),
        )],
    }
}

/// A fatal proxy message (`message` only when documented).
pub(super) fn fatal(method: &str, message: Option<&str>) -> Message {
    let mut params = json!({"severity": "fatal", "timestamp": now_rfc3339()});
    if let Some(m) = message {
        params["message"] = json!(m);
    }
    notification(method, params)
}

/// The handles another socket of the engine session changed, as Qlik pushes them.
pub(super) fn change(handles: Vec<i64>) -> Message {
    text(json!({"jsonrpc": "2.0", "change": handles}))
}
