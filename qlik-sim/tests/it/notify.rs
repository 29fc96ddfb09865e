//! Proxy messages on demand (`SimControl::notify*`, `POST /control/notify`): the documented
//! methods and messages, closing, ending the session or not, per user.

use crate::common::*;
use qlik_sim::{Sim, SimOptions, SALES_APP_ID};
use serde_json::{json, Value};

/// An engine websocket for DIR\`user`, past its greeting and registered.
async fn ready_engine(sim: &Sim, user: &str) -> (String, Ws) {
    let (sid, mut ws) = open_engine(sim, user, SALES_APP_ID).await;
    next_json(&mut ws).await;
    next_json(&mut ws).await;
    // A round trip guarantees the socket is registered.
    call(&mut ws, 1000, -1, "EngineVersion", json!([])).await;
    (sid, ws)
}

/// The status of `GET /mashup/hub/` with the session's cookie (200, or 302 when it is gone).
async fn hub_status(sim: &Sim, sid: &str) -> u16 {
    proxy_client(sim)
        .get(format!("{}/mashup/hub/", sim.proxy_url()))
        .header("Cookie", cookie(sim, sid))
        .send()
        .await
        .expect("hub")
        .status()
        .as_u16()
}

fn assert_fatal(v: &Value, method: &str, message: Option<&str>) {
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["method"], method);
    assert!(v.get("id").is_none());
    let params = v["params"].as_object().expect("params");
    assert_eq!(params["severity"], "fatal");
    let ts = params["timestamp"].as_str().expect("timestamp");
    assert!(ts.contains('T') && ts.ends_with('Z'), "{ts}");
    match message {
        Some(m) => assert_eq!(params["message"], m, "{method}"),
        None => assert!(!params.contains_key("message"), "{method}: {params:?}"),
    }
    assert_eq!(
        params.len(),
        2 + usize::from(message.is_some()),
        "{params:?}"
    );
}

#[tokio::test]
async fn every_documented_method() {
    let cases = [
        (
            "OnSessionTimedOut",
            Some("Session timed out due to inactivity"),
            true,
        ),
        ("OnSessionClosed", Some("Session closed by server"), true),
        ("OnSessionLoggedOut", Some("User logged out manually"), true),
        ("OnNoEngineAvailable", None, false),
        ("OnMaxParallelSessionsExceeded", None, false),
        (
            "OnLicenseAccessDenied",
            Some("Access to the app is denied: No available access type"),
            false,
        ),
        (
            "OnEngineWebsocketFailed",
            Some("Connection to Qlik service failed, shutting down"),
            false,
        ),
        (
            "OnRepositoryWebsocketFailed",
            Some("Connection to Qlik service failed, shutting down"),
            false,
        ),
    ];
    let sim = start_default().await;
    for (method, message, ends) in cases {
        let (sid, mut ws) = ready_engine(&sim, "alice").await;
        assert_eq!(hub_status(&sim, &sid).await, 200);
        let n = sim.control().notify(method, true).expect("known method");
        assert_eq!(n, 1, "{method}");
        assert_fatal(&next_json(&mut ws).await, method, message);
        assert_eq!(closed(&mut ws).await, Some(1000), "{method}");
        if ends {
            assert!(
                sim.control().sessions().iter().all(|s| s.session_id != sid),
                "{method} ends the session"
            );
            assert_eq!(hub_status(&sim, &sid).await, 302, "{method}");
        } else {
            assert!(
                sim.control().sessions().iter().any(|s| s.session_id == sid),
                "{method} leaves the session"
            );
            assert_eq!(hub_status(&sim, &sid).await, 200, "{method}");
        }
    }
    let c = sim.control().counters();
    assert_eq!(c.notifications_sent, 8);
    assert_eq!((c.sessions_expired, c.sessions_deleted), (1, 2));
}

#[tokio::test]
async fn without_close_the_socket_stays_open() {
    let sim = start_default().await;
    let (sid, mut ws) = ready_engine(&sim, "alice").await;
    sim.control()
        .notify("OnLicenseAccessDenied", false)
        .expect("known");
    assert_fatal(
        &next_json(&mut ws).await,
        "OnLicenseAccessDenied",
        Some("Access to the app is denied: No available access type"),
    );
    let v = call(&mut ws, 1, -1, "EngineVersion", json!([])).await;
    assert_eq!(v["result"]["qVersion"]["qComponentVersion"], "12.2027.0");
    // A session-ending message without close: the session is gone, the socket is not.
    sim.control()
        .notify("OnSessionTimedOut", false)
        .expect("known");
    assert_eq!(next_json(&mut ws).await["method"], "OnSessionTimedOut");
    assert_eq!(hub_status(&sim, &sid).await, 302);
    let v = call(&mut ws, 2, -1, "EngineVersion", json!([])).await;
    assert!(v.get("result").is_some());
}

#[tokio::test]
async fn notify_user_reaches_only_that_user() {
    let sim = start(SimOptions {
        close_after_must_authenticate: false,
        ..SimOptions::default()
    })
    .await;
    let (alice_sid, mut alice) = ready_engine(&sim, "alice").await;
    let (bob_sid, mut bob) = ready_engine(&sim, "bob").await;
    let (bob2_sid, mut bob2) = ready_engine(&sim, "BOB").await;
    let mut anonymous = ws_connect(&sim, "/mashup/app/", Some(&sim.proxy_url()), None)
        .await
        .expect("upgrade");
    assert_eq!(
        next_json(&mut anonymous).await["params"]["mustAuthenticate"],
        true
    );
    call(&mut anonymous, 1, -1, "EngineVersion", json!([])).await;

    let n = sim
        .control()
        .notify_user("dir", "bob", "OnSessionClosed", true)
        .expect("known");
    assert_eq!(n, 2);
    for ws in [&mut bob, &mut bob2] {
        assert_fatal(
            &next_json(ws).await,
            "OnSessionClosed",
            Some("Session closed by server"),
        );
        assert_eq!(closed(ws).await, Some(1000));
    }
    assert_eq!(hub_status(&sim, &bob_sid).await, 302);
    assert_eq!(hub_status(&sim, &bob2_sid).await, 302);
    assert_eq!(hub_status(&sim, &alice_sid).await, 200);
    let v = call(&mut alice, 1, -1, "EngineVersion", json!([])).await;
    assert!(v.get("result").is_some(), "alice's socket is untouched");

    // notify (everyone) includes sockets without a session.
    assert_eq!(
        sim.control()
            .notify("OnNoEngineAvailable", true)
            .expect("known"),
        2
    );
    for ws in [&mut alice, &mut anonymous] {
        assert_fatal(&next_json(ws).await, "OnNoEngineAvailable", None);
        assert_eq!(closed(ws).await, Some(1000));
    }
    assert_eq!(hub_status(&sim, &alice_sid).await, 200);
}

#[tokio::test]
async fn unknown_methods_and_the_control_api() {
    let sim = start_default().await;
    let err = sim
        .control()
        .notify("OnSomethingElse", true)
        .expect_err("unknown");
    assert_eq!(err.method, "OnSomethingElse");
    assert!(err.known.contains("OnSessionTimedOut"));
    // Nobody connected: nothing sent, but the session still ends.
    let sid = add_session(&sim, "alice").await;
    assert_eq!(
        sim.control()
            .notify("OnSessionLoggedOut", true)
            .expect("known"),
        0
    );
    assert_eq!(hub_status(&sim, &sid).await, 302);

    let (sid, mut ws) = ready_engine(&sim, "alice").await;
    let client = reqwest::Client::new();
    let base = format!("{}/control/notify", sim.control_url());
    let resp = client
        .post(format!(
            "{base}?method=OnSessionTimedOut&userDirectory=DIR&userId=alice"
        ))
        .send()
        .await
        .expect("notify");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"method": "OnSessionTimedOut", "close": true, "notified": 1})
    );
    assert_eq!(next_json(&mut ws).await["method"], "OnSessionTimedOut");
    assert_eq!(closed(&mut ws).await, Some(1000));
    assert_eq!(hub_status(&sim, &sid).await, 302);
    for bad in [
        "method=Nope".to_string(),
        String::new(),
        "method=OnSessionClosed&close=maybe".to_string(),
        "method=OnSessionClosed&userId=alice".to_string(),
    ] {
        let resp = client
            .post(format!("{base}?{bad}"))
            .send()
            .await
            .expect("notify");
        assert_eq!(resp.status().as_u16(), 400, "{bad}");
    }
    let resp = client
        .post(format!("{base}?method=OnNoEngineAvailable&close=false"))
        .send()
        .await
        .expect("notify");
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"method": "OnNoEngineAvailable", "close": false, "notified": 0})
    );
}
