//! The direct engine listener (port 4747 on a real node, §4): mutual TLS with a client
//! certificate from the sim's CA, the user in `X-Qlik-User: UserDirectory=<dir>; UserId=<id>`,
//! then the same engine as behind the proxy — without proxy messages, session cookie or CSRF
//! token.

use crate::engine::{self, SocketParams};
use crate::identity::parse_user_header;
use crate::state::{RecordedRequest, Shared, SocketKind, User};
use crate::util::header_map;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::header::CONTENT_TYPE;
use http::StatusCode;
use std::sync::Arc;

/// Largest websocket message (and frame) accepted.
const MAX_WS_MESSAGE: usize = 128 << 20;

/// The direct engine router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn is_websocket(req: &Request) -> bool {
    req.headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let websocket = is_websocket(&req);
    shared.record(RecordedRequest {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().map(str::to_string),
        headers: header_map(req.headers()),
        websocket,
        direct_engine: true,
    });
    let Some(after_app) = req.uri().path().strip_prefix("/app/").map(str::to_string) else {
        return text(StatusCode::NOT_FOUND, "Not found");
    };
    let Some(path) = engine::engine_path(&after_app) else {
        return text(StatusCode::NOT_FOUND, "Not found");
    };
    if !websocket {
        return text(StatusCode::BAD_REQUEST, "Websocket upgrade required");
    }
    let user = req
        .headers()
        .get("x-qlik-user")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_user_header);
    let Some((user_directory, user_id)) = user else {
        shared.count(|c| c.engine_direct_rejected += 1);
        tracing::info!("engine: upgrade without a valid X-Qlik-User header");
        return text(
            StatusCode::UNAUTHORIZED,
            "X-Qlik-User: UserDirectory=<dir>; UserId=<id> required",
        );
    };
    let (mut parts, _body) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    // Engine sessions are shared per user, app and identity.
    let key = format!(
        "{}\\{}|{}",
        user_directory.to_lowercase(),
        user_id.to_lowercase(),
        path.key
    );
    let path = engine::EnginePath { key, ..path };
    shared.count(|c| c.engine_direct_upgrades += 1);
    let user = User {
        user_directory,
        user_id,
        attributes: Vec::new(),
    };
    let task_shared = shared.clone();
    ws.max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| async move {
            // Attached only once upgraded, so that every attach is paired with a release.
            let engine = task_shared.attach_direct_engine(&path.key);
            let params = SocketParams {
                kind: SocketKind::Direct,
                session_id: None,
                user: Some(user),
                engine: Some(engine),
                login_uri: String::new(),
                direct: Some(path),
            };
            engine::run(socket, task_shared, params).await
        })
}
