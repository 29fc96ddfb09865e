//! The calls the gateway makes on the Qlik proxy itself, under the virtual proxy's prefix:
//! `/qps/user` (the Personal API, where a ticket is redeemed) and `/qps/csrftoken`. Sent over the
//! gateway's pooled client; the callers read the answers (each session's Qlik session in
//! `qlik_sessions`, the checks of `doctor`).

use axum::body::Body;
use http::{header, HeaderMap, HeaderValue, Request, Response};

use super::config::QlikConfig;
use super::nodes::Node;
use qlik_gateway_net::upstream::{PooledBody, UpstreamClient, UpstreamError};

/// A call on the Qlik proxy that got no response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyCallError {
    /// The request could not be built (a header value Qlik's proxy would reject).
    #[error("{0}")]
    Request(String),
    /// No response head within `qlik.qps_timeout`.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The connection to the proxy failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// `GET {prefix}{path}?{query}` at `node`'s proxy with `headers` (after its `Host`), its response
/// head within `qlik.qps_timeout`; the body is the caller's to read or drop.
pub async fn get(
    upstream: &UpstreamClient,
    node: &Node,
    cfg: &QlikConfig,
    path: &str,
    query: &[(&str, &str)],
    headers: HeaderMap,
) -> Result<Response<PooledBody>, ProxyCallError> {
    let mut url = node.proxy_url.clone();
    url.set_path(&format!("{}{path}", cfg.upstream_prefix()));
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    let mut req = Request::get(url.as_str())
        .header(header::HOST, node.host.clone())
        .body(Body::empty())
        .map_err(|e| ProxyCallError::Request(e.to_string()))?;
    req.headers_mut().extend(headers);
    tokio::time::timeout(cfg.qps_timeout, upstream.request(req))
        .await
        .map_err(|_| ProxyCallError::Timeout(cfg.qps_timeout))?
        .map_err(ProxyCallError::from)
}

/// `GET /{vp}/qps/user?qlikTicket=…`: redeems a QPS ticket at `node`'s virtual proxy (the
/// Personal API: small, no side effects). The session cookie is in the response's `Set-Cookie`
/// ([`super::cookies::set_session_cookies`]).
pub async fn redeem_ticket(
    upstream: &UpstreamClient,
    node: &Node,
    cfg: &QlikConfig,
    ticket: &str,
) -> Result<Response<PooledBody>, ProxyCallError> {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    get(
        upstream,
        node,
        cfg,
        "/qps/user",
        &[("qlikTicket", ticket)],
        headers,
    )
    .await
}
