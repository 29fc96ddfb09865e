//! Several Qlik proxy nodes: sessions spread over healthy nodes and stick to theirs; a node that
//! stops mid-session is taken out and its users continue on another node without a login.

use std::time::{Duration, Instant};

use crate::common::*;
use qlik_sim::{Sim, SimOptions};
use serde_json::Value;

async fn user_of(env: &Env, cookie: &str) -> reqwest::Response {
    env.get("/mashup/sim/echo", cookie).await
}

#[tokio::test]
async fn users_spread_over_nodes_and_move_when_one_stops() {
    // Node B, and node A with B's certificates, like the nodes of one Qlik site.
    let pki_dir = tempfile::tempdir().unwrap();
    let b = Sim::start(SimOptions::default(), pki_dir.path())
        .await
        .unwrap();
    let env = Env::with(Setup {
        extra_nodes: vec![(b.proxy_url(), b.qps_api_url())],
        qlik: "health_interval = \"200ms\"\n".into(),
        sim_pki: Some(b.pki().clone()),
        ..Setup::default()
    })
    .await;
    let a = env.sim();

    // Two users: one session on each node, each sticking to its node.
    let alice = env.login().await;
    let bob = env.login().await;
    for _ in 0..3 {
        assert_eq!(user_of(&env, &alice).await.status(), 200);
        assert_eq!(user_of(&env, &bob).await.status(), 200);
    }
    assert_eq!(a.control().counters().sessions_created, 1);
    assert_eq!(b.control().counters().sessions_created, 1);
    let on_a = if a.control().sessions().is_empty() {
        bob.clone()
    } else {
        alice.clone()
    };
    let mut ws = env.ws("/mashup/app/", Some(&on_a)).await.expect("ws");
    ws.wait_notification("OnConnected").await;
    let created_on_b = b.control().counters().sessions_created;

    // Node A stops: the open socket ends; the next request and a reconnect work on node B.
    let mut env = env;
    let a = env.sim.take().expect("node A");
    a.shutdown().await;
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match futures_util::StreamExt::next(&mut ws.inner).await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => break f,
                Some(Ok(_)) => continue,
                _ => break None,
            }
        }
    })
    .await
    .expect("the socket on the stopped node ends");
    if let Some(f) = closed {
        assert_ne!(
            u16::from(f.code),
            1000,
            "not a clean end: the client should reconnect: {f:?}"
        );
    }
    let r = user_of(&env, &on_a).await;
    assert_eq!(r.status(), 200, "moved to node B without a login");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["user"]["userId"], "alice");
    assert_eq!(b.control().counters().sessions_created, created_on_b + 1);
    let mut ws = env
        .ws("/mashup/app/", Some(&on_a))
        .await
        .expect("reconnect");
    let auth = ws.wait_notification("OnAuthenticationInformation").await;
    assert_eq!(auth["mustAuthenticate"], false, "{auth}");
    let _ = futures_util::SinkExt::close(&mut ws.inner).await;

    // New users go to the healthy node only.
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.state.qlik.nodes().all()[0].is_up() {
        assert!(
            Instant::now() < deadline,
            "the health check never took node A out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        let c = env.login().await;
        assert_eq!(user_of(&env, &c).await.status(), 200);
    }
    assert_eq!(b.control().counters().sessions_created, created_on_b + 4);
    env.stop().await;
    b.shutdown().await;
}
