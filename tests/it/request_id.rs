//! One request id follows a request: taken from a load balancer's `X-Request-Id` or made, given
//! back to the client, forwarded to Qlik, and in the gateway's log lines for that request.

use crate::common::*;
use serde_json::Value;

#[tokio::test]
async fn the_request_id_is_kept_forwarded_and_answered() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let r = http_client()
        .get(format!("{}/mashup/sim/echo", env.url))
        .header("cookie", &cookie)
        .header("x-request-id", "lb-4711.abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "lb-4711.abc");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["headers"]["x-request-id"],
        serde_json::json!(["lb-4711.abc"]),
        "{v}"
    );

    // Made when absent, replaced when it could forge log content.
    for sent in [None, Some("evil\" injected=1"), Some(&*"x".repeat(300))] {
        let mut req = http_client().get(format!("{}/_gateway/healthz", env.url));
        if let Some(s) = sent {
            req = req.header("x-request-id", s);
        }
        let r = req.send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 24, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
    env.stop().await;
}

#[tokio::test]
async fn log_lines_carry_the_request_id() {
    let (_dir, sim, gw) = binary(&Setup::default()).await;
    let r = http_client()
        .get(format!("{}/_gateway/login", gw.url()))
        .header("x-request-id", "trace-me-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let (_, log) = gw.stop().await;
    let login = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "login")
        .unwrap_or_else(|| panic!("no login line:\n{log}"));
    assert_eq!(login["span"]["request_id"], "trace-me-1", "{login}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_websockets_relay_logs_with_its_upgrade_requests_id() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    // The binary picks its port: the page's origin is listed instead.
    let (_dir, sim, gw) = binary(&Setup {
        security: "allowed_origins = [\"https://mashup.example.com\"]".into(),
        ..Setup::default()
    })
    .await;
    let login = http_client()
        .get(format!("{}/_gateway/login", gw.url()))
        .send()
        .await
        .unwrap();
    let cookie = cookie_from(&login).expect("the gateway cookie");
    let ws_url = format!(
        "{}/mashup/app/{}",
        gw.url().replacen("http", "ws", 1),
        qlik_sim::SALES_APP_ID
    );
    let mut req = ws_url.into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut()
        .insert("origin", "https://mashup.example.com".parse().unwrap());
    req.headers_mut()
        .insert("x-request-id", "trace-ws-1".parse().unwrap());
    let mut ws = Ws::new(tokio_tungstenite::connect_async(req).await.unwrap().0);
    ws.call(-1, "EngineVersion", serde_json::json!({})).await;
    // Qlik ends the Qlik session under the open socket: the relay logs it, long after the
    // upgrade request's own future has finished.
    assert!(sim.control().notify("OnSessionTimedOut", true).unwrap() >= 1);
    while ws.next_message().await.is_some() {}
    let (_, log) = gw.stop().await;
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Qlik ended the user's Qlik session"))
        })
        .unwrap_or_else(|| panic!("no line of the relay:\n{log}"));
    assert_eq!(line["span"]["request_id"], "trace-ws-1", "{line}");
    assert_eq!(line["span"]["name"], "request", "{line}");
    sim.shutdown().await;
}

/// qlik-sim and the real binary in front of it, configured by `setup`.
async fn binary(setup: &Setup) -> (tempfile::TempDir, qlik_sim::Sim, Binary) {
    let dir = tempfile::tempdir().unwrap();
    let sim = qlik_sim::Sim::start(qlik_sim::SimOptions::default(), &dir.path().join("pki"))
        .await
        .unwrap();
    let toml = config_toml(&sim, setup, "127.0.0.1:0".parse().unwrap());
    let gw = Binary::start(dir.path(), &toml, &[]).await;
    (dir, sim, gw)
}
