//! Qlik failing under the gateway, each fault with nothing lost and a specific answer: the user's
//! gateway session outlives every fault, each failed request gets a status and an error code that
//! say what happened, and the next request after the fault works without a new login.
//!
//! Faults on the wire come from a TCP fault injector ([`crate::common::fault_proxy`]) between
//! the gateway and qlik-sim; the Qlik proxy listens on plain http there so that the injector can
//! see where requests and answers begin.

use std::future::Future;
use std::time::Duration;

use crate::common::fault_proxy::FaultProxy;
use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use qlik_sim::{QpsFault, SimOptions, SALES_APP_ID};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// A safety net so a broken gateway fails the test instead of hanging it; never a synchronisation.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A gateway whose Qlik proxy (plain http) and QPS are both behind fault injectors.
async fn env_behind_faults(setup: Setup) -> (Env, FaultProxy, FaultProxy) {
    let proxy = FaultProxy::start().await;
    let qps = FaultProxy::start().await;
    let env = Env::with(Setup {
        sim: SimOptions {
            proxy_tls: false,
            ..setup.sim.clone()
        },
        proxy_url: Some(proxy.url("http")),
        qps_api_url: Some(qps.url("https")),
        ..setup
    })
    .await;
    proxy.forward_to(FaultProxy::addr_of(&env.sim().proxy_url()));
    qps.forward_to(FaultProxy::addr_of(&env.sim().qps_api_url()));
    (env, proxy, qps)
}

/// Status and JSON `error` code of an answer.
async fn status_and_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v["error"].as_str().unwrap_or_default().to_string())
}

/// The first request of each session at once (each needs a Qlik session from QPS).
async fn burst(env: &Env, cookies: &[String]) -> Vec<reqwest::Response> {
    let reqs = cookies.iter().map(|c| env.get("/mashup/sim/echo", c));
    futures_util::future::join_all(reqs).await
}

#[tokio::test]
async fn qps_slow_and_down_during_a_burst_of_first_requests() {
    let (env, _proxy, qps) = env_behind_faults(Setup {
        qlik: "qps_timeout = \"500ms\"".into(),
        ..Default::default()
    })
    .await;
    let mut cookies = Vec::new();
    for _ in 0..24 {
        cookies.push(env.login().await);
    }

    // QPS slower than qlik.qps_timeout: every first request is a 503 qps_timeout that says when
    // to retry, none hangs for QPS's delay, none is a 500.
    env.sim()
        .control()
        .set_fault(Some(QpsFault::Delay(Duration::from_secs(4))));
    let answers = within("the slow-QPS burst", burst(&env, &cookies)).await;
    for r in answers {
        assert!(r.headers().contains_key("retry-after"), "{r:?}");
        assert_eq!(status_and_code(r).await, (503, "qps_timeout".into()));
    }
    env.sim().control().set_fault(None);

    // QPS down (connections reset): 503 qps_unreachable each.
    qps.refuse(true);
    let answers = within("the QPS-down burst", burst(&env, &cookies)).await;
    for r in answers {
        assert!(r.headers().contains_key("retry-after"), "{r:?}");
        assert_eq!(status_and_code(r).await, (503, "qps_unreachable".into()));
    }
    assert!(qps.resets() >= cookies.len(), "the fault happened");
    qps.refuse(false);

    // QPS back: the same gateway sessions (no new login) get their Qlik sessions, each its own user.
    let answers = within("the burst after the faults", burst(&env, &cookies)).await;
    for r in answers {
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("echo JSON");
        assert_eq!(
            v["user"],
            json!({"userDirectory": "DEV", "userId": "alice"}),
            "{v}"
        );
    }
    // Still the same after a second round: each session kept the Qlik session it got.
    let before = env.sim().control().sessions().len();
    for r in burst(&env, &cookies).await {
        assert_eq!(r.status(), 200);
    }
    assert_eq!(env.sim().control().sessions().len(), before);
    env.stop().await;
}

#[tokio::test]
async fn qlik_proxy_resets_mid_response() {
    let (env, proxy, _qps) = env_behind_faults(Setup::default()).await;
    let cookie = env.login().await;
    let big = 4 << 20;
    let path = format!("/mashup/sim/bytes?n={big}");
    let ok = env.get(&path, &cookie).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.bytes().await.expect("body").len(), big);

    // Reset inside the body: the client must see a broken transfer, never a short body that
    // looks complete.
    proxy.reset_answers_to("GET /mashup/sim/bytes", 256 * 1024, 1);
    let r = env.get(&path, &cookie).await;
    assert_eq!(r.status(), 200, "the head had arrived");
    let body = within("the cut body", r.bytes()).await;
    assert!(
        body.is_err(),
        "a body cut by Qlik must reach the client as an error, got {} bytes",
        body.map(|b| b.len()).unwrap_or_default()
    );
    assert_eq!(proxy.resets(), 1);

    // Reset inside the head: a specific 502.
    proxy.reset_answers_to("GET /mashup/sim/bytes", 10, 1);
    let r = env.get(&path, &cookie).await;
    assert_eq!(
        status_and_code(r).await,
        (502, "upstream_unreachable".into())
    );
    assert_eq!(proxy.resets(), 2);

    // Nothing lost: the session, its Qlik session and the connection pool carry on.
    let r = env.get(&path, &cookie).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("body").len(), big);
    let me = env.get("/_gateway/me", &cookie).await;
    assert_eq!(me.status(), 200);
    env.stop().await;
}

fn app_path() -> String {
    format!("/mashup/app/{SALES_APP_ID}")
}

/// Opens the engine socket and waits for Qlik's greeting.
async fn greeted_ws(env: &Env, cookie: &str) -> Ws {
    let mut ws = env.ws(&app_path(), Some(cookie)).await.expect("ws");
    let auth = within(
        "OnAuthenticationInformation",
        ws.wait_notification("OnAuthenticationInformation"),
    )
    .await;
    assert_eq!(auth["mustAuthenticate"], false, "{auth}");
    ws
}

#[tokio::test]
async fn qlik_proxy_resets_mid_upgrade() {
    let (env, proxy, _qps) = env_behind_faults(Setup::default()).await;
    let cookie = env.login().await;
    drop(greeted_ws(&env, &cookie).await);

    // One reset in the middle of Qlik's 101: the gateway makes the socket on a second attempt.
    proxy.reset_answers_to("upgrade: websocket", 12, 1);
    let mut ws = within("the socket after one reset", greeted_ws(&env, &cookie)).await;
    let r = ws.call(-1, "EngineVersion", json!({})).await;
    assert!(r["result"]["qVersion"].is_object(), "{r}");
    assert_eq!(proxy.resets(), 1);
    drop(ws);

    // Qlik resets every upgrade: the browser's handshake gets a specific 502, not a 101 that
    // dies.
    proxy.reset_answers_to("upgrade: websocket", 12, 100);
    match env.ws(&app_path(), Some(&cookie)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 502);
            let body: Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).expect("JSON");
            assert_eq!(body["error"], "upstream_unreachable", "{body}");
        }
        Err(e) => panic!("expected an HTTP answer to the handshake, got {e}"),
        Ok(_) => panic!("the handshake should have failed"),
    }
    proxy.clear_rules();

    // Nothing lost: the same session opens its socket once Qlik behaves.
    let mut ws = greeted_ws(&env, &cookie).await;
    let r = ws.call(-1, "EngineVersion", json!({})).await;
    assert!(r["result"]["qVersion"].is_object(), "{r}");
    env.stop().await;
}

#[tokio::test]
async fn engine_closes_mid_message_during_the_byte_relay() {
    let (env, proxy, _qps) = env_behind_faults(Setup::default()).await;
    let cookie = env.login().await;
    let mut ws = greeted_ws(&env, &cookie).await;
    // A round trip: the socket has settled into the byte relay.
    let r = ws.call(-1, "SimEcho", json!(["hello"])).await;
    assert_eq!(r["result"]["qReturn"], json!(["hello"]));

    // A 1 MiB answer of three-byte characters, cut by Qlik a few hundred KiB in (mid-frame, and
    // most likely mid-character).
    let big = "€".repeat(350_000);
    proxy.cut_websockets(300_001);
    let req =
        json!({"jsonrpc": "2.0", "id": 99, "handle": -1, "method": "SimEcho", "params": [big]});
    ws.inner
        .send(Message::text(req.to_string()))
        .await
        .expect("send");
    let mut close = None;
    let mut broken = 0;
    while let Some(m) = within("the close", ws.inner.next()).await {
        match m {
            Ok(Message::Close(f)) => {
                close = f;
                break;
            }
            // The cut message is completed (valid UTF-8, but not the message Qlik meant).
            Ok(Message::Text(t)) => {
                assert!(serde_json::from_str::<Value>(t.as_str()).is_err());
                broken += 1;
            }
            Ok(_) => {}
            Err(e) => panic!("the client must get a close frame, not {e}"),
        }
    }
    assert_eq!(proxy.resets(), 1, "the fault happened");
    assert!(broken <= 1);
    let f = close.expect("a close frame with a code");
    assert_eq!(f.code, CloseCode::Error, "{f:?}");
    assert!(f.reason.contains("mid-message"), "{f:?}");

    // Nothing lost: a reconnect of the same session works.
    let mut ws = greeted_ws(&env, &cookie).await;
    let r = ws.call(-1, "SimEcho", json!(["again"])).await;
    assert_eq!(r["result"]["qReturn"], json!(["again"]));
    env.stop().await;
}
