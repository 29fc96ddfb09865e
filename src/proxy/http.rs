//! HTTP requests to the Qlik proxy under `qlik.mount`, and to a mashup dev server: bodies streamed
//! both ways, headers cleaned, the user's Qlik session injected and Qlik's cookies kept server-side.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode, Uri};

use crate::error::GatewayError;
use crate::headers;
use crate::mashup::DevServer;
use crate::metrics::Phase;
use crate::net::retry::Retryable;
use crate::net::upstream::{Origin, PooledBody};
use crate::qlik::cookies::{qlik_session_set_cookie, QlikSetCookie};
use crate::qlik_sessions::CsrfError;
use crate::session::{GatewaySession, QlikSession, SessionId};
use crate::state::AppState;

/// Maps a gateway path under the mount to the path on the Qlik proxy (`/mashup/x` → `/{vp}/x`),
/// without the query parameters in `drop` (see [`crate::request_target::strip_params`]).
pub(crate) fn upstream_path_and_query(state: &AppState, uri: &Uri, drop: &[&str]) -> String {
    let path = uri.path();
    let rest = path
        .strip_prefix(state.cfg.qlik.mount.as_str())
        .unwrap_or(path);
    let prefix = state.upstream_prefix.as_str();
    let rest = if rest.is_empty() && prefix.is_empty() {
        "/"
    } else {
        rest
    };
    let query = uri
        .query()
        .map(|q| crate::request_target::strip_params(q, drop));
    let query = query.as_deref().filter(|q| !q.is_empty());
    let mut out =
        String::with_capacity(prefix.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
    out.push_str(prefix);
    out.push_str(rest);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Forwards one request to the Qlik proxy as the user of the gateway session `sid` (`gw`), read
/// from the store at `session_at`, where the Qlik-session phase of its timing begins.
///
/// Long (about 140 lines) on purpose: it is the per-request hot path, and its attempts (a
/// bodyless request moves once to another node when its node does not answer) share the head
/// prepared once; split, each try would rebuild or move it.
pub(crate) async fn to_qlik(
    state: &AppState,
    req: Request<Body>,
    peer: SocketAddr,
    sid: &SessionId,
    gw: &GatewaySession,
    session_at: Instant,
) -> Result<Response, GatewayError> {
    let mut qlik = state.qlik.ensure(sid, gw).await?;
    state
        .metrics
        .phase(Phase::QlikSession, session_at.elapsed());
    let (parts, body) = req.into_parts();
    let http::request::Parts {
        method,
        uri,
        headers: mut base_headers,
        ..
    } = parts;
    let bodyless = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS)
        && !base_headers.contains_key(header::TRANSFER_ENCODING)
        && base_headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0");
    let path_q = upstream_path_and_query(state, &uri, crate::request_target::TICKET_PARAMS);
    let uri = http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(path_q))
        .map(Uri::from)
        .map_err(|e| GatewayError::BadRequest(format!("cannot forward this request: {e}")))?;
    headers::remove_hop_by_hop(&mut base_headers);
    headers::remove_identity_headers(&mut base_headers, &state.strip_headers);
    let client_csrf = base_headers.remove(&headers::CSRF_HEADER).is_some();

    let personal = method == Method::GET && is_personal_api(state, uri.path());
    let mut body = Some(body);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(node) = state.qlik.node_of(&qlik) else {
            // The configuration no longer lists the session's node.
            qlik = Cow::Owned(state.qlik.recreate(sid, &qlik).await?);
            continue;
        };
        // Only a bodyless request is ever sent twice: only its headers are kept for that.
        let mut h = if bodyless {
            headers::clone_with_room(&base_headers, headers::ADDED_UPSTREAM)
        } else {
            std::mem::take(&mut base_headers)
        };
        if client_csrf {
            // Boxed: a QPS call's future, which the requests without a token need no room for.
            Box::pin(own_csrf_header(state, sid, &mut qlik, &mut h)).await?;
        }
        headers::set_forwarding(
            &mut h,
            peer.ip(),
            state.public_proto,
            &state.public_host,
            &node.host,
        );
        state
            .qlik
            .add_credentials(&mut h, &state.cookies.name, &gw.identity, &qlik);
        let b = body.take().unwrap_or_else(Body::empty);
        let sent = send(
            state,
            &node.upstream,
            &method,
            uri.clone(),
            h,
            b,
            state.cfg.qlik.response_timeout,
            "qlik",
        )
        .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_node_failure() => {
                // The node's proxy did not answer: take it out and move the user to another node
                // with a new Qlik session (their old one lived in the failed node's proxy).
                let others_up = state.qlik.nodes().failed(&node, &e);
                if !(bodyless && attempt == 1 && others_up) {
                    return Err(e);
                }
                tracing::info!(session = %sid.log_tag(), node = %node.key, "moving the user's Qlik session to another node");
                qlik = Cow::Owned(state.qlik.recreate(sid, &qlik).await?);
                continue;
            }
            Err(e) => return Err(e),
        };
        if is_auth_redirect(&resp) {
            // Qlik no longer knows the session (timed out, QPS restarted): make a new one.
            tracing::info!(session = %sid.log_tag(), "Qlik answered with its login redirect; re-creating the Qlik session");
            qlik = Cow::Owned(state.qlik.recreate(sid, &qlik).await?);
            if bodyless && attempt == 1 {
                continue;
            }
            if attempt > 1 {
                return Err(GatewayError::Upstream {
                    upstream: "qlik",
                    detail: format!(
                        "Qlik does not accept the session the gateway created for it; check that qlik.session_cookie ({}) is the virtual proxy's session cookie header name and qlik.virtual_proxy ({:?}) its prefix",
                        state.cfg.qlik.session_cookie, state.cfg.qlik.virtual_proxy
                    ),
                });
            }
            // The request body was streamed to Qlik and is gone; the client must repeat it.
            let mut r = crate::error::json_body(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "qlik_session_renewed", "message": "Your Qlik session was renewed; please repeat the request."}),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
            return Ok(r);
        }
        if personal {
            // Boxed: a body read the other requests need no room for.
            let read = Box::pin(read_personal(resp));
            match read.await {
                Personal::Inactive if attempt == 1 => {
                    // Qlik no longer knows the session (it answers 200 with "inactive" here,
                    // not its login redirect): the user is still logged in at the gateway.
                    tracing::info!(session = %sid.log_tag(), "Qlik said the Qlik session is inactive; re-creating it");
                    qlik = Cow::Owned(state.qlik.recreate(sid, &qlik).await?);
                    continue;
                }
                Personal::Inactive => {
                    return Err(GatewayError::Upstream {
                        upstream: "qlik",
                        detail: "Qlik calls the Qlik session the gateway just created inactive"
                            .into(),
                    })
                }
                Personal::Json(mut parts, mut v) => {
                    crate::proxy::public_urls::rewrite_json(state, &mut v);
                    let bytes = bytes::Bytes::from(v.to_string());
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                    let resp = http::Response::from_parts(parts, http_body_util::Full::new(bytes));
                    return Ok(from_qlik(state, sid, &qlik, resp).await);
                }
                Personal::AsIs(resp) => return Ok(from_qlik(state, sid, &qlik, resp).await),
            }
        }
        return Ok(from_qlik(state, sid, &qlik, resp).await);
    }
}

/// `{prefix}/qps/user`: Qlik's "personal" API, whose JSON names Qlik's own URLs (`logoutUri`).
/// http.sys compares paths without case.
fn is_personal_api(state: &AppState, upstream_path: &str) -> bool {
    upstream_path
        .strip_prefix(state.upstream_prefix.as_str())
        .is_some_and(|rest| rest.eq_ignore_ascii_case("/qps/user"))
}

/// The largest `/qps/user` answer that is read to rewrite its URLs (Qlik's is a few hundred bytes).
const PERSONAL_MAX: usize = 64 * 1024;

/// What Qlik answered on `GET {prefix}/qps/user`.
enum Personal {
    /// `{"session": "inactive", …}`: Qlik does not know the session.
    Inactive,
    /// A JSON answer, read.
    Json(http::response::Parts, serde_json::Value),
    /// Anything else (not JSON, too large, an error status), passed on as it came.
    AsIs(http::Response<http_body_util::Either<http_body_util::Full<bytes::Bytes>, PooledBody>>),
}

async fn read_personal(resp: http::Response<PooledBody>) -> Personal {
    use http_body_util::{BodyExt, Either, Full};
    let small = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= PERSONAL_MAX);
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    if !(resp.status().is_success() && small && json) {
        return Personal::AsIs(resp.map(Either::Right));
    }
    let (parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        // Qlik broke off its answer: the client gets an empty one and the failure is logged.
        Err(e) => {
            tracing::warn!(error = %e, "reading Qlik's /qps/user answer failed");
            bytes::Bytes::new()
        }
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) if v.get("session").and_then(|s| s.as_str()) == Some("inactive") => {
            Personal::Inactive
        }
        Ok(v) => Personal::Json(parts, v),
        Err(_) => Personal::AsIs(http::Response::from_parts(
            parts,
            Either::Left(Full::new(bytes)),
        )),
    }
}

/// Sets the `qlik-csrf-token` header for the Qlik session the gateway injects, in place of the
/// client's: the client's token belongs to a session it never had, or one the gateway has since
/// replaced. A session Qlik no longer knows is re-created first.
async fn own_csrf_header(
    state: &AppState,
    sid: &SessionId,
    qlik: &mut Cow<'_, QlikSession>,
    h: &mut HeaderMap,
) -> Result<(), GatewayError> {
    for attempt in 0..2 {
        match state.qlik.csrf_token(sid, qlik).await {
            Ok(token) => {
                if let Some(v) = token.and_then(|t| HeaderValue::from_str(&t).ok()) {
                    h.insert(headers::CSRF_HEADER, v);
                }
                return Ok(());
            }
            Err(CsrfError::SessionRejected) if attempt == 0 => {
                *qlik = Cow::Owned(state.qlik.recreate(sid, qlik).await?);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A 3xx to Qlik's authentication module: an internal one (`…/internal_windows_authentication/`
/// or `…/internal_forms_authentication/`, with `targetId`), or an external module
/// (`authenticationModuleRedirectUri`, which Qlik always gives both `proxyRestUri` and `targetId`).
/// An ordinary redirect that merely carries a `targetId` somewhere is not one.
fn is_auth_redirect<B>(resp: &http::Response<B>) -> bool {
    if !resp.status().is_redirection() {
        return false;
    }
    resp.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_auth_module_location)
}

fn is_auth_module_location(location: &str) -> bool {
    let base = reqwest::Url::parse("http://qlik.invalid/").ok();
    let Ok(url) = reqwest::Url::options()
        .base_url(base.as_ref())
        .parse(location)
    else {
        return false;
    };
    let has = |name: &str| url.query_pairs().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let path = url.path().to_ascii_lowercase();
    let internal = path.contains("/internal_windows_authentication")
        || path.contains("/internal_forms_authentication");
    (internal && has("targetid")) || (has("targetid") && has("proxyresturi"))
}

/// Cleans Qlik's response: hop-by-hop headers removed, the Qlik session cookie captured (header
/// mode) and never passed on, Qlik's other cookies scoped to the mount, `Cache-Control: private`
/// where Qlik set none, `Location` rewritten to the gateway.
async fn from_qlik<B>(
    state: &AppState,
    sid: &SessionId,
    qlik: &QlikSession,
    resp: http::Response<B>,
) -> Response
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let (mut parts, body) = resp.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    let set_cookies: Vec<HeaderValue> = parts
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    if !set_cookies.is_empty() {
        parts.headers.remove(header::SET_COOKIE);
        for sc in set_cookies {
            let Ok(s) = sc.to_str() else { continue };
            match qlik_session_set_cookie(s, &state.cfg.qlik.session_cookie) {
                QlikSetCookie::Ours(value) if !value.is_empty() && value != qlik.cookie_value => {
                    if state.qlik.adopts_response_cookies() {
                        if let Err(e) = state.qlik.adopt_cookie(sid, qlik, value).await {
                            tracing::warn!(error = %e, "could not store the Qlik session cookie Qlik set");
                        }
                    } else {
                        // The gateway made this session's Qlik session itself; a new one set on a
                        // proxied response was made by something else the request carried, and
                        // adopting it would put another user behind this session.
                        tracing::warn!(session = %sid.log_tag(), cookie = %state.cfg.qlik.session_cookie, "dropped a Qlik session cookie that Qlik set on a proxied response: the gateway only uses Qlik sessions it created itself");
                    }
                }
                QlikSetCookie::Ours(_) => {}
                QlikSetCookie::Other(name) => {
                    // Another virtual proxy's (or the `-HTTP` variant's) session: never the
                    // browser's business, and adopting it would swap the user's Qlik session.
                    tracing::debug!(cookie = name, configured = %state.cfg.qlik.session_cookie, "dropped a Qlik session cookie of another name");
                }
                QlikSetCookie::NotQlik => match headers::scope_set_cookie(
                    s,
                    &state.cookies.name,
                    &state.upstream_prefix,
                    &state.cfg.qlik.mount,
                ) {
                    Ok(scoped) => {
                        if let Ok(v) = HeaderValue::from_str(&scoped) {
                            parts.headers.append(header::SET_COOKIE, v);
                        }
                    }
                    Err(why) => {
                        let name = s.split(['=', ';']).next().unwrap_or("").trim();
                        tracing::warn!(
                            cookie = name,
                            "dropped a cookie Qlik set: {}",
                            why.reason()
                        );
                    }
                },
            }
        }
    }
    // Qlik answered as this session's user: no shared cache may keep that for someone else,
    // unless Qlik itself says how to cache it.
    if !parts.headers.contains_key(header::CACHE_CONTROL) {
        parts
            .headers
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
    rewrite_location_header(state, &mut parts.headers);
    crate::proxy::public_urls::rewrite_headers(state, &mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}

fn rewrite_location_header(state: &AppState, h: &mut HeaderMap) {
    let Some(loc) = h.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    // Any node's origin: a node may send the browser to another (or to itself by another name).
    let rewritten = state.qlik.nodes().all().iter().find_map(|n| {
        headers::rewrite_location(
            loc,
            &n.base,
            &state.upstream_prefix,
            &state.cfg.server.public_origin,
            &state.cfg.qlik.mount,
        )
    });
    if let Some(new) = rewritten {
        if let Ok(v) = HeaderValue::from_str(&new) {
            h.insert(header::LOCATION, v);
        }
    }
}

/// Sends one request (`uri`: path and query) to `origin` on the gateway's upstream client with
/// a response-header timeout, timing its wait for a connection and the upstream's answer
/// ([`Phase`]), and mapping failures to gateway errors. Returns once the head and the first
/// piece of a body of announced length are in (or at the timeout), so that they are passed on in
/// one write ([`PooledBody::read_first_frame`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn send(
    state: &AppState,
    origin: &Origin,
    method: &Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
    timeout: Duration,
    upstream: &'static str,
) -> Result<http::Response<PooledBody>, GatewayError> {
    let mut req = Request::new(body);
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    // One reading of the clock for the deadline and the timing (tokio's `timeout` reads its own).
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start) + timeout;
    let sent =
        tokio::time::timeout_at(deadline, state.upstream.send_timed(origin, req, start)).await;
    let sent = sent.map(|(r, timing)| {
        if r.is_ok() {
            let m = &state.metrics;
            m.phase(Phase::UpstreamConnection, timing.waited);
            m.phase(Phase::UpstreamResponse, timing.answered);
        }
        r
    });
    match sent {
        Err(_) => Err(GatewayError::UpstreamTimeout {
            upstream,
            after: timeout,
        }),
        Ok(Err(crate::net::upstream::UpstreamError::HeadTooLarge { origin, limit })) => {
            Err(crate::limits::LimitError::UpstreamHeaders { origin, limit }.into())
        }
        Ok(Err(e)) => Err(GatewayError::Upstream {
            upstream,
            detail: crate::net::error_chain::root_cause(&e),
        }),
        Ok(Ok(mut r)) => {
            r.body_mut().read_first_frame(deadline).await;
            Ok(r)
        }
    }
}

/// Where a request for `uri` goes on the dev server, and the headers to send it: the client's,
/// without hop-by-hop headers, identity headers or the gateway's cookie, with forwarding headers
/// and its own Host.
pub(super) fn to_mashup_parts(
    state: &AppState,
    dev: &DevServer,
    uri: &Uri,
    mut h: HeaderMap,
    peer: SocketAddr,
) -> (Uri, HeaderMap) {
    let path = uri
        .path_and_query()
        .cloned()
        .map_or_else(|| Uri::from_static("/"), Uri::from);
    headers::remove_hop_by_hop(&mut h);
    headers::remove_identity_headers(&mut h, &state.strip_headers);
    headers::rewrite_cookies(&mut h, &state.cookies.name, None);
    headers::set_forwarding(
        &mut h,
        peer.ip(),
        state.public_proto,
        &state.public_host,
        &dev.host,
    );
    (path, h)
}

/// Forwards a request to the mashup dev server (no Qlik credentials involved).
pub(crate) async fn to_mashup_upstream(
    state: &AppState,
    dev: &DevServer,
    req: Request<Body>,
    peer: SocketAddr,
) -> Result<Response, GatewayError> {
    let (parts, body) = req.into_parts();
    let (uri, h) = to_mashup_parts(state, dev, &parts.uri, parts.headers, peer);
    let resp = send(
        state,
        &dev.upstream,
        &parts.method,
        uri,
        h,
        body,
        state.cfg.qlik.response_timeout,
        "mashup",
    )
    .await?;
    let (mut rp, rb) = resp.into_parts();
    headers::remove_hop_by_hop(&mut rp.headers);
    Ok(Response::from_parts(rp, Body::new(rb)))
}

#[cfg(test)]
mod tests {
    use super::is_auth_module_location;

    #[test]
    fn only_qlik_auth_module_redirects_count() {
        for loc in [
            "https://qlik:443/mashup/internal_windows_authentication/?targetId=3f2a",
            "/mashup/internal_forms_authentication/?targetid=3f2a",
            "https://idp.example.com/login?proxyRestUri=https%3A%2F%2Fqlik%3A4243%2Fqps%2Fmashup%2F&targetId=3f2a",
        ] {
            assert!(is_auth_module_location(loc), "{loc}");
        }
        for loc in [
            "/mashup/hub/?targetId=3f2a",
            "https://qlik/mashup/sense/app/x?note=targetid=1",
            "/mashup/internal_windows_authentication/",
            "/mashup/hub/",
        ] {
            assert!(!is_auth_module_location(loc), "{loc}");
        }
    }
}
