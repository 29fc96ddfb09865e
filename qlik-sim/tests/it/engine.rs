//! Engine websocket: Origin and CSRF checks, proxy notifications, QIX JSON-RPC, fatal
//! session messages, large messages.

use crate::common::*;
use futures_util::SinkExt;
use qlik_sim::{AuthInfoTiming, RandomExpiry, SimOptions, SALES_APP_ID};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn foreign_origin_and_missing_csrf_token_are_403() {
    let sim = start_default().await;
    let sid = add_session(&sim, "alice").await;
    let cookie = cookie(&sim, &sid);
    let token = csrf_token(&sim, &cookie).await;
    let path = format!("/mashup/app/{SALES_APP_ID}?qlik-csrf-token={token}");
    let err = ws_connect(&sim, &path, Some("https://evil.example"), Some(&cookie))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused_status(err), 403);
    let err = ws_connect(&sim, &path, None, Some(&cookie))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused_status(err), 403);
    let origin = sim.proxy_url();
    for bad in [
        format!("/mashup/app/{SALES_APP_ID}"),
        format!("/mashup/app/{SALES_APP_ID}?qlik-csrf-token=wrong"),
    ] {
        let err = ws_connect(&sim, &bad, Some(&origin), Some(&cookie))
            .await
            .err()
            .expect("refused");
        assert_eq!(refused_status(err), 403);
    }
    // localhost is the proxy's own host too.
    let port = origin.rsplit(':').next().expect("port");
    let mut ws = ws_connect(
        &sim,
        &path,
        Some(&format!("https://localhost:{port}")),
        Some(&cookie),
    )
    .await
    .expect("upgrade");
    assert_eq!(
        next_json(&mut ws).await["method"],
        "OnAuthenticationInformation"
    );
    let c = sim.control().counters();
    assert_eq!((c.ws_rejected, c.ws_upgrades), (4, 1));
}

#[tokio::test]
async fn host_allow_list_admits_other_origins() {
    let sim = start(SimOptions {
        host_allow_list: vec!["mashup.example.com".into()],
        require_csrf_token: false,
        ..SimOptions::default()
    })
    .await;
    let sid = add_session(&sim, "alice").await;
    let cookie = cookie(&sim, &sid);
    let mut ws = ws_connect(
        &sim,
        "/mashup/app/",
        Some("https://mashup.example.com:8443"),
        Some(&cookie),
    )
    .await
    .expect("allowed origin, no token needed");
    assert_eq!(
        next_json(&mut ws).await["params"]["mustAuthenticate"],
        false
    );
}

#[tokio::test]
async fn authenticated_socket_speaks_qix() {
    let sim = start_default().await;
    let (_sid, mut ws) = open_engine(&sim, "alice", SALES_APP_ID).await;
    let auth = next_json(&mut ws).await;
    assert_eq!(
        auth,
        json!({"jsonrpc": "2.0", "method": "OnAuthenticationInformation", "params": {
            "userId": "alice", "userDirectory": "DIR",
            "logoutUri": format!("{}/mashup/qps/user", sim.proxy_url()),
            "mustAuthenticate": false}})
    );
    assert_eq!(
        next_json(&mut ws).await,
        json!({"jsonrpc": "2.0", "method": "OnConnected", "params": {"qSessionState": "SESSION_CREATED"}})
    );
    let v = call(&mut ws, 1, -1, "EngineVersion", json!([])).await;
    assert_eq!(v["result"]["qVersion"]["qComponentVersion"], "12.2027.0");
    let v = call(&mut ws, 2, -1, "GetDocList", json!([])).await;
    assert_eq!(v["result"]["qDocList"].as_array().expect("list").len(), 2);
    let v = call(&mut ws, 3, 1, "GetAppLayout", json!([])).await;
    assert_eq!(v["error"]["code"], -32602);
    let v = call(&mut ws, 4, -1, "GetActiveDoc", json!([])).await;
    assert_eq!(v["error"]["code"], 1017);
    let v = call(&mut ws, 5, -1, "OpenDoc", json!(["nope"])).await;
    assert_eq!(v["error"]["code"], 1003);
    let v = call(&mut ws, 6, -1, "OpenDoc", json!([SALES_APP_ID])).await;
    assert_eq!(
        v["result"]["qReturn"],
        json!({"qType": "Doc", "qHandle": 1, "qGenericId": SALES_APP_ID})
    );
    assert_eq!(v["change"], json!([1]));
    let v = call(&mut ws, 7, -1, "OpenDoc", json!({"qDocName": SALES_APP_ID})).await;
    assert_eq!(v["error"]["code"], 1002);
    let v = call(&mut ws, 8, 1, "GetAppLayout", json!({})).await;
    assert_eq!(v["result"]["qLayout"]["qTitle"], "Sales");
    assert_eq!(v["result"]["qLayout"]["qHasScript"], true);
    let v = call(&mut ws, 9, -1, "GetAuthenticatedUser", json!([])).await;
    assert_eq!(v["result"]["qReturn"], "UserDirectory=DIR; UserId=alice");

    let v = call(
        &mut ws,
        10,
        1,
        "GetObject",
        json!({"qId": "sales-by-region"}),
    )
    .await;
    let h = v["result"]["qReturn"]["qHandle"].as_i64().expect("handle");
    let first = call(&mut ws, 11, h, "GetLayout", json!([])).await;
    let cube = &first["result"]["qLayout"]["qHyperCube"];
    assert_eq!(cube["qSize"], json!({"qcx": 3, "qcy": 4}));
    assert_eq!(cube["qDimensionInfo"][0]["qFallbackTitle"], "Region");
    assert_eq!(cube["qMeasureInfo"][0]["qFallbackTitle"], "Sales");
    let matrix = &cube["qDataPages"][0]["qMatrix"];
    assert_eq!(
        matrix[0][0],
        json!({"qText": "North", "qNum": "NaN", "qElemNumber": 0, "qState": "O"})
    );
    assert_eq!(matrix[0][1]["qNum"], 1500.0);
    let second = call(&mut ws, 12, h, "GetLayout", json!([])).await;
    assert_ne!(
        matrix[0][2], second["result"]["qLayout"]["qHyperCube"]["qDataPages"][0]["qMatrix"][0][2],
        "the live measure changes on every layout"
    );

    let props = json!({"qInfo": {"qType": "my-cube"}, "qHyperCubeDef": {
        "qDimensions": [{"qDef": {"qFieldDefs": ["Product"]}}],
        "qMeasures": [{"qDef": {"qDef": "Sum(Quantity)"}}],
        "qInitialDataFetch": [{"qLeft": 0, "qTop": 0, "qWidth": 2, "qHeight": 10}]}});
    let v = call(&mut ws, 13, 1, "CreateSessionObject", json!([props])).await;
    assert_eq!(v["result"]["qReturn"]["qType"], "GenericObject");
    let h2 = v["result"]["qReturn"]["qHandle"].as_i64().expect("handle");
    let v = call(&mut ws, 14, h2, "GetLayout", json!([])).await;
    let m = &v["result"]["qLayout"]["qHyperCube"]["qDataPages"][0]["qMatrix"];
    assert_eq!(m[0][0]["qText"], "Bikes");
    assert_eq!(m[0][1]["qNum"], 36.0);
    let v = call(
        &mut ws,
        15,
        h2,
        "GetHyperCubeData",
        json!(["/qHyperCubeDef", [{"qLeft": 1, "qTop": 1, "qWidth": 1, "qHeight": 2}]]),
    )
    .await;
    assert_eq!(
        v["result"]["qDataPages"][0]["qMatrix"],
        json!([
        [{"qText": "55", "qNum": 55.0, "qElemNumber": 0, "qState": "L"}],
        [{"qText": "85", "qNum": 85.0, "qElemNumber": 0, "qState": "L"}]])
    );

    let v = call(&mut ws, 16, -1, "NoSuchMethod", json!([])).await;
    assert_eq!(v["error"]["code"], -32601);
    let v = call(&mut ws, 17, 99, "GetLayout", json!([])).await;
    assert_eq!(v["error"]["code"], -32602);

    // Binary frames come back unchanged; a close frame is answered with the same code.
    ws.send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .expect("send");
    assert_eq!(
        next(&mut ws).await,
        Some(Message::Binary(vec![1u8, 2, 3].into()))
    );
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Library(4321),
        reason: "bye".into(),
    })))
    .await
    .expect("close");
    match next(&mut ws).await {
        Some(Message::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), 4321);
            assert_eq!(f.reason.as_str(), "bye");
        }
        other => panic!("expected the close echo, got {other:?}"),
    }
}

#[tokio::test]
async fn reconnect_attaches_to_the_engine_session() {
    let sim = start_default().await;
    let (sid, mut ws) = open_engine(&sim, "alice", SALES_APP_ID).await;
    next_json(&mut ws).await;
    next_json(&mut ws).await;
    call(&mut ws, 1, -1, "OpenDoc", json!([SALES_APP_ID])).await;
    ws.close(None).await.expect("close");
    let cookie = cookie(&sim, &sid);
    let token = csrf_token(&sim, &cookie).await;
    let mut ws = ws_connect(
        &sim,
        &format!("/mashup/app/{SALES_APP_ID}?qlik-csrf-token={token}"),
        Some(&sim.proxy_url()),
        Some(&cookie),
    )
    .await
    .expect("upgrade");
    next_json(&mut ws).await;
    assert_eq!(
        next_json(&mut ws).await["params"]["qSessionState"],
        "SESSION_ATTACHED"
    );
    let v = call(&mut ws, 2, -1, "GetActiveDoc", json!([])).await;
    assert_eq!(v["result"]["qReturn"]["qHandle"], 1);
}

#[tokio::test]
async fn no_session_gets_must_authenticate_then_close() {
    let sim = start_default().await;
    let mut ws = ws_connect(&sim, "/mashup/app/", Some(&sim.proxy_url()), None)
        .await
        .expect("upgrade without a session");
    let v = next_json(&mut ws).await;
    assert_eq!(v["method"], "OnAuthenticationInformation");
    assert_eq!(v["params"]["mustAuthenticate"], true);
    let login = v["params"]["loginUri"].as_str().expect("loginUri");
    assert!(login.starts_with(&format!(
        "{}/mashup/internal_windows_authentication/?targetUri=",
        sim.proxy_url()
    )));
    assert_eq!(closed(&mut ws).await, Some(1000));
    assert_eq!(sim.control().counters().ws_must_authenticate, 1);
}

#[tokio::test]
async fn keep_open_after_must_authenticate_denies_requests() {
    let sim = start(SimOptions {
        close_after_must_authenticate: false,
        auth_info_timing: AuthInfoTiming::AfterFirstFrame,
        ..SimOptions::default()
    })
    .await;
    let mut ws = ws_connect(&sim, "/mashup/app/", Some(&sim.proxy_url()), None)
        .await
        .expect("upgrade");
    let req =
        json!({"jsonrpc": "2.0", "id": 1, "method": "EngineVersion", "handle": -1, "params": []});
    ws.send(Message::Text(req.to_string().into()))
        .await
        .expect("send");
    // AfterFirstFrame: the notification comes only now, before the answer.
    assert_eq!(next_json(&mut ws).await["params"]["mustAuthenticate"], true);
    assert_eq!(next_json(&mut ws).await["error"]["code"], 5);
    let v = call(&mut ws, 2, -1, "EngineVersion", json!([])).await;
    assert_eq!(v["error"]["code"], 5);
}

#[tokio::test]
async fn expire_all_sessions_sends_on_session_timed_out_then_closes() {
    let sim = start_default().await;
    let (_sid, mut ws) = open_engine(&sim, "alice", SALES_APP_ID).await;
    next_json(&mut ws).await;
    next_json(&mut ws).await;
    // A round trip guarantees the socket is registered before expiring.
    call(&mut ws, 1, -1, "EngineVersion", json!([])).await;
    assert_eq!(sim.control().sessions()[0].open_websockets, 1);
    sim.control().expire_all_sessions();
    let v = next_json(&mut ws).await;
    assert_eq!(v["method"], "OnSessionTimedOut");
    assert_eq!(v["params"]["severity"], "fatal");
    assert_eq!(
        v["params"]["message"],
        "Session timed out due to inactivity"
    );
    assert!(v["params"]["timestamp"].as_str().expect("ts").contains('T'));
    assert!(closed(&mut ws).await.is_some());
    assert!(sim.control().sessions().is_empty());
    assert_eq!(sim.control().counters().sessions_expired, 1);
}

#[tokio::test]
async fn qps_delete_sends_on_session_logged_out() {
    let sim = start_default().await;
    let (sid, mut ws) = open_engine(&sim, "alice", SALES_APP_ID).await;
    next_json(&mut ws).await;
    next_json(&mut ws).await;
    call(&mut ws, 1, -1, "EngineVersion", json!([])).await;
    let (status, _) = qps(
        &sim,
        reqwest::Method::DELETE,
        &format!("session/{sid}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let v = next_json(&mut ws).await;
    assert_eq!(v["method"], "OnSessionLoggedOut");
    assert_eq!(v["params"]["message"], "User logged out manually");
    assert!(closed(&mut ws).await.is_some());
}

/// A simulator started with `opts` and an idle engine socket past its greeting; returns the
/// first message after that (waited for: nothing is sent on the socket).
async fn first_event_of_idle_socket(opts: SimOptions) -> (TestSim, Ws, Value) {
    let sim = start(opts).await;
    let (_sid, mut ws) = open_engine(&sim, "alice", SALES_APP_ID).await;
    next_json(&mut ws).await;
    next_json(&mut ws).await;
    let v = next_json(&mut ws).await;
    (sim, ws, v)
}

#[tokio::test]
async fn inactivity_timeout_expires_the_session() {
    let (sim, _ws, v) = first_event_of_idle_socket(SimOptions {
        inactivity_timeout: Duration::from_millis(300),
        ..SimOptions::default()
    })
    .await;
    assert_eq!(v["method"], "OnSessionTimedOut");
    assert!(sim.control().sessions().is_empty());
}

#[tokio::test]
async fn random_expiry_ends_sessions_like_a_timeout() {
    let (sim, mut ws, v) = first_event_of_idle_socket(SimOptions {
        random_expiry: Some(RandomExpiry {
            every: Duration::from_millis(100),
            fraction: 1.0,
        }),
        ..SimOptions::default()
    })
    .await;
    assert_eq!(v["method"], "OnSessionTimedOut");
    assert!(closed(&mut ws).await.is_some());
    assert!(sim.control().sessions().is_empty());
    assert_eq!(sim.control().counters().sessions_expired, 1);
}

#[tokio::test]
async fn ten_mib_sim_echo_round_trip() {
    let sim = start_default().await;
    let (_sid, mut ws) = open_engine(&sim, "alice", SALES_APP_ID).await;
    next_json(&mut ws).await;
    next_json(&mut ws).await;
    let big = "x".repeat(10 << 20);
    let v = call(&mut ws, 1, -1, "SimEcho", json!({"blob": big})).await;
    assert_eq!(
        v["result"]["qReturn"]["blob"].as_str().map(str::len),
        Some(10 << 20)
    );
    let v: Value = call(&mut ws, 2, -1, "SimEcho", json!([1, "two"])).await;
    assert_eq!(v["result"]["qReturn"], json!([1, "two"]));
}

#[tokio::test]
async fn ticket_on_the_websocket_url_without_csrf_requirement() {
    let sim = start(SimOptions {
        require_csrf_token: false,
        proxy_tls: false,
        ..SimOptions::default()
    })
    .await;
    let (_, body) = qps(
        &sim,
        reqwest::Method::POST,
        "ticket",
        Some(json!({"UserDirectory": "DIR", "UserId": "dave"})),
    )
    .await;
    let t = body["Ticket"].as_str().expect("ticket");
    let mut ws = ws_connect(
        &sim,
        &format!("/mashup/app/?QlikTicket={t}"),
        Some(&sim.proxy_url()),
        None,
    )
    .await
    .expect("upgrade");
    assert_eq!(next_json(&mut ws).await["params"]["userId"], "dave");
    assert_eq!(sim.control().sessions().len(), 1);
    let recorded = sim.control().requests();
    assert!(recorded
        .iter()
        .any(|r| r.websocket && r.path == "/mashup/app/"));
}

#[tokio::test]
async fn bare_app_path_redirects() {
    let sim = start_default().await;
    let resp = proxy_client(&sim)
        .get(format!("{}/mashup/app", sim.proxy_url()))
        .send()
        .await
        .expect("app");
    assert_eq!(resp.status().as_u16(), 301);
    assert_eq!(resp.headers()["location"], "/mashup/app/");
}

#[tokio::test]
async fn shutdown_closes_websockets_and_listeners() {
    let sim = start_default().await;
    let (_sid, mut ws) = open_engine(&sim, "alice", SALES_APP_ID).await;
    next_json(&mut ws).await;
    next_json(&mut ws).await;
    let proxy = sim.proxy_url();
    let authority = proxy.split("://").nth(1).expect("authority").to_string();
    let TestSim { sim, .. } = sim;
    sim.shutdown().await;
    assert_eq!(closed(&mut ws).await, Some(1001));
    assert!(tokio::net::TcpStream::connect(authority).await.is_err());
}

#[tokio::test]
async fn never_greeting_answers_calls_without_auth_information() {
    let sim = start(SimOptions {
        auth_info_timing: AuthInfoTiming::Never,
        ..SimOptions::default()
    })
    .await;
    let (_sid, mut ws) = open_engine(&sim, "alice", SALES_APP_ID).await;
    // The first frame Qlik sends is the answer to the first call: no greeting before it.
    for id in 1..=2 {
        let req = json!({"jsonrpc": "2.0", "id": id, "method": "EngineVersion", "handle": -1, "params": []});
        ws.send(Message::Text(req.to_string().into()))
            .await
            .expect("send");
        let v = next_json(&mut ws).await;
        assert_eq!(v["id"], id, "{v}");
        assert!(v["result"].is_object(), "{v}");
    }
}
