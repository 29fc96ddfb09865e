//! The direct engine listener: mutual TLS, `X-Qlik-User`, the engine without proxy messages,
//! engine sessions shared per user and app, counters and recorded requests.

use crate::common::*;
use qlik_sim::{SimOptions, HELPDESK_APP_ID, SALES_APP_ID};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite;

async fn start_with_engine() -> TestSim {
    start(SimOptions {
        engine_port: Some(0),
        ..SimOptions::default()
    })
    .await
}

fn engine_url(sim: &qlik_sim::Sim, path: &str) -> String {
    format!("{}{path}", sim.engine_url().expect("engine listener"))
}

async fn direct(
    sim: &qlik_sim::Sim,
    path: &str,
    user: Option<&str>,
    cert: ClientCert,
) -> Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error> {
    let headers: Vec<(&str, &str)> = user.map(|u| ("X-Qlik-User", u)).into_iter().collect();
    ws_open(
        &engine_url(sim, path),
        &headers,
        Some(tls_config(sim, cert)),
    )
    .await
}

#[tokio::test]
async fn engine_url_only_when_asked_for() {
    let sim = start_default().await;
    assert_eq!(sim.engine_url(), None);
    let sim = start_with_engine().await;
    let url = sim.engine_url().expect("engine url");
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
}

#[tokio::test]
async fn client_certificate_is_required() {
    let sim = start_with_engine().await;
    let path = format!("/app/{SALES_APP_ID}");
    let user = Some("UserDirectory=DIR; UserId=alice");
    for cert in [ClientCert::None, ClientCert::Untrusted] {
        match direct(&sim, &path, user, cert).await {
            Ok(_) => panic!("upgraded without a trusted client certificate"),
            Err(tungstenite::Error::Http(resp)) => {
                panic!(
                    "refused over HTTP ({}), not at the handshake",
                    resp.status()
                )
            }
            Err(_) => {}
        }
    }
    assert_eq!(sim.control().counters().engine_direct_upgrades, 0);
    assert!(sim.control().requests().is_empty());
}

#[tokio::test]
async fn x_qlik_user_is_required() {
    let sim = start_with_engine().await;
    let path = format!("/app/{SALES_APP_ID}");
    for user in [
        None,
        Some("alice"),
        Some("UserDirectory=DIR"),
        Some("UserDirectory=; UserId=alice"),
        Some("UserDirectory=DIR\\X; UserId=alice"),
    ] {
        let err = direct(&sim, &path, user, ClientCert::Trusted)
            .await
            .err()
            .expect("refused");
        assert_eq!(refused_status(err), 401, "{user:?}");
    }
    let c = sim.control().counters();
    assert_eq!((c.engine_direct_rejected, c.engine_direct_upgrades), (5, 0));
    // Plain HTTP requests and other paths.
    let https = sim
        .engine_url()
        .expect("url")
        .replacen("wss://", "https://", 1);
    let client = qps_client(&sim, ClientCert::Trusted);
    let resp = client
        .get(format!("{https}/app/{SALES_APP_ID}"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 400);
    let resp = client
        .get(format!("{https}/hub/"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 404);
}

#[tokio::test]
async fn direct_socket_speaks_qix_without_proxy_messages() {
    let sim = start_with_engine().await;
    let path = format!("/app/{SALES_APP_ID}");
    let (mut ws, resp) = direct(
        &sim,
        &path,
        Some("UserDirectory=DIR; UserId=j%C3%BCrgen%20k"),
        ClientCert::Trusted,
    )
    .await
    .expect("upgrade");
    assert!(resp.headers().get("set-cookie").is_none());
    // The engine's own greeting only: no OnAuthenticationInformation.
    assert_eq!(
        next_json(&mut ws).await,
        json!({"jsonrpc": "2.0", "method": "OnConnected", "params": {"qSessionState": "SESSION_CREATED"}})
    );
    let v = call(&mut ws, 1, -1, "EngineVersion", json!([])).await;
    assert_eq!(v["result"]["qVersion"]["qComponentVersion"], "12.2027.0");
    let v = call(&mut ws, 2, -1, "GetAuthenticatedUser", json!([])).await;
    assert_eq!(v["result"]["qReturn"], "UserDirectory=DIR; UserId=jürgen k");
    let v = call(&mut ws, 3, -1, "OpenDoc", json!([SALES_APP_ID])).await;
    assert_eq!(v["result"]["qReturn"]["qHandle"], 1);
    let v = call(&mut ws, 4, 1, "GetAppLayout", json!([])).await;
    assert_eq!(v["result"]["qLayout"]["qTitle"], "Sales");
    let v = call(&mut ws, 5, -1, "OpenDoc", json!(["nope"])).await;
    assert_eq!(v["error"]["code"], 1002);

    let c = sim.control().counters();
    assert_eq!(c.engine_direct_upgrades, 1);
    assert_eq!(
        (c.ws_upgrades, c.proxy_requests, c.sessions_created),
        (0, 0, 0)
    );
    assert!(sim.control().sessions().is_empty());
    let recorded = sim.control().requests();
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].direct_engine && recorded[0].websocket);
    assert_eq!(recorded[0].path, path);
    assert_eq!(
        recorded[0].headers["x-qlik-user"],
        vec!["UserDirectory=DIR; UserId=j%C3%BCrgen%20k".to_string()]
    );

    // Proxy notifications are not for direct sockets.
    assert_eq!(
        sim.control()
            .notify("OnSessionTimedOut", true)
            .expect("known"),
        0
    );
    let v = call(&mut ws, 6, -1, "GetActiveDoc", json!([])).await;
    assert_eq!(v["result"]["qReturn"]["qHandle"], 1);
}

#[tokio::test]
async fn engine_sessions_are_shared_per_user_and_app() {
    let sim = start_with_engine().await;
    let alice = Some("UserDirectory=DIR; UserId=alice");
    let sales = format!("/app/{SALES_APP_ID}");
    let (mut a1, _) = direct(&sim, &sales, alice, ClientCert::Trusted)
        .await
        .expect("a1");
    assert_eq!(
        next_json(&mut a1).await["params"]["qSessionState"],
        "SESSION_CREATED"
    );
    call(&mut a1, 1, -1, "OpenDoc", json!([SALES_APP_ID])).await;

    // Same user and app while a1 is open: attached, the doc is already open.
    let (mut a2, _) = direct(&sim, &sales, alice, ClientCert::Trusted)
        .await
        .expect("a2");
    assert_eq!(
        next_json(&mut a2).await["params"]["qSessionState"],
        "SESSION_ATTACHED"
    );
    let v = call(&mut a2, 1, -1, "GetActiveDoc", json!([])).await;
    assert_eq!(v["result"]["qReturn"]["qGenericId"], SALES_APP_ID);

    // Another user, another app, another identity: fresh sessions.
    for (path, user) in [
        (sales.clone(), Some("UserDirectory=DIR; UserId=bob")),
        (format!("/app/{HELPDESK_APP_ID}"), alice),
        (format!("{sales}/identity/tab2"), alice),
    ] {
        let (mut ws, _) = direct(&sim, &path, user, ClientCert::Trusted)
            .await
            .expect("upgrade");
        assert_eq!(
            next_json(&mut ws).await["params"]["qSessionState"],
            "SESSION_CREATED",
            "{path} {user:?}"
        );
    }

    // The session goes with its last socket (no /ttl/).
    for mut ws in [a1, a2] {
        ws.close(None).await.expect("close");
        closed(&mut ws).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut a3, _) = direct(&sim, &sales, alice, ClientCert::Trusted)
        .await
        .expect("a3");
    assert_eq!(
        next_json(&mut a3).await["params"]["qSessionState"],
        "SESSION_CREATED"
    );
    a3.close(None).await.expect("close");
    closed(&mut a3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // With /ttl/{sec} it outlives its sockets.
    let ttl = format!("{sales}/ttl/30");
    let (mut t1, _) = direct(&sim, &ttl, alice, ClientCert::Trusted)
        .await
        .expect("t1");
    assert_eq!(
        next_json(&mut t1).await["params"]["qSessionState"],
        "SESSION_CREATED"
    );
    t1.close(None).await.expect("close");
    closed(&mut t1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut t2, _) = direct(&sim, &ttl, alice, ClientCert::Trusted)
        .await
        .expect("t2");
    assert_eq!(
        next_json(&mut t2).await["params"]["qSessionState"],
        "SESSION_ATTACHED"
    );
}

#[tokio::test]
async fn shutdown_closes_direct_sockets_and_the_listener() {
    let sim = start_with_engine().await;
    let (mut ws, _) = direct(
        &sim,
        "/app/",
        Some("UserDirectory=DIR; UserId=alice"),
        ClientCert::Trusted,
    )
    .await
    .expect("upgrade");
    next_json(&mut ws).await;
    call(&mut ws, 1, -1, "EngineVersion", json!([])).await;
    let url = sim.engine_url().expect("url");
    let authority = url.trim_start_matches("wss://").to_string();
    let TestSim { sim, .. } = sim;
    sim.shutdown().await;
    assert_eq!(closed(&mut ws).await, Some(1001));
    let err = tokio::net::TcpStream::connect(&authority)
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}
