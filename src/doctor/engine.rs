//! The engine websocket through the proxy: the CSRF token fetched as the gateway fetches it, and
//! the upgrade the gateway would make (its `Host`, `Origin` and credentials), with what a refusal
//! means in the QMC (the host allow list, most often).

use std::time::Duration;

use futures_util::StreamExt;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite;

use super::node::{vp_qmc, Probe};
use super::report::{Check, Report};
use crate::config::QlikMode;
use crate::identity::Identity;
use crate::net::error_chain::root_cause;
use crate::net::upstream::UpstreamError;
use crate::net::ws_client::{self, HandshakeError};
use crate::qlik::proxy_api;

/// How long the opened socket is watched for Qlik's first frame, and for its close.
const SETTLE: Duration = Duration::from_secs(2);

/// Opens the engine websocket as the gateway would, with the probe session's `cookie` (or, in
/// header mode, the user header).
pub(super) async fn websocket(
    p: &Probe<'_>,
    identity: &Identity,
    cookie: Option<&str>,
    r: &mut Report,
) {
    let q = p.q;
    if q.engine_url.is_some() {
        r.push(Check::ok(
            "engine websockets go to qlik.engine_url directly: the proxy's websocket checks do not apply",
        ));
        return;
    }
    let prefix = q.upstream_prefix();
    let cookie_header = cookie
        .map(|v| format!("{}={v}", q.session_cookie))
        .and_then(|c| HeaderValue::from_str(&c).ok());
    let token = match &cookie_header {
        Some(c) => match csrf_token(p, c, r).await {
            Ok(t) => t,
            Err(()) => return,
        },
        None => None,
    };
    let mut target = format!("{prefix}/app/engineData");
    if let Some(t) = &token {
        let enc = percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC);
        target = format!("{target}?qlik-csrf-token={enc}");
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, p.node.host.clone());
    headers.insert(header::ORIGIN, p.node.origin.clone());
    if let Some(c) = cookie_header {
        headers.insert(header::COOKIE, c);
    }
    if let QlikMode::Header(h) = &q.mode {
        if let Some(v) = h.value(&identity.user_directory, &identity.user_id) {
            headers.insert(h.name.clone(), v);
        }
    }
    let what = format!(
        "engine websocket upgrade at {}{prefix}/app/engineData",
        p.node.proxy_url.as_str().trim_end_matches('/'),
    );
    let c = match dial(p, &target, headers).await {
        Ok(ws) => opened(p, &what, ws).await,
        Err(Refused::Status(403, body)) => forbidden(p, &what, &body),
        Err(Refused::Status(s, body)) => Check::fail(
            format!("{what} refused (HTTP {s}: {})", body.trim()),
            "the proxy did not upgrade the connection",
        )
        .qmc(format!("{} → check that websockets reach the engine (Proxies → this node → Load balancing nodes)", vp_qmc(q))),
        Err(Refused::Other(e)) => Check::fail(format!("{what} failed"), e)
            .gw("check qlik.proxy_url and that nothing in between blocks websockets"),
    };
    r.push(c);
}

/// `/qps/csrftoken` with the session cookie: the token (`None` from Qlik before November 2024);
/// `Err` when the check cannot go on (reported).
async fn csrf_token(
    p: &Probe<'_>,
    cookie: &HeaderValue,
    r: &mut Report,
) -> Result<Option<String>, ()> {
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, cookie.clone());
    let resp = match proxy_api::get(p.upstream, p.node, p.q, "/qps/csrftoken", &[], headers).await {
        Ok(resp) => resp,
        Err(e) => {
            r.push(Check::fail(
                "fetching the websocket CSRF token",
                root_cause(&e),
            ));
            return Err(());
        }
    };
    r.saw_date("the Qlik proxy", resp.headers());
    let status = resp.status();
    if let Some(t) = resp
        .headers()
        .get("qlik-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        r.push(Check::ok(
            "the proxy issued a websocket CSRF token (/qps/csrftoken)",
        ));
        return Ok(Some(t.to_string()));
    }
    if status.is_redirection() || status == StatusCode::UNAUTHORIZED {
        r.push(
            Check::fail(
                format!("/qps/csrftoken answered HTTP {status} for the probe session"),
                "the proxy does not recognise the session when asked for the websocket CSRF token",
            )
            .qmc(format!("{} → Session cookie header name", vp_qmc(p.q))),
        );
        return Err(());
    }
    r.push(Check::ok(format!(
        "no websocket CSRF token (/qps/csrftoken: HTTP {status}; Qlik before November 2024)"
    )));
    Ok(None)
}

/// The socket opened: whether Qlik says at once (or after its first frame) that it does not know
/// the session on it.
async fn opened<S>(
    p: &Probe<'_>,
    what: &str,
    mut ws: tokio_tungstenite::WebSocketStream<S>,
) -> Check
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut must_auth = false;
    if let Ok(Some(Ok(tungstenite::Message::Text(t)))) =
        tokio::time::timeout(SETTLE, ws.next()).await
    {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(t.as_str()) {
            must_auth = v["method"] == "OnAuthenticationInformation"
                && v["params"]["mustAuthenticate"] == true;
        }
    }
    let _ = ws.close(None).await;
    let _ =
        tokio::time::timeout(SETTLE, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    if must_auth {
        Check::fail(
            format!("{what}: Qlik says mustAuthenticate"),
            "the websocket was opened but the proxy did not recognise the session on it",
        )
        .qmc(format!("{} → Session cookie header name", vp_qmc(p.q)))
    } else {
        Check::ok(format!("{what} accepted (101)"))
    }
}

/// A 403 on the upgrade: the websocket CSRF token refused, or (most often) the `Origin` host not
/// in the virtual proxy's host allow list.
fn forbidden(p: &Probe<'_>, what: &str, body: &str) -> Check {
    let q = p.q;
    let host = p.node.proxy_url.host_str().unwrap_or_default().to_string();
    let lower = body.to_ascii_lowercase();
    let csrf = lower.contains("hijacking") || lower.contains("csrf");
    let origin = lower.contains("origin") || lower.contains("host");
    let c = if csrf && !origin {
        Check::fail(
            format!("{what} refused (403: {})", body.trim()),
            "the proxy refused the websocket CSRF token (qlik-csrf-token): a proxy in between strips the query string, or /qps/csrftoken is served by another node than the websocket",
        )
        .qmc(format!("{} → Load balancing: the gateway must reach the node that issued the token", vp_qmc(q)))
    } else {
        Check::fail(
            format!("{what} refused (403{})", if body.trim().is_empty() { String::new() } else { format!(": {}", body.trim()) }),
            format!("Origin {} is not in the virtual proxy's host allow list (Qlik compares the Origin host with the allow list and its own node name){}", p.node.base, if origin { "" } else { ", or the websocket CSRF token was refused" }),
        )
        .qmc(format!("{} → Advanced → Host allow list: add {host} (the host the gateway uses in qlik.proxy_url)", vp_qmc(q)))
    };
    c.gw("qlik.proxy_url should name the Qlik node as Qlik knows it (its host name), or that name be in the host allow list")
}

/// Why the upgrade gave no websocket: the proxy's answer (status, start of its body), or what
/// failed before one.
enum Refused {
    Status(u16, String),
    Other(String),
}

/// A connection of the gateway's upstream client to the node's proxy, and the upgrade on it.
async fn dial(
    p: &Probe<'_>,
    target: &str,
    headers: HeaderMap,
) -> Result<tokio_tungstenite::WebSocketStream<std::pin::Pin<Box<dyn crate::net::Io>>>, Refused> {
    let url = &p.node.proxy_url;
    let tls = url.scheme() == "https";
    let at = format!(
        "{}:{}",
        url.host_str().unwrap_or("localhost"),
        url.port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 })
    );
    let io = p.upstream.connect(&p.node.upstream).await.map_err(|e| {
        Refused::Other(match e {
            UpstreamError::ConnectTimeout { .. } => format!("connect to {at} timed out"),
            UpstreamError::Connect { source, .. } => format!("connect to {at}: {source}"),
            UpstreamError::TlsTimeout { .. } => "TLS handshake timed out".into(),
            UpstreamError::Tls { source, .. } => format!("TLS: {source}"),
            e => e.to_string(),
        })
    })?;
    let host = p.node.host.to_str().unwrap_or_default();
    let uri = format!("{}://{host}{target}", if tls { "wss" } else { "ws" });
    ws_client::handshake(io, &uri, headers, None, p.q.response_timeout)
        .await
        .map_err(|e| match e {
            HandshakeError::Refused { status, body } => Refused::Status(status, body),
            e => Refused::Other(e.to_string()),
        })
}
