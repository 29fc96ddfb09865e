//! Slow and silent clients: connections that send nothing, send their head a byte at a time,
//! stall their body or sit idle between requests are closed by the gateway's timeouts, while
//! upgraded websockets are left alone.

use crate::common;
use std::time::Duration;

use crate::common::{Env, Setup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short timeouts so the tests finish quickly; the outer bound only turns a hang into a failure.
fn setup() -> Setup {
    Setup {
        server: "header_read_timeout = \"1s\"\nbody_timeout = \"1s\"\n".into(),
        ..Setup::default()
    }
}

const HANG: Duration = Duration::from_secs(30);

/// Reads until the gateway closes the connection (EOF or reset); returns what was read.
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(HANG, read)
        .await
        .expect("the gateway should have closed the connection");
    all
}

#[tokio::test]
async fn connections_that_never_send_a_byte_are_closed() {
    let env = Env::with(setup()).await;
    let mut conns = Vec::new();
    for _ in 0..200 {
        conns.push(TcpStream::connect(env.addr).await.expect("connect"));
    }
    for c in &mut conns {
        let got = until_closed(c).await;
        assert!(got.is_empty(), "nothing is answered to nothing");
    }
    // The gateway still serves.
    let resp = common::http_client()
        .get(format!("{}/_gateway/healthz", env.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(resp.status(), 200);
    env.stop().await;
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_off() {
    let env = Env::with(setup()).await;
    let mut s = TcpStream::connect(env.addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let head = format!("GET /_gateway/healthz HTTP/1.1\r\nhost: {}\r\n", env.addr);
    s.write_all(head.as_bytes()).await.expect("start");
    // Slowloris: one header byte at a time, for ever, until the gateway hangs up. The pause is
    // the attack's pacing, not synchronisation.
    let drip = async {
        let mut buf = [0u8; 64];
        loop {
            if s.write_all(b"x").await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) => {}
            }
        }
    };
    tokio::time::timeout(HANG, drip)
        .await
        .expect("the gateway should cut a slowloris client off");
    env.stop().await;
}

#[tokio::test]
async fn a_slow_first_byte_then_a_slow_head_is_still_one_timeout() {
    // The first-request deadline runs from accept: a client cannot get two header timeouts by
    // waiting before its first byte.
    let env = Env::with(setup()).await;
    let mut s = TcpStream::connect(env.addr).await.expect("connect");
    s.write_all(b"G").await.expect("first byte");
    let got = until_closed(&mut s).await;
    assert!(!got.starts_with(b"HTTP/1.1 200"));
    env.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let env = Env::with(setup()).await;
    let mut s = TcpStream::connect(env.addr).await.expect("connect");
    let req = format!(
        "GET /_gateway/healthz HTTP/1.1\r\nhost: {}\r\n\r\n",
        env.addr
    );
    s.write_all(req.as_bytes()).await.expect("request");
    let got = until_closed(&mut s).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "the request is answered first: {}",
        String::from_utf8_lossy(&got)
    );
    env.stop().await;
}

#[tokio::test]
async fn a_stalled_request_body_is_cut_off() {
    let env = Env::with(setup()).await;
    let cookie = env.login().await;
    let mut s = TcpStream::connect(env.addr).await.expect("connect");
    let req = format!(
        "POST /mashup/qrs/about HTTP/1.1\r\nhost: {}\r\ncookie: {cookie}\r\ncontent-length: 1000\r\naccept: application/json\r\n\r\n0123456789",
        env.addr
    );
    s.write_all(req.as_bytes()).await.expect("request");
    // 990 body bytes never come.
    let got = until_closed(&mut s).await;
    assert!(
        !got.starts_with(b"HTTP/1.1 2"),
        "a stalled upload is not a success: {}",
        String::from_utf8_lossy(&got)
    );
    env.stop().await;
}

#[tokio::test]
async fn upgraded_websockets_outlive_the_header_and_body_timeouts() {
    let env = Env::with(setup()).await;
    let cookie = env.login().await;
    let mut ws = env
        .ws(
            &format!("/mashup/app/{}", qlik_sim::SALES_APP_ID),
            Some(&cookie),
        )
        .await
        .expect("websocket");
    ws.wait_notification("OnConnected").await;
    // A silent connection opened now is closed once header_read_timeout has passed: when it
    // is, the websocket has been idle for longer than that.
    let mut silent = TcpStream::connect(env.addr).await.expect("connect");
    until_closed(&mut silent).await;
    let r = ws.call(-1, "EngineVersion", serde_json::json!([])).await;
    assert!(r.get("error").is_some() || r.get("result").is_some(), "{r}");
    env.stop().await;
}

#[tokio::test]
async fn tls_connections_silent_after_the_handshake_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let (cp, kp) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cp, c.cert.pem()).expect("cert");
    std::fs::write(&kp, c.signing_key.serialize_pem()).expect("key");
    let env = Env::with(Setup {
        tls: Some((cp, kp)),
        ..setup()
    })
    .await;
    let mut store = rustls::RootCertStore::empty();
    store.add(c.cert.der().clone()).expect("root");
    qlik_gateway::net::tls::install_default_provider();
    let cfg = std::sync::Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(store)
            .with_no_client_auth(),
    );
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut conns = Vec::new();
    for _ in 0..20 {
        let tcp = TcpStream::connect(env.addr).await.expect("connect");
        let s = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(name.clone(), tcp)
            .await
            .expect("TLS handshake");
        conns.push(s);
    }
    for s in &mut conns {
        let mut buf = [0u8; 256];
        let read = async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(HANG, read)
            .await
            .expect("the gateway should close a TLS connection that sends no request");
    }
    env.stop().await;
}

#[tokio::test]
async fn an_http2_preface_with_no_request_is_closed() {
    // The deadline sits below the HTTP/1-HTTP/2 detection: a client that sends the HTTP/2
    // preface and then no stream is closed too.
    let env = Env::with(setup()).await;
    let mut s = TcpStream::connect(env.addr).await.expect("connect");
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    until_closed(&mut s).await;
    env.stop().await;
}
