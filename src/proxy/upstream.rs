//! The pooled HTTP client the gateway uses towards the Qlik proxy and a mashup dev server.

use std::time::Duration;

use axum::body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::tls;

/// Keep-alive HTTP/1.1 client over TLS or plain TCP.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// Builds a client trusting `roots`, with `connect_timeout` on TCP connect.
pub fn client(
    roots: rustls::RootCertStore,
    connect_timeout: Duration,
) -> Result<UpstreamClient, tls::TlsFileError> {
    // Qlik's proxy speaks HTTP/1.1 for websockets; h1 only keeps one code path for upgrades.
    let tls = tls::client_config(roots, None, &[])?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(50))
        .pool_max_idle_per_host(256)
        .build(connector))
}
