//! `/_gateway/login`, `logout`, `logged-out`, `me`, `healthz`, `readyz`, `metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{current_session, return_to, wants_html};
use crate::auth::{LoginOutcome, LoginRequest};
use crate::error::{json_body, GatewayError};
use crate::metrics;
use crate::session::{GatewaySession, SessionId, Timeouts};
use crate::sockets::CloseReason;
use crate::state::AppState;

/// The peer address of the connection, inserted by the server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerAddr(pub SocketAddr);

#[derive(Deserialize)]
pub(crate) struct LoginParams {
    return_to: Option<String>,
}

/// The `{location}` placeholder of Qlik's client libraries' `loginUri`, left as it is.
const UNFILLED_LOCATION: &str = "{location}";

/// `GET /_gateway/login`: with a live gateway session, straight back to `return_to`; otherwise
/// authenticate with the configured provider, start a fresh gateway session (a new id: an ended
/// one's, if any, is never reused) and go back to `return_to`.
pub(crate) async fn login(
    State(state): State<Arc<AppState>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    Query(params): Query<LoginParams>,
    uri: http::Uri,
    headers: HeaderMap,
) -> Response {
    let html = wants_html(&headers);
    let host = request_host(&uri, &headers);
    let target = match params.return_to.as_deref() {
        None => "/".to_string(),
        // qlik-embed's loader navigates to its `login-uri` without filling in `{location}` (its
        // runtime and `@qlik/api` do fill it in): the page it came from is the Referer.
        Some(UNFILLED_LOCATION) => headers
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| return_to::sanitize(r, &state.cfg.server.public_origin))
            .unwrap_or_else(|| "/".to_string()),
        Some(raw) => match return_to::sanitize(raw, &state.cfg.server.public_origin) {
            Some(t) => t,
            None => {
                return GatewayError::BadRequest(format!(
                "return_to must be a path on this site (starting with a single /) or a URL on {}",
                state.cfg.server.public_origin
            ))
                .respond(html)
            }
        },
    };
    // Already logged in: nothing to do but go back. Logging in again here would end the session
    // (and its websockets) on any cross-site link to this URL (the cookie is SameSite=Lax), with
    // nothing gained; the session is only replaced where a new identity is established.
    match current_session(&state, &headers).await {
        Ok(Some(_)) => {
            let mut resp = super::found(&target);
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return resp;
        }
        Ok(None) => {}
        Err(e) => return refused(&state, e, html),
    }
    let outcome = state
        .provider
        .login(&LoginRequest {
            headers: &headers,
            peer,
            host: host.as_deref(),
            return_to: &target,
            query: uri.query(),
        })
        .await;
    finish_login(&state, outcome, &headers, peer, target, html).await
}

/// `GET {auth.oidc.redirect_path}`: the identity provider sends the browser back here.
pub(crate) async fn callback(
    State(state): State<Arc<AppState>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    uri: http::Uri,
    headers: HeaderMap,
) -> Response {
    let html = wants_html(&headers);
    let host = request_host(&uri, &headers);
    let outcome = state
        .provider
        .callback(&LoginRequest {
            headers: &headers,
            peer,
            host: host.as_deref(),
            return_to: "/",
            query: uri.query(),
        })
        .await;
    finish_login(&state, outcome, &headers, peer, "/".to_string(), html).await
}

/// Turns a provider's answer into a response: its challenge as is, its failure as an error page,
/// or a new gateway session (a new id: the old one, if any, is dropped) and a redirect. Each
/// answer is counted (`qlik_gateway_logins_total`).
async fn finish_login(
    state: &AppState,
    outcome: Result<LoginOutcome, crate::auth::AuthError>,
    headers: &HeaderMap,
    peer: SocketAddr,
    target: String,
    html: bool,
) -> Response {
    let (identity, extra, target, id_token) = match outcome {
        Ok(LoginOutcome::Authenticated {
            identity,
            headers,
            return_to,
            id_token,
        }) => (
            identity,
            headers,
            return_to
                .and_then(|t| return_to::sanitize(&t, &state.cfg.server.public_origin))
                .unwrap_or(target),
            id_token,
        ),
        Ok(LoginOutcome::Challenge(resp)) => {
            state
                .metrics
                .login(state.provider.name(), metrics::LoginOutcome::Challenge);
            return resp;
        }
        Err(e) => return refused(state, GatewayError::Auth(e), html),
    };
    // Rotate: never keep an id that existed before authentication (session fixation).
    if let Some(old) = state.cookies.read(headers) {
        if let Ok(Some(prev)) = state.store.remove(&old).await {
            state
                .sockets
                .close_session(old.storage_key(), CloseReason::SessionEnded);
            state.qlik.end(&prev).await;
        }
    }
    let id = SessionId::generate();
    let mut session = GatewaySession::new(identity, state.provider.name());
    session.id_token = id_token.map(crate::session::Secret::new);
    tracing::info!(
        session = %id.log_tag(),
        user = %format_args!("{}\\{}", session.identity.user_directory, session.identity.user_id),
        provider = state.provider.name(),
        peer = %peer.ip(),
        audit = true,
        "login"
    );
    let max = state.cfg.session.max_sessions_per_user;
    let user = format!(
        "{}\\{}",
        session.identity.user_directory, session.identity.user_id
    );
    match state.store.insert(&id, session, max).await {
        Ok(true) => {}
        Ok(false) => {
            return refused(
                state,
                GatewayError::TooManySessions { user, limit: max },
                html,
            )
        }
        Err(e) => return refused(state, GatewayError::Store(e), html),
    }
    state
        .metrics
        .login(state.provider.name(), metrics::LoginOutcome::Success);
    let mut resp = super::found(&target);
    let h = resp.headers_mut();
    for (k, v) in extra.iter() {
        h.append(k, v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&state.cookies.issue(&id)) {
        h.append(header::SET_COOKIE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A login that made no session: counted with the error's code, then answered.
fn refused(state: &AppState, e: GatewayError, html: bool) -> Response {
    state.metrics.login(
        state.provider.name(),
        metrics::LoginOutcome::Refused(e.code()),
    );
    e.respond(html)
}

/// The host the browser asked for, without the port: HTTP/2's `:authority` or HTTP/1.1's `Host`.
fn request_host(uri: &http::Uri, headers: &HeaderMap) -> Option<String> {
    let authority = uri.authority().map(|a| a.host().to_string()).or_else(|| {
        let h = headers.get(header::HOST)?.to_str().ok()?;
        let a: http::uri::Authority = h.parse().ok()?;
        Some(a.host().to_string())
    })?;
    Some(
        authority
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
    )
}

/// `POST /_gateway/logout`: ends the Qlik session at QPS, the gateway session, and its websockets.
/// Requires a same-origin `Origin`, so another site cannot log users out.
pub(crate) async fn logout(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let html = wants_html(&headers);
    if let Err(e) = same_origin(&state, &headers, "logout") {
        return e.respond(html);
    }
    match end_session(&state, &headers).await {
        Ok(idp_logout) => logged_out_answer(&state, html, idp_logout),
        Err(e) => e.respond(html),
    }
}

/// The request's `Origin` is the gateway's public origin.
fn same_origin(state: &AppState, headers: &HeaderMap, what: &str) -> Result<(), GatewayError> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if origin.map(|o| o.eq_ignore_ascii_case(&state.cfg.server.public_origin)) == Some(true) {
        return Ok(());
    }
    Err(GatewayError::Forbidden(format!(
        "{what} needs a same-origin request (Origin: {}); got {}",
        state.cfg.server.public_origin,
        origin.unwrap_or("no Origin header")
    )))
}

/// Ends the request's gateway session, its websockets and its Qlik session; the IdP's logout
/// URL when the provider has one (OIDC).
async fn end_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<String>, GatewayError> {
    let Some(id) = state.cookies.read(headers) else {
        return Ok(None);
    };
    let Some(session) = state.store.remove(&id).await? else {
        return Ok(None);
    };
    let idp_logout = state.provider.logout_url(&session);
    // Sockets first: once QPS drops the Qlik session the engine would tell the open pages it
    // was logged out, and their relays would race to re-create it.
    let closed = state
        .sockets
        .close_session(id.storage_key(), CloseReason::Logout);
    state.qlik.end(&session).await;
    state.metrics.logout();
    tracing::info!(
        session = %id.log_tag(),
        user = %format_args!("{}\\{}", session.identity.user_directory, session.identity.user_id),
        websockets_closed = closed,
        audit = true,
        "logout"
    );
    Ok(idp_logout)
}

/// The answer to a logout: the browser to the IdP's logout (OIDC has its own session, and the
/// next login would silently reuse it) or the logged-out page; a program gets JSON. The gateway
/// cookie is cleared either way.
fn logged_out_answer(state: &AppState, html: bool, idp_logout: Option<String>) -> Response {
    let mut resp = if html {
        Redirect::to(idp_logout.as_deref().unwrap_or("/_gateway/logged-out")).into_response()
    } else {
        json_body(
            StatusCode::OK,
            json!({"logged_out": true, "login_url": "/_gateway/login", "end_session_url": idp_logout}),
        )
    };
    with_cleared_cookie(state, &mut resp);
    resp
}

fn with_cleared_cookie(state: &AppState, resp: &mut Response) {
    if let Ok(v) = HeaderValue::from_str(&state.cookies.clear()) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Qlik's own logout under the mount, made the gateway's: `DELETE {mount}/qps/user` (what the hub
/// and the client libraries call) and a navigation to `{mount}/qps/user` (the `logoutUri` Qlik
/// announces, rewritten to the gateway) end the gateway session as `POST /_gateway/logout` does.
/// Left alone otherwise, the next request would quietly make a new Qlik session: a logout that
/// does not log out. `None`: not a logout (a program's `GET` reads the user, from Qlik).
pub(crate) async fn qlik_logout(
    state: &AppState,
    method: &http::Method,
    rest: &str,
    headers: &HeaderMap,
) -> Option<Response> {
    if !rest.eq_ignore_ascii_case("/qps/user") {
        return None;
    }
    if method == http::Method::DELETE {
        if let Err(e) = same_origin(state, headers, "Qlik's logout (DELETE qps/user)") {
            return Some(e.respond(false));
        }
        return Some(match Box::pin(end_session(state, headers)).await {
            Ok(idp) => {
                let mut r = json_body(
                    StatusCode::OK,
                    json!({"session": "inactive", "logged_out": true, "login_url": "/_gateway/login", "end_session_url": idp}),
                );
                with_cleared_cookie(state, &mut r);
                r
            }
            Err(e) => e.respond(false),
        });
    }
    if method != http::Method::GET || !is_navigation(headers) {
        return None;
    }
    if !started_here(state, headers) {
        // A link from another site: logging out on it would let any page end users' sessions.
        // Ask instead; the button is a same-origin POST to the gateway's logout.
        tracing::info!("a cross-site navigation to Qlik's logout; asking the user to confirm");
        return Some(crate::html::page(
            StatusCode::OK,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Log out?</title></head>\
             <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\"><h1>Log out?</h1>\
             <form method=\"post\" action=\"/_gateway/logout\"><button type=\"submit\">Log out</button></form>\
             </body></html>",
        ));
    }
    Some(match Box::pin(end_session(state, headers)).await {
        Ok(idp) => logged_out_answer(state, true, idp),
        Err(e) => e.respond(true),
    })
}

/// A top-level navigation (`Sec-Fetch-Mode: navigate`; a browser without Fetch Metadata: one that
/// asks for HTML), not a program's `fetch`.
fn is_navigation(headers: &HeaderMap) -> bool {
    match headers.get("sec-fetch-mode").and_then(|v| v.to_str().ok()) {
        Some(mode) => mode.eq_ignore_ascii_case("navigate"),
        None => wants_html(headers),
    }
}

/// The navigation came from the gateway's own pages, or was typed in (`Sec-Fetch-Site: none`);
/// without Fetch Metadata, a `Referer` on the public origin says so.
fn started_here(state: &AppState, headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none");
    }
    let origin = &state.cfg.server.public_origin;
    headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| reqwest::Url::parse(r).ok())
        .is_some_and(|r| {
            r.origin()
                .ascii_serialization()
                .eq_ignore_ascii_case(origin)
        })
}

/// `GET /_gateway/logged-out`: where a logout lands a browser (not the login, which would log a
/// Windows user straight back in).
pub(crate) async fn logged_out() -> Response {
    crate::html::page(
        StatusCode::OK,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Logged out</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\"><h1>You are logged out</h1>\
         <p><a href=\"/_gateway/login\">Log in again</a></p></body></html>",
    )
}

/// `GET /_gateway/me`: who the gateway thinks you are, and until when.
pub(crate) async fn me(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match current_session(&state, &headers).await {
        Err(e) => e.respond(false),
        Ok(None) => GatewayError::Unauthenticated {
            login_url: "/_gateway/login".into(),
        }
        .respond(false),
        Ok(Some((_, s))) => {
            let t = Timeouts {
                idle: state.cfg.session.idle_timeout,
                absolute: state.cfg.session.absolute_timeout,
            };
            let secs = |t: std::time::SystemTime| {
                t.duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            };
            let attributes: Vec<_> = s
                .identity
                .attributes
                .iter()
                .map(|(k, v)| json!({ k: v }))
                .collect();
            let mut r = json_body(
                StatusCode::OK,
                json!({
                    "userId": s.identity.user_id,
                    "userDirectory": s.identity.user_directory,
                    "attributes": attributes,
                    "provider": s.provider,
                    "loginAt": secs(s.created_at),
                    "expiresAt": secs(s.expires_at(&t)),
                    "absoluteExpiresAt": secs(s.created_at + t.absolute),
                    "qlikSession": s.qlik.is_some(),
                }),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
    }
}

/// `GET /_gateway/healthz`: the process answers.
pub(crate) async fn healthz() -> Response {
    json_body(StatusCode::OK, json!({"status": "ok"}))
}

/// `GET /_gateway/readyz`: QPS answers with the client certificate, and the session store answers.
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let (qps, store) = tokio::join!(state.qlik.probe(), state.store.ping());
    let qps_s = match &qps {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    let store_s = match &store {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    let idp = state.provider.readiness();
    let idp_s = match &idp {
        Ok(()) => "ok".to_string(),
        Err(e) => e.clone(),
    };
    let ready = qps.is_ok() && store.is_ok() && idp.is_ok();
    if !ready {
        tracing::warn!(qps = %qps_s, store = %store_s, identity_provider = %idp_s, "not ready");
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_body(
        status,
        json!({"ready": ready, "qps": qps_s, "store": store_s, "identity_provider": idp_s}),
    )
}

/// `GET /_gateway/metrics`: every metric as text, OpenMetrics when the scraper asks for it
/// (Prometheus does), else the Prometheus text format 0.0.4. On the admin listener only, when
/// `server.admin_listen` is set.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    // A failure is counted by the store (qlik_gateway_store_errors_total); the gauge keeps its
    // last value rather than dropping to 0, which would read as "everyone logged out".
    match state.store.count().await {
        Ok(n) => state.metrics.set_sessions(n),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count the sessions"),
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let body = state.metrics.encode(openmetrics);
    let ctype = if openmetrics {
        metrics::OPENMETRICS_CONTENT_TYPE
    } else {
        metrics::PROMETHEUS_CONTENT_TYPE
    };
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
