//! Listener plumbing: TLS server configs and an accept loop serving an axum router over
//! HTTP/1.1 (with upgrades, for websockets), stopped by a shutdown signal.

use crate::pki::Pki;
use crate::SimError;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS for the proxy listener: the server certificate, no client certificate.
pub(crate) fn proxy_tls(pki: &Pki) -> Result<TlsAcceptor, SimError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// TLS for the QPS API and direct engine listeners: mutual TLS, client certificates must
/// chain to the sim's CA.
pub(crate) fn mutual_tls(pki: &Pki) -> Result<TlsAcceptor, SimError> {
    let mut roots = RootCertStore::empty();
    for ca in &pki.ca_der {
        roots.add(ca.clone())?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| SimError::Tls(format!("client verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections on `listener` until `shutdown` flips; then every connection is dropped.
pub(crate) fn spawn(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(listener = name, "accept failed: {e}");
                            continue;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let tls = tls.clone();
                    let router = router.clone();
                    conns.spawn(async move {
                        match tls {
                            Some(acceptor) => {
                                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                    Ok(Ok(stream)) => serve_conn(name, stream, router).await,
                                    Ok(Err(e)) => tracing::info!(listener = name, %peer, "TLS handshake failed: {e}"),
                                    Err(_) => tracing::info!(listener = name, %peer, "TLS handshake timed out"),
                                }
                            }
                            None => serve_conn(name, tcp, router).await,
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = shutdown.changed() => break,
            }
        }
        conns.shutdown().await;
    })
}

async fn serve_conn<S>(name: &'static str, stream: S, router: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(e) = result {
        tracing::debug!(listener = name, "connection ended: {e}");
    }
}
