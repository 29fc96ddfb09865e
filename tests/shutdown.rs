//! SIGTERM on the real binary: in-flight requests finish, websockets get close 1001, the process exits.

mod common;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

#[tokio::test]
async fn sigterm_drains_requests_and_websockets() {
    let dir = tempfile::tempdir().unwrap();
    let sim = qlik_sim::Sim::start(qlik_sim::SimOptions::default(), &dir.path().join("pki"))
        .await
        .unwrap();
    let origin = "http://gateway.test";
    let setup = common::Setup {
        server: "drain_timeout = \"10s\"".into(),
        security: format!("allowed_origins = [\"{origin}\"]"),
        ..Default::default()
    };
    let toml = common::config_toml(&sim, &setup, "127.0.0.1:0".parse().unwrap());
    let gw = common::Binary::start(dir.path(), &toml, &[]).await;
    let addr = gw.addr.clone();
    let url = format!("http://{addr}");
    let client = common::http_client();
    let login = client
        .get(format!("{url}/_gateway/login"))
        .send()
        .await
        .unwrap();
    let cookie = common::cookie_from(&login).unwrap();

    // An engine websocket, past its greeting.
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{addr}/mashup/app/"
    ))
    .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut().insert("origin", origin.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket");
    loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await {
            if t.contains("OnConnected") {
                break;
            }
        }
    }

    // A large download in flight: read its first chunk, then ask the gateway to stop.
    let n: usize = 16 << 20;
    let mut download = client
        .get(format!("{url}/mashup/sim/bytes?n={n}"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let mut got = download
        .chunk()
        .await
        .unwrap()
        .map(|c| c.len())
        .unwrap_or(0);

    let stopped = tokio::spawn(gw.stop());

    // The websocket is closed by the gateway with 1001 Going Away.
    let close = loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    drop(ws);

    // The in-flight download completes.
    while let Some(chunk) = download.chunk().await.unwrap() {
        got += chunk.len();
    }
    assert_eq!(got, n, "in-flight response finished during drain");

    let (status, log) = stopped.await.unwrap();
    assert!(status.success(), "{status:?}");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "no longer accepting"
    );
    sim.shutdown().await;
}
