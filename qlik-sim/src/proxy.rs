//! The virtual proxy (`/{prefix}/…` on port 443 of a real node): session cookie, ticket
//! redemption, auth-module redirects, Personal API, websocket CSRF tokens, the engine
//! websocket upgrade, and a few `sim/*` endpoints for gateway tests (§1–4 of the reference).

use crate::clients;
use crate::engine::{self, SocketParams};
use crate::identity::HeaderUser;
use crate::notifications::SessionEnd;
use crate::options::DuplicateParam;
use crate::state::{RecordedRequest, Shared, SocketKind, User};
use crate::util::{cookies, encode_component, header_map, query_pairs, query_param};
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, SET_COOKIE, USER_AGENT};
use http::{HeaderValue, Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Largest websocket message (and frame) accepted.
const MAX_WS_MESSAGE: usize = 128 << 20;
/// Largest body `sim/bytes` will stream.
const MAX_SIM_BYTES: u64 = 1 << 34;
/// Chunk size of `sim/bytes`.
const CHUNK: u64 = 64 * 1024;

/// The proxy router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// The proxy session a request carries, and the cookie to set when a ticket or the
/// authentication header created it.
struct Auth {
    session: Option<(String, User)>,
    set_cookie: Option<String>,
    /// The session was created by this very request's authentication header.
    by_header: bool,
}

fn is_websocket(req: &Request) -> bool {
    req.headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>"
    );
    (status, [(CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn json_response(status: StatusCode, value: Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json; charset=utf-8")],
        value.to_string(),
    )
        .into_response()
}

fn redirect(status: StatusCode, location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (status, [(LOCATION, v)]).into_response(),
        Err(_) => text(StatusCode::BAD_REQUEST, "Invalid redirect target"),
    }
}

fn session_cookie(shared: &Shared, session_id: &str) -> String {
    let secure = if shared.opts.proxy_tls {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{}={session_id}; Path=/; HttpOnly{secure}",
        shared.opts.effective_cookie_name()
    )
}

/// The valid sessions named by the request's session cookies that `accept` takes, first one.
fn cookie_session(
    shared: &Shared,
    req: &Request,
    accept: impl Fn(&User) -> bool,
) -> Option<(String, User)> {
    let name = shared.opts.effective_cookie_name();
    cookies(req.headers())
        .into_iter()
        .filter(|(k, _)| *k == name)
        .find_map(|(_, id)| {
            let user = shared.touch(&id)?;
            accept(&user).then_some((id, user))
        })
}

/// The authentication header is not US-ASCII: the request gets 400.
struct HeaderNotAscii;

impl IntoResponse for HeaderNotAscii {
    fn into_response(self) -> Response {
        text(
            StatusCode::BAD_REQUEST,
            "The authentication header must be US-ASCII",
        )
    }
}

/// On a header-authentication virtual proxy, the user in the header: the session cookie's
/// session when it is that user's, else a new session (§3). `Ok(None)` when the header is
/// absent or names no user.
fn header_authenticate(shared: &Shared, req: &Request) -> Result<Option<Auth>, HeaderNotAscii> {
    let Some(header) = &shared.header_auth else {
        return Ok(None);
    };
    let (dir, id) = match header.user(req.headers()) {
        HeaderUser::Absent => return Ok(None),
        HeaderUser::NotAscii => {
            shared.count(|c| c.header_rejected += 1);
            tracing::info!(
                header = header.name(),
                "proxy: authentication header not US-ASCII"
            );
            return Err(HeaderNotAscii);
        }
        HeaderUser::Unrecognised => {
            shared.count(|c| c.header_rejected += 1);
            tracing::info!(
                header = header.name(),
                "proxy: authentication header names no user"
            );
            return Ok(None);
        }
        HeaderUser::User(dir, id) => (dir, id),
    };
    let same_user = |u: &User| {
        u.user_directory.eq_ignore_ascii_case(&dir) && u.user_id.eq_ignore_ascii_case(&id)
    };
    if let Some(session) = cookie_session(shared, req, same_user) {
        return Ok(Some(Auth {
            session: Some(session),
            set_cookie: None,
            by_header: false,
        }));
    }
    let user = User {
        user_directory: dir,
        user_id: id,
        attributes: Vec::new(),
    };
    let session_id = shared.create_header_session(user.clone());
    Ok(Some(Auth {
        set_cookie: Some(session_cookie(shared, &session_id)),
        session: Some((session_id, user)),
        by_header: true,
    }))
}

/// The authentication header (header-authentication virtual proxies), else a
/// `qlikTicket`/`QlikTicket` parameter, else the session cookie.
fn authenticate(shared: &Shared, req: &Request) -> Result<Auth, HeaderNotAscii> {
    if let Some(auth) = header_authenticate(shared, req)? {
        return Ok(auth);
    }
    if let Some(ticket) = query_param(req.uri().query(), "qlikticket") {
        if let Some((id, user)) = shared.redeem_ticket(&ticket) {
            return Ok(Auth {
                set_cookie: Some(session_cookie(shared, &id)),
                session: Some((id, user)),
                by_header: false,
            });
        }
        tracing::info!("proxy: invalid or expired ticket");
    }
    Ok(Auth {
        session: cookie_session(shared, req, |_| true),
        set_cookie: None,
        by_header: false,
    })
}

/// The `loginUri` of unauthenticated answers.
fn login_uri(shared: &Shared, target: &str) -> String {
    format!(
        "{}/internal_windows_authentication/?targetUri={}",
        shared.proxy_base(),
        encode_component(target)
    )
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let websocket = is_websocket(&req);
    shared.record(RecordedRequest {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().map(str::to_string),
        headers: header_map(req.headers()),
        websocket,
        direct_engine: false,
    });
    let base = format!("{}/", shared.opts.prefix_path());
    let Some(rest) = req.uri().path().strip_prefix(&base).map(str::to_string) else {
        return text(StatusCode::NOT_FOUND, "Not found");
    };
    let first = rest.split('/').next().unwrap_or("");
    if first == "internal_windows_authentication" || first == "internal_forms_authentication" {
        return html(
            StatusCode::UNAUTHORIZED,
            "Authentication required",
            "<h1>401 Unauthorized</h1><p>qlik-sim has no login form: use a ticket or a session.</p>",
        );
    }
    if rest == "app" {
        return redirect(
            StatusCode::MOVED_PERMANENTLY,
            &format!("{}/app/", shared.opts.prefix_path()),
        );
    }
    if websocket && rest.starts_with("app/") {
        return upgrade(shared, req, &rest["app/".len()..]).await;
    }

    let auth = match authenticate(&shared, &req) {
        Ok(auth) => auth,
        Err(refusal) => return refusal.into_response(),
    };
    let mut response = route(&shared, req, &rest, auth.session).await;
    if let Some(cookie) = auth.set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

/// One arm per endpoint of Qlik's proxy that the simulator serves, tried in order (long for
/// that reason: a table would hide the order).
async fn route(
    shared: &Shared,
    req: Request,
    rest: &str,
    session: Option<(String, User)>,
) -> Response {
    let method = req.method().clone();
    if rest == "qps/user" && method == Method::GET {
        return personal(shared, &req, session.as_ref());
    }
    if rest == "qps/user" && method == Method::DELETE {
        if let Some((id, _)) = &session {
            shared.end_session(id, SessionEnd::LoggedOut);
        }
        return StatusCode::NO_CONTENT.into_response();
    }
    let Some((session_id, user)) = session else {
        // Qlik answers 403 here rather than its login redirect ("for historical reasons", as
        // @qlik/api's source says), and clients count it as "not authenticated".
        if rest == "qps/csrftoken" {
            return StatusCode::FORBIDDEN.into_response();
        }
        if let Some(r) = clients::without_session(rest, &method) {
            return r;
        }
        return login_redirect(shared, &req);
    };
    if let Some(r) = clients::with_session(&req, rest, &user) {
        return r;
    }
    match (rest, &method) {
        ("hub" | "hub/", &Method::GET) => html(
            StatusCode::OK,
            "Qlik Sense Hub",
            &format!(
                "<h1>Hub</h1><p>Signed in as {}\\{}</p>",
                user.user_directory, user.user_id
            ),
        ),
        ("resources/autogenerated/qlik-styles.css", &Method::GET) => (
            StatusCode::OK,
            // Static resources are the same for every user: Qlik lets caches keep them.
            [
                (CONTENT_TYPE, "text/css"),
                (http::header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            "/* qlik-sim */\n.qv-object { color: #404040; }\n",
        )
            .into_response(),
        ("qps/csrftoken", &Method::GET) => match shared.issue_csrf_token(&session_id) {
            Some(token) => (StatusCode::NO_CONTENT, [("qlik-csrf-token", token)]).into_response(),
            None => StatusCode::FORBIDDEN.into_response(),
        },
        ("sim/echo", _) => echo(shared, req, &session_id, &user).await,
        ("sim/bytes", &Method::GET) => bytes_body(&req),
        // Absolute URLs on the proxy's own origin in the headers that can carry them.
        ("sim/refresh", &Method::GET) => (
            StatusCode::OK,
            [
                (
                    http::header::REFRESH,
                    format!("5; url={}/hub/", shared.proxy_base()),
                ),
                (
                    http::header::CONTENT_LOCATION,
                    format!("{}/sim/echo", shared.proxy_base()),
                ),
            ],
            "refresh",
        )
            .into_response(),
        ("sim/redirect", &Method::GET) => match query_param(req.uri().query(), "to") {
            Some(to) if to.starts_with('/') && !to.starts_with("//") => {
                redirect(StatusCode::FOUND, &format!("{}{to}", shared.proxy_base()))
            }
            _ => text(
                StatusCode::BAD_REQUEST,
                "`to` must be a path starting with /",
            ),
        },
        // `?as=DIR\ID`: the session cookie of a new session of that user instead (what a
        // proxy that authenticated the request some other way would set); `?cookie=…`: one
        // more Set-Cookie, verbatim.
        ("sim/setcookie", &Method::GET) => {
            let q = req.uri().query();
            let session_id = match query_param(q, "as")
                .as_deref()
                .and_then(|u| u.split_once('\\'))
            {
                Some((dir, id)) => {
                    let other = uuid::Uuid::new_v4().to_string();
                    let user = User {
                        user_directory: dir.to_string(),
                        user_id: id.to_string(),
                        attributes: Vec::new(),
                    };
                    match shared.create_session(&other, user) {
                        Ok(_) => other,
                        Err(_) => session_id,
                    }
                }
                None => session_id,
            };
            let mut r = text(StatusCode::OK, "cookies set");
            let headers = r.headers_mut();
            let extra = query_param(q, "cookie");
            for c in [
                session_cookie(shared, &session_id),
                "sim-pref=1; Path=/".into(),
            ]
            .into_iter()
            .chain(extra)
            {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    headers.append(SET_COOKIE, v);
                }
            }
            r
        }
        _ => text(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// 302 to the internal auth module, Windows or forms by User-Agent (§3).
fn login_redirect(shared: &Shared, req: &Request) -> Response {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let target_id = shared.new_target(format!("{}{path_and_query}", shared.proxy_url));
    let windows = req
        .headers()
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.contains("Windows"));
    let module = if windows {
        "internal_windows_authentication"
    } else {
        "internal_forms_authentication"
    };
    redirect(
        StatusCode::FOUND,
        &format!("{}/{module}/?targetId={target_id}", shared.proxy_base()),
    )
}

/// `GET /{vp}/qps/user` (Personal API).
fn personal(shared: &Shared, req: &Request, session: Option<&(String, User)>) -> Response {
    let body = match session {
        Some((_, user)) => json!({
            "userDirectory": user.user_directory,
            "userId": user.user_id,
            "userName": user.user_id,
            "logoutUri": format!("{}/qps/user", shared.proxy_base()),
        }),
        None => {
            let target = query_param(req.uri().query(), "targetUri")
                .unwrap_or_else(|| format!("{}/hub/", shared.proxy_base()));
            json!({"session": "inactive", "loginUri": login_uri(shared, &target)})
        }
    };
    json_response(StatusCode::OK, body)
}

/// `ANY sim/echo`: describes the request; the body is counted while streaming, not buffered.
async fn echo(shared: &Shared, req: Request, session_id: &str, user: &User) -> Response {
    // What Qlik would make of a `qlik-csrf-token` header (checked on modifying verbs).
    let csrf = match req
        .headers()
        .get("qlik-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        None => "absent",
        Some(t) if shared.check_csrf_token(session_id, t) => "valid",
        Some(_) => "invalid",
    };
    let (parts, body) = req.into_parts();
    let mut stream = body.into_data_stream();
    let mut body_len: u64 = 0;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => body_len += bytes.len() as u64,
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("body read failed: {e}")),
        }
    }
    let cookies: BTreeMap<String, String> = cookies(&parts.headers).into_iter().collect();
    json_response(
        StatusCode::OK,
        json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": header_map(&parts.headers),
            "cookies": cookies,
            "body_len": body_len,
            "user": {"userDirectory": user.user_directory, "userId": user.user_id},
            "csrfToken": csrf,
        }),
    )
}

/// `GET sim/bytes?n=N`: exactly N bytes of the pattern `i % 251`, streamed in chunks.
fn bytes_body(req: &Request) -> Response {
    let n = match query_param(req.uri().query(), "n").map(|n| n.parse::<u64>()) {
        Some(Ok(n)) if n <= MAX_SIM_BYTES => n,
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "`n` must be a byte count up to 16 GiB",
            )
        }
    };
    let stream = futures_util::stream::unfold(0u64, move |offset| async move {
        if offset >= n {
            return None;
        }
        let len = CHUNK.min(n - offset);
        let chunk: Vec<u8> = (offset..offset + len).map(|i| (i % 251) as u8).collect();
        Some((
            Ok::<Bytes, std::io::Error>(Bytes::from(chunk)),
            offset + len,
        ))
    });
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, "application/octet-stream".to_string()),
            (CONTENT_LENGTH, n.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The host part of an `Origin` value (`https://host:port` → `host`).
fn origin_host(origin: &str) -> Option<String> {
    let authority = origin.split_once("://")?.1.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?.to_string()
    } else {
        authority.split(':').next()?.to_string()
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn host_header_host(req: &Request) -> Option<String> {
    let host = req.headers().get(http::header::HOST)?.to_str().ok()?;
    origin_host(&format!("x://{host}"))
}

/// The Host allow list check: the proxy's own host names, or a listed host (§3).
fn origin_allowed(shared: &Shared, req: &Request) -> bool {
    let Some(host) = req
        .headers()
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .and_then(origin_host)
    else {
        return false;
    };
    let own = [
        Some(shared.opts.bind.to_string()),
        Some("localhost".to_string()),
        Some("127.0.0.1".to_string()),
        Some("::1".to_string()),
        host_header_host(req),
    ];
    let own_ok = if shared.opts.own_host_names.is_empty() {
        own.iter().flatten().any(|h| h.eq_ignore_ascii_case(&host))
    } else {
        shared
            .opts
            .own_host_names
            .iter()
            .any(|h| h.trim().eq_ignore_ascii_case(&host))
    };
    own_ok
        || shared.opts.host_allow_list.iter().any(|allowed| {
            let allowed = allowed.trim().to_ascii_lowercase();
            allowed == host
                || origin_host(&format!("x://{allowed}")).as_deref() == Some(host.as_str())
        })
}

fn forbidden(shared: &Shared, why: &str) -> Response {
    shared.count(|c| c.ws_rejected += 1);
    tracing::info!("proxy: websocket upgrade refused: {why}");
    text(StatusCode::FORBIDDEN, why)
}

/// The engine websocket upgrade at `/{vp}/app/…` (§3, §4).
async fn upgrade(shared: Arc<Shared>, req: Request, after_app: &str) -> Response {
    if !origin_allowed(&shared, &req) {
        return forbidden(&shared, "Origin not allowed");
    }
    let Some(path) = engine::engine_path(after_app) else {
        return text(StatusCode::NOT_FOUND, "Not found");
    };
    let key = path.key;
    let auth = match authenticate(&shared, &req) {
        Ok(auth) => auth,
        Err(refusal) => return refusal.into_response(),
    };
    if let Some((id, _)) = &auth.session {
        // A session the authentication header creates on this very upgrade cannot have a
        // token yet; the check guards sessions carried by a cookie (or a ticket).
        if shared.opts.require_csrf_token && !auth.by_header {
            let mut tokens = query_pairs(req.uri().query())
                .into_iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("qlik-csrf-token"))
                .map(|(_, v)| v);
            let token = match shared.opts.duplicate_param {
                DuplicateParam::First => tokens.next(),
                DuplicateParam::Last => tokens.next_back(),
            };
            let token_ok = token.is_some_and(|t| shared.check_csrf_token(id, &t));
            if !token_ok {
                return forbidden(
                    &shared,
                    "Cross-Site Websocket Hijacking attack prevention check failed",
                );
            }
        }
    }
    let target = format!("{}/hub/", shared.proxy_base());
    let (mut parts, _body) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let engine = auth
        .session
        .as_ref()
        .and_then(|(id, _)| shared.attach_engine(id, &key));
    if auth.session.is_some() && engine.is_none() {
        // The session ended between the check and the attach.
        return forbidden(&shared, "Session ended");
    }
    shared.count(|c| {
        c.ws_upgrades += 1;
        if auth.session.is_none() {
            c.ws_must_authenticate += 1;
        }
    });
    let (session_id, user) = auth.session.unzip();
    let params = SocketParams {
        kind: SocketKind::Proxy,
        session_id,
        user,
        engine,
        login_uri: login_uri(&shared, &target),
        direct: None,
    };
    let task_shared = shared.clone();
    let mut response = ws
        .max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| engine::run(socket, task_shared, params));
    if let Some(cookie) = auth.set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_origins_and_engine_paths() {
        assert_eq!(
            origin_host("https://LocalHost:8443").as_deref(),
            Some("localhost")
        );
        assert_eq!(origin_host("http://[::1]:80").as_deref(), Some("::1"));
        assert_eq!(origin_host("null"), None);
        let key = |p: &str| engine::engine_path(p).map(|p| p.key);
        assert_eq!(key("").as_deref(), Some("enginedata|"));
        assert_eq!(key("abc/identity/tab1/ttl/30").as_deref(), Some("abc|tab1"));
        assert_eq!(
            engine::engine_path("abc/ttl/30").map(|p| p.ttl),
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(key("abc/bogus/1"), None);
        assert_eq!(key("abc/ttl/x"), None);
    }
}
