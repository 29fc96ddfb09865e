//! Smoke test: a login, a proxied request to qlik-sim and an engine call over the websocket.

use crate::common::*;

#[tokio::test]
async fn login_proxy_and_engine_websocket() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let r = env.get("/mashup/sim/echo", &cookie).await;
    assert_eq!(r.status(), 200);
    let mut ws = env.ws("/mashup/app/", Some(&cookie)).await.expect("ws");
    let auth = ws.wait_notification("OnAuthenticationInformation").await;
    assert_eq!(auth["mustAuthenticate"], false);
    let v = ws.call(-1, "EngineVersion", serde_json::json!([])).await;
    assert!(
        v["result"]["qVersion"]["qComponentVersion"].is_string(),
        "{v}"
    );
    // Close our side first: a client that never answers the gateway's 1001 holds the drain.
    let _ = futures_util::SinkExt::close(&mut ws.inner).await;
    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws.inner).await {}
    env.stop().await;
}
