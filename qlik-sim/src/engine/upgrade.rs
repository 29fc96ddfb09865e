//! What a listener decides before upgrading to an engine websocket: the engine path it asked
//! for and the socket's parameters.

use crate::engine_session::EngineSession;
use crate::state::{SocketKind, User};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the listener decided before upgrading.
pub(crate) struct SocketParams {
    /// Through the proxy or direct.
    pub kind: SocketKind,
    /// The proxy session (proxy sockets with a session only).
    pub session_id: Option<String>,
    /// The user, or `None` for a `mustAuthenticate` proxy socket.
    pub user: Option<User>,
    /// The engine session and whether it already existed.
    pub engine: Option<(Arc<Mutex<EngineSession>>, bool)>,
    /// `loginUri` for the `mustAuthenticate` notification (proxy sockets).
    pub login_uri: String,
    /// Direct sockets: the direct engine session's key and TTL, released on close.
    pub direct: Option<EnginePath>,
}

/// The parsed tail of `app/{appId}[/identity/{x}][/ttl/{sec}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnginePath {
    /// App (lowercase, `enginedata` when empty) and identity: `app|identity`.
    pub key: String,
    /// The `/ttl/{sec}` segment (zero when absent).
    pub ttl: Duration,
}

/// Parses what follows `app/`, or `None` if malformed.
pub(crate) fn engine_path(after_app: &str) -> Option<EnginePath> {
    let mut segments = after_app.split('/');
    let app = segments.next().unwrap_or("");
    let app = if app.is_empty() { "engineData" } else { app };
    let mut identity = "";
    let mut ttl = Duration::ZERO;
    let rest: Vec<&str> = segments.filter(|s| !s.is_empty()).collect();
    for pair in rest.chunks(2) {
        match pair {
            ["identity", x] => identity = x,
            ["ttl", n] => ttl = Duration::from_secs(n.parse::<u32>().ok()?.into()),
            _ => return None,
        }
    }
    Some(EnginePath {
        key: format!("{}|{identity}", app.to_ascii_lowercase()),
        ttl,
    })
}
