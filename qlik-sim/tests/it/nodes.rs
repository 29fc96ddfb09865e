//! Several simulated nodes of one site: a shared PKI, and stopping one node mid-session.

use crate::common::*;
use qlik_sim::{Sim, SimError, SimOptions, SALES_APP_ID};
use serde_json::json;
use std::io::ErrorKind;
use std::path::Path;

fn opts() -> SimOptions {
    SimOptions {
        engine_port: Some(0),
        ..SimOptions::default()
    }
}

/// The QPS API answers `sim`'s calls made with `client_of`'s client certificate and CA.
async fn qps_trusts(client_of: &Sim, sim: &Sim) -> bool {
    let url = format!(
        "{}/qps/mashup/user/DIR/alice?xrfkey={XRF}",
        sim.qps_api_url()
    );
    match qps_client(client_of, ClientCert::Trusted)
        .get(url)
        .header("X-Qlik-Xrfkey", XRF)
        .send()
        .await
    {
        Ok(resp) => resp.status().as_u16() == 200,
        Err(_) => false,
    }
}

fn authority(url: &str) -> String {
    url.split("://").nth(1).expect("authority").to_string()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read")
}

#[tokio::test]
async fn two_nodes_on_one_cert_dir_share_the_pki() {
    install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Sim::start(opts(), dir.path()).await.expect("node a");
    let ca = read(&a.pki().ca_cert);
    let client = read(&a.pki().client_cert);
    let b = Sim::start(opts(), dir.path()).await.expect("node b");
    assert_eq!(a.pki(), b.pki());
    assert_eq!(
        read(&b.pki().ca_cert),
        ca,
        "the CA is reused, not regenerated"
    );
    assert_eq!(read(&b.pki().client_cert), client);
    assert_ne!(a.proxy_url(), b.proxy_url());
    assert!(qps_trusts(&a, &b).await && qps_trusts(&b, &a).await);
    // The untrusted pair stays untrusted on both.
    for sim in [&a, &b] {
        let result = qps_client(&a, ClientCert::Untrusted)
            .get(format!(
                "{}/qps/mashup/user/DIR/a?xrfkey={XRF}",
                sim.qps_api_url()
            ))
            .header("X-Qlik-Xrfkey", XRF)
            .send()
            .await;
        assert!(result.is_err());
    }
    // Node b's proxy is trusted with a's CA; sessions are per node.
    let sid = add_session(&a, "alice").await;
    assert_eq!(a.control().sessions().len(), 1);
    assert!(b.control().sessions().is_empty());
    let resp = proxy_client(&a)
        .get(format!("{}/mashup/hub/", b.proxy_url()))
        .header("Cookie", cookie(&b, &sid))
        .send()
        .await
        .expect("b's proxy over TLS with a's CA");
    assert_eq!(resp.status().as_u16(), 302, "a's session is unknown on b");
    // b's direct engine accepts a's client certificate.
    let (mut ws, _) = ws_open(
        &format!("{}/app/{SALES_APP_ID}", b.engine_url().expect("engine")),
        &[("X-Qlik-User", "UserDirectory=DIR; UserId=alice")],
        Some(tls_config(&a, ClientCert::Trusted)),
    )
    .await
    .expect("direct engine on b");
    assert_eq!(next_json(&mut ws).await["method"], "OnConnected");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn start_with_pki_uses_another_nodes_files() {
    let a = start(opts()).await;
    let b = Sim::start_with_pki(opts(), a.pki()).await.expect("node b");
    assert_eq!(a.pki(), b.pki());
    assert!(qps_trusts(&a, &b).await);
    b.shutdown().await;

    install_provider();
    let empty = tempfile::tempdir().expect("tempdir");
    let missing = qlik_sim::PkiPaths::in_dir(empty.path());
    match Sim::start_with_pki(opts(), &missing).await {
        Err(SimError::Io(msg)) => assert!(msg.contains("root.pem"), "{msg}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("started without certificates"),
    }
}

#[tokio::test]
async fn concurrent_starts_on_a_fresh_dir_agree() {
    install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = tokio::join!(
        Sim::start(opts(), dir.path()),
        Sim::start(opts(), dir.path())
    );
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert!(qps_trusts(&a, &b).await && qps_trusts(&b, &a).await);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_incomplete_cert_dir_is_regenerated() {
    install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Sim::start(opts(), dir.path()).await.expect("a");
    let ca = read(&a.pki().ca_cert);
    a.shutdown().await;
    std::fs::remove_file(dir.path().join("untrusted_client_key.pem")).expect("rm");
    let b = Sim::start(opts(), dir.path()).await.expect("b");
    assert_ne!(read(&b.pki().ca_cert), ca);
    assert!(b.pki().untrusted_client_key.is_file());
    b.shutdown().await;
}

/// Every listener of a stopped node refuses connections.
async fn assert_all_refused(urls: &[String]) {
    for url in urls {
        let err = tokio::net::TcpStream::connect(authority(url))
            .await
            .err()
            .unwrap_or_else(|| panic!("{url} still accepts"));
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{url}");
    }
}

fn listener_urls(sim: &Sim) -> Vec<String> {
    vec![
        sim.proxy_url(),
        sim.qps_api_url(),
        sim.control_url(),
        sim.engine_url().expect("engine"),
    ]
}

#[tokio::test]
async fn stopping_a_node_mid_session() {
    install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Sim::start(opts(), dir.path()).await.expect("a");
    let b = Sim::start(opts(), dir.path()).await.expect("b");
    let (_sid, mut ws) = open_engine(&a, "alice", SALES_APP_ID).await;
    next_json(&mut ws).await;
    next_json(&mut ws).await;
    call(&mut ws, 1, -1, "OpenDoc", json!([SALES_APP_ID])).await;
    let urls = listener_urls(&a);
    let started = std::time::Instant::now();
    a.shutdown().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(closed(&mut ws).await, Some(1001));
    assert_all_refused(&urls).await;
    // The other node carries on.
    let (_sid, mut ws) = open_engine(&b, "alice", SALES_APP_ID).await;
    assert_eq!(
        next_json(&mut ws).await["params"]["mustAuthenticate"],
        false
    );
    b.shutdown().await;
}

#[tokio::test]
async fn killing_a_node_drops_websockets_without_a_close_frame() {
    let sim = start(opts()).await;
    let (_sid, mut ws) = open_engine(&sim, "alice", SALES_APP_ID).await;
    next_json(&mut ws).await;
    next_json(&mut ws).await;
    call(&mut ws, 1, -1, "EngineVersion", json!([])).await;
    let (mut direct, _) = ws_open(
        &format!("{}/app/", sim.engine_url().expect("engine")),
        &[("X-Qlik-User", "UserDirectory=DIR; UserId=alice")],
        Some(tls_config(&sim, ClientCert::Trusted)),
    )
    .await
    .expect("direct");
    next_json(&mut direct).await;
    call(&mut direct, 1, -1, "EngineVersion", json!([])).await;
    let urls = listener_urls(&sim);
    let TestSim { sim, .. } = sim;
    sim.kill().await;
    assert_eq!(closed(&mut ws).await, None);
    assert_eq!(closed(&mut direct).await, None);
    assert_all_refused(&urls).await;
}
