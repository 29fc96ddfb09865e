//! The HTTPS certificate is replaced on disk (a renewal) and the gateway serves the new one to new
//! connections without a restart, while connections already open keep working; a broken
//! replacement never takes the listener down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn pair() -> (String, String, CertificateDer<'static>) {
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let der = c.cert.der().clone();
    (c.cert.pem(), c.signing_key.serialize_pem(), der)
}

/// A TLS connection trusting both certificates; returns the stream and the certificate served.
async fn connect(
    addr: std::net::SocketAddr,
    roots: &[CertificateDer<'static>],
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    CertificateDer<'static>,
) {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    qlik_gateway::net::tls::install_default_provider();
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let served = s.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    (s, served)
}

async fn healthz(s: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    s.write_all(b"GET /_gateway/healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

fn hangup() {
    // The gateway (in this process) reloads its certificate on SIGHUP, as operators send it. The
    // other tests' in-process gateways get it too: a reload of files that did not change is a
    // no-op for them.
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cp, kp) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (a_pem, a_key, a) = pair();
    let (b_pem, b_key, b) = pair();
    std::fs::write(&cp, &a_pem).unwrap();
    std::fs::write(&kp, &a_key).unwrap();
    let env = Env::with(Setup {
        tls: Some((cp.clone(), kp.clone())),
        ..Default::default()
    })
    .await;
    let roots = [a.clone(), b.clone()];
    let (mut open, served) = connect(env.addr, &roots).await;
    assert_eq!(served, a);
    assert!(healthz(&mut open).await.starts_with("HTTP/1.1 200"));

    // A broken replacement (half-written file): the old certificate stays in service.
    std::fs::write(&cp, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    hangup();
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        assert_eq!(connect(env.addr, &roots).await.1, a);
    }

    // The renewal lands (certificate and key): new connections get it.
    std::fs::write(&kp, &b_key).unwrap();
    std::fs::write(&cp, &b_pem).unwrap();
    hangup();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if connect(env.addr, &roots).await.1 == b {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection made before the renewal was not dropped.
    assert!(healthz(&mut open).await.starts_with("HTTP/1.1 200"));
    drop(open);
    env.stop().await;
}
