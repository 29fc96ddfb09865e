//! The QPS REST API (trusted zone, port 4243 on a real node): mutual TLS, xrfkey, and the
//! session, ticket and user calls under `/qps/{prefix}/…` (§1–2 of the reference).

use crate::notifications::SessionEnd;
use crate::options::Casing;
use crate::state::{QpsFault, SessionInfo, Shared, User};
use crate::util::{decode_component, is_key16, query_param};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{Method, StatusCode};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Largest accepted request body.
const MAX_BODY: usize = 1 << 20;
/// The body of every xrfkey refusal.
pub(crate) const XSRF_MESSAGE: &str = "XSRF prevention check failed. Possible XSRF discovered.";

/// The QPS API router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

fn json(status: StatusCode, value: Value) -> Response {
    (
        status,
        [(
            http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )],
        value.to_string(),
    )
        .into_response()
}

fn xsrf_refusal(shared: &Shared) -> Response {
    shared.count(|c| c.xrfkey_failures += 1);
    text(StatusCode::FORBIDDEN, XSRF_MESSAGE)
}

/// True when the `xrfkey` query parameter is 16 alphanumerics and equals `X-Qlik-Xrfkey`.
pub(crate) fn xrfkey_ok(req: &Request) -> bool {
    let Some(query_key) = query_param(req.uri().query(), "xrfkey") else {
        return false;
    };
    let header_key = req
        .headers()
        .get("x-qlik-xrfkey")
        .and_then(|v| v.to_str().ok());
    is_key16(&query_key) && header_key == Some(query_key.as_str())
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    shared.count(|c| c.qps_requests += 1);
    match shared.fault() {
        Some(QpsFault::RejectXrfkey) => return xsrf_refusal(&shared),
        Some(QpsFault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return text(status, format!("qlik-sim: injected status {code}"));
        }
        Some(QpsFault::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    if !xrfkey_ok(&req) {
        tracing::info!(path = %req.uri().path(), "QPS API: xrfkey check failed");
        return xsrf_refusal(&shared);
    }
    let base = if shared.opts.virtual_proxy.is_empty() {
        "/qps/".to_string()
    } else {
        format!("/qps/{}/", shared.opts.virtual_proxy)
    };
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix(&base) else {
        return text(StatusCode::NOT_FOUND, "Not found");
    };
    let segments: Vec<String> = rest.split('/').map(decode_component).collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let api = Api {
        shared: &shared,
        casing: shared.opts.reply_casing,
    };
    let method = req.method().clone();
    match (segs.as_slice(), &method) {
        (["session"], &Method::POST) => match read_json(req).await {
            Ok(body) => api.add_session(&body),
            Err(r) => r,
        },
        (["ticket"], &Method::POST) => match read_json(req).await {
            Ok(body) => api.add_ticket(&body),
            Err(r) => r,
        },
        (["session", id], &Method::GET) => match shared.session(id) {
            Some(s) => json(StatusCode::OK, api.session_data(&s)),
            None => text(StatusCode::NOT_FOUND, "Session not found"),
        },
        (["session", id], &Method::DELETE) => match shared.end_session(id, SessionEnd::LoggedOut) {
            Some(s) => json(StatusCode::OK, api.session_data(&s)),
            None => text(StatusCode::NOT_FOUND, "Session not found"),
        },
        (["user", dir, id], &Method::GET) => {
            let list = shared.user_sessions(dir, id);
            json(StatusCode::OK, api.session_list(&list))
        }
        (["user", dir, id], &Method::DELETE) => {
            let list = shared.end_user_sessions(dir, id, SessionEnd::LoggedOut);
            json(StatusCode::OK, api.session_list(&list))
        }
        (["session"] | ["ticket"] | ["session", _] | ["user", _, _], _) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
        }
        _ => text(StatusCode::NOT_FOUND, "Not found"),
    }
}

async fn read_json(req: Request) -> Result<Map<String, Value>, Response> {
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| text(StatusCode::BAD_REQUEST, format!("Unreadable body: {e}")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(text(
            StatusCode::BAD_REQUEST,
            "Request body must be a JSON object",
        )),
        Err(e) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("Invalid JSON body: {e}"),
        )),
    }
}

/// Looks a request key up in PascalCase or camelCase (case-insensitively).
fn field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    body.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn user_field(body: &Map<String, Value>, name: &str) -> Result<String, String> {
    let value = match field(body, name) {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(_) => return Err(format!("{name} must be a string")),
        None => return Err(format!("{name} is required")),
    };
    if value.is_empty() {
        return Err(format!("{name} must not be empty"));
    }
    if value.contains('\\') {
        return Err(format!("{name} must not contain a backslash"));
    }
    Ok(value)
}

fn attributes(body: &Map<String, Value>) -> Result<Vec<(String, String)>, String> {
    let list = match field(body, "Attributes") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err("Attributes must be an array".to_string()),
    };
    let mut out = Vec::new();
    for item in list {
        let Value::Object(map) = item else {
            return Err("each attribute must be an object".to_string());
        };
        for (k, v) in map {
            match v {
                Value::String(s) => out.push((k.clone(), s.clone())),
                _ => return Err(format!("attribute {k} must be a string")),
            }
        }
    }
    Ok(out)
}

fn user(body: &Map<String, Value>) -> Result<User, String> {
    Ok(User {
        user_directory: user_field(body, "UserDirectory")?,
        user_id: user_field(body, "UserId")?,
        attributes: attributes(body)?,
    })
}

struct Api<'a> {
    shared: &'a Shared,
    casing: Casing,
}

impl Api<'_> {
    fn key(&self, pascal: &str) -> String {
        match self.casing {
            Casing::Pascal => pascal.to_string(),
            Casing::Camel => {
                let mut chars = pascal.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_lowercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            }
        }
    }

    fn user_json(&self, user: &User) -> Map<String, Value> {
        let attrs: Vec<Value> = user
            .attributes
            .iter()
            .map(|(k, v)| serde_json::json!({ k: v }))
            .collect();
        let mut map = Map::new();
        map.insert(
            self.key("UserDirectory"),
            Value::String(user.user_directory.clone()),
        );
        map.insert(self.key("UserId"), Value::String(user.user_id.clone()));
        map.insert(self.key("Attributes"), Value::Array(attrs));
        map
    }

    fn session_data(&self, s: &SessionInfo) -> Value {
        let mut map = self.user_json(&User {
            user_directory: s.user_directory.clone(),
            user_id: s.user_id.clone(),
            attributes: s.attributes.clone(),
        });
        map.insert(self.key("SessionId"), Value::String(s.session_id.clone()));
        Value::Object(map)
    }

    fn session_list(&self, list: &[SessionInfo]) -> Value {
        Value::Array(list.iter().map(|s| self.session_data(s)).collect())
    }

    fn add_session(&self, body: &Map<String, Value>) -> Response {
        let user = match user(body) {
            Ok(u) => u,
            Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
        };
        let session_id = match field(body, "SessionId") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            _ => return text(StatusCode::BAD_REQUEST, "SessionId is required"),
        };
        match self.shared.create_session(&session_id, user) {
            Ok(info) => json(StatusCode::CREATED, self.session_data(&info)),
            Err(_) => text(StatusCode::BAD_REQUEST, "SessionId already exists"),
        }
    }

    fn add_ticket(&self, body: &Map<String, Value>) -> Response {
        let user = match user(body) {
            Ok(u) => u,
            Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
        };
        let target_id = match field(body, "TargetId") {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        };
        let (ticket, target_uri) = self.shared.issue_ticket(user.clone(), target_id);
        let mut map = self.user_json(&user);
        map.insert(self.key("Ticket"), Value::String(ticket));
        map.insert(
            self.key("TargetUri"),
            target_uri.map(Value::String).unwrap_or(Value::Null),
        );
        json(StatusCode::CREATED, Value::Object(map))
    }
}
