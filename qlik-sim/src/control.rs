//! The control API (plain HTTP, no auth; bind it to loopback): thin JSON wrappers over
//! [`SimControl`] for tests and demos that run the simulator as a separate process.

use crate::state::QpsFault;
use crate::SimControl;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

/// The control router.
pub(crate) fn router(control: SimControl) -> Router {
    Router::new()
        .route("/control/sessions", get(sessions))
        .route("/control/counters", get(counters))
        .route("/control/requests", get(requests).delete(clear_requests))
        .route("/control/expire", post(expire))
        .route("/control/fault", post(fault))
        .route("/control/notify", post(notify))
        .with_state(control)
}

async fn sessions(State(c): State<SimControl>) -> Response {
    Json(c.sessions()).into_response()
}

async fn counters(State(c): State<SimControl>) -> Response {
    Json(c.counters()).into_response()
}

async fn requests(State(c): State<SimControl>) -> Response {
    Json(c.requests()).into_response()
}

async fn clear_requests(State(c): State<SimControl>) -> Response {
    c.clear_requests();
    Json(json!({"cleared": true})).into_response()
}

async fn expire(State(c): State<SimControl>, Query(q): Query<HashMap<String, String>>) -> Response {
    match (q.get("userDirectory"), q.get("userId")) {
        (Some(dir), Some(id)) => c.expire_user_sessions(dir, id),
        (None, None) => c.expire_all_sessions(),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "give both userDirectory and userId, or neither"})),
            )
                .into_response()
        }
    }
    Json(json!({"expired": true})).into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.into()})),
    )
        .into_response()
}

/// `POST /control/notify?method=M[&close=true|false][&userDirectory=D&userId=U]`.
async fn notify(State(c): State<SimControl>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(method) = q.get("method") else {
        return bad_request("give method=<OnSessionTimedOut|…>");
    };
    let close = match q.get("close").map(String::as_str) {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(other) => return bad_request(format!("close must be true or false, not {other:?}")),
    };
    let sent = match (q.get("userDirectory"), q.get("userId")) {
        (Some(dir), Some(id)) => c.notify_user(dir, id, method, close),
        (None, None) => c.notify(method, close),
        _ => return bad_request("give both userDirectory and userId, or neither"),
    };
    match sent {
        Ok(n) => Json(json!({"method": method, "close": close, "notified": n})).into_response(),
        Err(e) => bad_request(e.to_string()),
    }
}

/// Body of `POST /control/fault`.
#[derive(Debug, Deserialize)]
struct FaultBody {
    fault: Option<String>,
    delay_ms: Option<u64>,
    status: Option<u16>,
}

async fn fault(State(c): State<SimControl>, body: Option<Json<FaultBody>>) -> Response {
    let Some(Json(body)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "expected a JSON body {\"fault\": …}"})),
        )
            .into_response();
    };
    let fault = match body.fault.as_deref() {
        None => None,
        Some("reject_xrfkey") => Some(QpsFault::RejectXrfkey),
        Some("delay") => Some(QpsFault::Delay(Duration::from_millis(
            body.delay_ms.unwrap_or(1000),
        ))),
        Some("status") => match body.status {
            Some(s) if (100..=999).contains(&s) => Some(QpsFault::Status(s)),
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": "fault \"status\" needs \"status\": 100..999"})),
                )
                    .into_response()
            }
        },
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("unknown fault {other:?}")})),
            )
                .into_response()
        }
    };
    c.set_fault(fault);
    Json(json!({"fault": body.fault})).into_response()
}
