//! The router: `/_gateway/*` → the gateway's endpoints, `{qlik.mount}/*` → Qlik (HTTP or engine
//! websocket), everything else → the mashup. Every path needs a session unless listed public.
//! With `server.admin_listen`, the admin listener has a router of its own ([`admin_router`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Router};
use http::{header, HeaderValue, Method, StatusCode};

use crate::error::GatewayError;
use crate::gateway::endpoints::{self, PeerAddr};
use crate::gateway::{current_session, unauthenticated, wants_html};
use crate::mashup::Mashup;
use crate::metrics::Phase;
use crate::proxy;
use crate::route_class::{is_upgrade, RouteClass};
use crate::state::AppState;

/// Builds the application router (the public listener's). `/_gateway/metrics` is here only when
/// there is no admin listener: usage figures are not for the public origin when they can be
/// served elsewhere.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let mut r = Router::new();
    if let Some(path) = state.provider.callback_path() {
        r = r.route(path, get(endpoints::callback));
    }
    if state.cfg.server.admin_listen.is_none() {
        r = r.route("/_gateway/metrics", get(endpoints::metrics));
    }
    r.route("/_gateway/login", get(endpoints::login))
        .route("/_gateway/logout", any(logout_any))
        .route("/_gateway/logged-out", get(endpoints::logged_out))
        .route("/_gateway/me", get(endpoints::me))
        .route("/_gateway/healthz", get(endpoints::healthz))
        .route("/_gateway/readyz", get(endpoints::readyz))
        .route("/_gateway/{*rest}", any(not_found))
        .fallback(dispatch_fallback)
        // Gateway endpoints take small forms at most; the fallback (proxied requests) is exempt.
        .route_layer(axum::middleware::from_fn({
            let limit = state.cfg.server.max_gateway_body_bytes;
            move |req, next| bounded_gateway_body(limit, req, next)
        }))
        .with_state(state)
}

/// Whether [`router`] has a route of its own for `path`. Everything else goes to [`dispatch`],
/// which the server calls directly: the proxied requests skip the router's matching and its
/// per-request extensions map, the largest part of axum's cost on that path.
///
/// `callback` is the identity provider's callback path (`auth.oidc.redirect_path`), which may lie
/// outside `/_gateway/`.
pub(crate) fn routed(path: &str, callback: Option<&str>) -> bool {
    path.starts_with("/_gateway/") || callback == Some(path)
}

/// The admin listener's router (`server.admin_listen`): metrics and the health checks, nothing
/// else.
pub(crate) fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/_gateway/metrics", get(endpoints::metrics))
        .route("/_gateway/healthz", get(endpoints::healthz))
        .route("/_gateway/readyz", get(endpoints::readyz))
        .fallback(not_found_admin)
        .with_state(state)
}

async fn not_found_admin() -> Response {
    (
        StatusCode::NOT_FOUND,
        "the admin listener serves /_gateway/metrics, /_gateway/healthz and /_gateway/readyz\n",
    )
        .into_response()
}

async fn logout_any(state: State<Arc<AppState>>, req: Request) -> Response {
    if req.method() != Method::POST {
        let mut r = (StatusCode::METHOD_NOT_ALLOWED, "logout needs POST\n").into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    endpoints::logout(state, req.headers().clone()).await
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such gateway endpoint\n").into_response()
}

async fn dispatch_fallback(
    State(state): State<Arc<AppState>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    req: Request<Body>,
) -> Response {
    dispatch(state, peer, None, req).await
}

/// Everything outside `/_gateway/`: Qlik under the mount (HTTP or engine websocket), else the
/// mashup; a session is needed unless the path is public.
///
/// `class` is the request's class when the caller has it (the server, for its metrics label);
/// an argument rather than a request extension, whose map would be allocated per request.
pub(crate) async fn dispatch(
    state: Arc<AppState>,
    peer: SocketAddr,
    class: Option<RouteClass>,
    req: Request<Body>,
) -> Response {
    let path = req.uri().path();
    let html = wants_html(req.headers());
    let class = class.unwrap_or_else(|| RouteClass::of(path, &state.cfg.qlik.mount, req.headers()));
    // The mashup's dev server takes upgrades too (hot module replacement).
    let websocket = class == RouteClass::Websocket || is_upgrade(req.headers());

    if matches!(class, RouteClass::Qlik | RouteClass::Websocket) {
        let rest = &path[state.cfg.qlik.mount.len()..];
        if let Err(r) = crate::request_target::confine(rest, "the virtual proxy") {
            return GatewayError::from(r).respond(html);
        }
        if let Some(r) = endpoints::qlik_logout(&state, req.method(), rest, req.headers()).await {
            return r;
        }
        if websocket {
            // Origin first: a foreign page learns nothing, not even whether the user is logged in.
            if let Err(e) = proxy::websocket::origin_allowed(&state, req.headers()) {
                return e.respond(false);
            }
        }
        let looked_up = Instant::now();
        let session = match current_session(&state, req.headers()).await {
            Ok(s) => s,
            Err(e) => return e.respond(html),
        };
        // The end of this phase is where the Qlik session's begins (one reading of the clock).
        let session_at = Instant::now();
        state
            .metrics
            .phase(Phase::Session, session_at.duration_since(looked_up));
        let Some((sid, gw)) = session else {
            return unauthenticated(req.uri(), req.headers(), websocket);
        };
        let result = if websocket {
            // Boxed: the relay's setup future is large, and unboxed it would be moved along
            // with every plain HTTP request's future.
            // Bound first: a temporary in the awaited statement would keep its room in this
            // future's state, boxed or not.
            let relay = Box::pin(proxy::websocket::engine(state.clone(), req, peer, sid, gw));
            relay.await
        } else {
            proxy::http::to_qlik(&state, req, peer, &sid, &gw, session_at).await
        };
        return result.unwrap_or_else(|e| e.respond(html));
    }

    let public = state.cfg.mashup.public_paths.iter().any(|p| {
        if p.ends_with('/') {
            path.starts_with(p.as_str())
        } else {
            path == p
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        }
    });
    if !public {
        match current_session(&state, req.headers()).await {
            Ok(Some(_)) => {}
            Ok(None) => return unauthenticated(req.uri(), req.headers(), websocket),
            Err(e) => return e.respond(html),
        }
    }
    match &state.mashup {
        Mashup::Dir(files) => {
            let (parts, _) = req.into_parts();
            files.serve(&parts).await
        }
        Mashup::Upstream(dev) => {
            if let Err(r) = crate::request_target::confine(path, "the dev server's root") {
                return GatewayError::from(r).respond(html);
            }
            let r = if websocket {
                let tunnel = Box::pin(proxy::tunnel::upgrade(state.clone(), dev, req, peer));
                tunnel.await
            } else {
                proxy::http::to_mashup_upstream(&state, dev, req, peer).await
            };
            r.unwrap_or_else(|e| e.respond(html))
        }
        Mashup::Builtin => {
            if path == "/" || path == "/index.html" {
                crate::mashup::builtin::page(&state.cfg.qlik.mount)
            } else {
                (StatusCode::NOT_FOUND, "not found\n").into_response()
            }
        }
    }
}

/// Middleware for the gateway's own endpoints (`/_gateway/`, the login callback): a body above
/// `limit` bytes is refused with 413, by its Content-Length at once or while it is read; a
/// smaller one is read up front, so a handler never waits on a client's upload.
pub(crate) async fn bounded_gateway_body(
    limit: usize,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    let too_large = |path: &str| {
        crate::error::GatewayError::from(crate::limits::LimitError::GatewayBody {
            path: path.to_owned(),
            limit,
        })
        .into_response()
    };
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    if req.body().size_hint().lower() > limit as u64 {
        return too_large(req.uri().path());
    }
    let (parts, body) = req.into_parts();
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => {
            let req = http::Request::from_parts(parts, axum::body::Body::from(c.to_bytes()));
            next.run(req).await
        }
        Err(e) if e.is::<http_body_util::LengthLimitError>() => too_large(parts.uri.path()),
        Err(e) => crate::error::GatewayError::BadRequest(format!(
            "The request body could not be read: {e}"
        ))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::routed;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, D, R>(_: &impl Fn(A, B, C, D) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn a_proxied_request_future_stays_small() {
        // Every proxied request moves this future (hyper's oneshot stores it); it was 14.4 KiB
        // with the Qlik session creation and the QPS calls inline, 3.9 KiB with them boxed. An
        // unboxed cold path added to the request path shows here.
        let size = future_size(&super::dispatch);
        assert!(
            size <= 6 * 1024,
            "routes::dispatch's future is {size} bytes"
        );
    }

    #[test]
    fn the_router_gets_gateway_endpoints_and_the_login_callback_only() {
        for (path, callback) in [
            ("/_gateway/login", None),
            ("/_gateway/nope", None),
            ("/_gateway/callback", Some("/_gateway/callback")),
            ("/signin-oidc", Some("/signin-oidc")),
        ] {
            assert!(routed(path, callback), "{path}");
        }
        for (path, callback) in [
            ("/_gateway", None),
            ("/_gatewayx/login", None),
            ("/mashup/hub/", None),
            ("/", Some("/signin-oidc")),
            ("/signin-oidc/x", Some("/signin-oidc")),
        ] {
            assert!(!routed(path, callback), "{path}");
        }
    }
}
