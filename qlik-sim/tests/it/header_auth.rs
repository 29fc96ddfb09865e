//! Header-authentication virtual proxy: static and dynamic header forms, sessions made from
//! the header (HTTP and engine websocket), US-ASCII only, options validation.

use crate::common::*;
use qlik_sim::{HeaderAuth, Sim, SimError, SimOptions, SALES_APP_ID};
use serde_json::{json, Value};

const STATIC_ALICE: &str = "UserDirectory=DIR; UserId=alice";

fn header_opts(auth: HeaderAuth) -> SimOptions {
    SimOptions {
        header_auth: Some(auth),
        ..SimOptions::default()
    }
}

async fn echo(
    sim: &Sim,
    header: Option<&[u8]>,
    cookie: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut req = proxy_client(sim).get(format!("{}/mashup/sim/echo", sim.proxy_url()));
    if let Some(h) = header {
        req = req.header(
            "hdr-usr",
            reqwest::header::HeaderValue::from_bytes(h).expect("value"),
        );
    }
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    let resp = req.send().await.expect("echo");
    let status = resp.status().as_u16();
    let set_cookie = set_cookie_pair(&resp);
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, set_cookie, body)
}

#[tokio::test]
async fn static_header_makes_and_reuses_sessions() {
    let sim = start(header_opts(HeaderAuth::static_form("hdr-usr"))).await;

    // Header, no cookie: served, and a session cookie like a ticket redemption.
    let (status, alice_cookie, body) = echo(&sim, Some(STATIC_ALICE.as_bytes()), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["user"],
        json!({"userDirectory": "DIR", "userId": "alice"})
    );
    let alice_cookie = alice_cookie.expect("Set-Cookie");
    let sessions = sim.control().sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        alice_cookie,
        format!("X-Qlik-Session-mashup={}", sessions[0].session_id)
    );
    let c = sim.control().counters();
    assert_eq!((c.header_sessions, c.sessions_created), (1, 1));

    // Header and the same user's cookie: that session, no new cookie.
    let (status, set_cookie, _) =
        echo(&sim, Some(STATIC_ALICE.as_bytes()), Some(&alice_cookie)).await;
    assert_eq!((status, set_cookie), (200, None));
    // The cookie alone works too.
    let (status, set_cookie, body) = echo(&sim, None, Some(&alice_cookie)).await;
    assert_eq!((status, set_cookie), (200, None));
    assert_eq!(body["user"]["userId"], "alice");
    assert_eq!(sim.control().sessions().len(), 1);

    // Header of another user with alice's cookie: a new session for bob.
    let bob = b"UserDirectory=DIR; UserId=bob";
    let (status, bob_cookie, body) = echo(&sim, Some(bob), Some(&alice_cookie)).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"]["userId"], "bob");
    let bob_cookie = bob_cookie.expect("a new cookie for bob");
    assert_ne!(bob_cookie, alice_cookie);
    let users: Vec<String> = sim
        .control()
        .sessions()
        .into_iter()
        .map(|s| s.user_id)
        .collect();
    assert_eq!(users.len(), 2);
    assert!(users.contains(&"alice".to_string()) && users.contains(&"bob".to_string()));

    // URL-encoded parts, any key case and order.
    let (status, _, body) = echo(
        &sim,
        Some(b"userid=j%C3%BCrgen%20k;UserDirectory=CORP%2DX"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["user"],
        json!({"userDirectory": "CORP-X", "userId": "jürgen k"})
    );

    // Neither header nor cookie: the login redirect.
    let (status, set_cookie, _) = echo(&sim, None, None).await;
    assert_eq!((status, set_cookie), (302, None));
    // A header naming no user counts as absent.
    for bad in [
        &b"alice"[..],
        b"UserDirectory=DIR",
        b"UserDirectory=D\\X; UserId=a",
    ] {
        let (status, set_cookie, _) = echo(&sim, Some(bad), None).await;
        assert_eq!((status, set_cookie), (302, None), "{bad:?}");
    }
    // Not US-ASCII: 400, even with a valid cookie.
    let (status, set_cookie, _) = echo(
        &sim,
        Some(b"UserDirectory=DIR; UserId=j\xfcrgen"),
        Some(&alice_cookie),
    )
    .await;
    assert_eq!((status, set_cookie), (400, None));
    assert_eq!(sim.control().counters().header_rejected, 4);

    // The header is recorded like any other.
    assert!(sim
        .control()
        .requests()
        .iter()
        .any(|r| r.headers.get("hdr-usr") == Some(&vec![STATIC_ALICE.to_string()])));
}

#[tokio::test]
async fn each_cookieless_header_request_makes_a_session() {
    let sim = start(header_opts(HeaderAuth::static_form("hdr-usr"))).await;
    for _ in 0..3 {
        let (status, cookie, _) = echo(&sim, Some(STATIC_ALICE.as_bytes()), None).await;
        assert_eq!(status, 200);
        assert!(cookie.is_some());
    }
    assert_eq!(sim.control().sessions().len(), 3);
    // The Personal API sees the header's user.
    let resp = proxy_client(&sim)
        .get(format!("{}/mashup/qps/user", sim.proxy_url()))
        .header("hdr-usr", STATIC_ALICE)
        .send()
        .await
        .expect("personal");
    assert_eq!(resp.json::<Value>().await.expect("json")["userId"], "alice");
}

#[tokio::test]
async fn dynamic_patterns() {
    // Qlik's notation `$ud\\$id`: the doubled backslash is one literal backslash.
    let sim = start(header_opts(HeaderAuth::dynamic("hdr-usr", "$ud\\\\$id"))).await;
    let (status, cookie, body) = echo(&sim, Some(b"CORP\\alice"), None).await;
    assert_eq!(status, 200);
    assert!(cookie.is_some());
    assert_eq!(
        body["user"],
        json!({"userDirectory": "CORP", "userId": "alice"})
    );
    for bad in [
        &b"alice"[..],
        b"CORP\\\\alice",
        b"\\alice",
        b"CORP\\",
        STATIC_ALICE.as_bytes(),
    ] {
        assert_eq!(echo(&sim, Some(bad), None).await.0, 302, "{bad:?}");
    }
    assert_eq!(echo(&sim, Some(b"CORP\\al\xe9"), None).await.0, 400);
    let TestSim { sim, .. } = sim;
    sim.shutdown().await;

    let sim = start(header_opts(HeaderAuth::dynamic("hdr-usr", "$id@$ud"))).await;
    let (status, _, body) = echo(&sim, Some(b"first.last@CORP"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["user"],
        json!({"userDirectory": "CORP", "userId": "first.last"})
    );
}

#[tokio::test]
async fn engine_websocket_with_the_header() {
    let sim = start(header_opts(HeaderAuth::static_form("hdr-usr"))).await;
    let carol = "UserDirectory=DIR; UserId=carol";
    let path = format!("/mashup/app/{SALES_APP_ID}");
    // No cookie: the upgrade makes the session (no CSRF token can exist for it yet).
    let (mut ws, resp) = proxy_ws(&sim, &path, &[("hdr-usr", carol)])
        .await
        .expect("upgrade with the header");
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    let auth = next_json(&mut ws).await;
    assert_eq!(auth["method"], "OnAuthenticationInformation");
    assert_eq!(auth["params"]["mustAuthenticate"], false);
    assert_eq!(auth["params"]["userId"], "carol");
    assert_eq!(
        next_json(&mut ws).await["params"]["qSessionState"],
        "SESSION_CREATED"
    );
    let v = call(&mut ws, 1, -1, "GetAuthenticatedUser", json!([])).await;
    assert_eq!(v["result"]["qReturn"], "UserDirectory=DIR; UserId=carol");
    call(&mut ws, 2, -1, "OpenDoc", json!([SALES_APP_ID])).await;
    let sessions = sim.control().sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].user_id, "carol");
    assert_eq!(sessions[0].open_websockets, 1);
    assert_eq!(cookie, cookie_of(&sessions[0].session_id));

    // Header plus that session's cookie: the existing session, which needs its CSRF token.
    let err = proxy_ws(
        &sim,
        &path,
        &[("hdr-usr", carol), ("Cookie", cookie.as_str())],
    )
    .await
    .err()
    .expect("no token");
    assert_eq!(refused_status(err), 403);
    let token = csrf_token(&sim, &cookie).await;
    let (mut ws2, resp) = proxy_ws(
        &sim,
        &format!("{path}?qlik-csrf-token={token}"),
        &[("hdr-usr", carol), ("Cookie", cookie.as_str())],
    )
    .await
    .expect("upgrade with header, cookie and token");
    assert!(resp.headers().get("set-cookie").is_none());
    next_json(&mut ws2).await;
    assert_eq!(
        next_json(&mut ws2).await["params"]["qSessionState"],
        "SESSION_ATTACHED"
    );
    assert_eq!(sim.control().sessions().len(), 1);
    assert_eq!(sim.control().counters().header_sessions, 1);
}

fn cookie_of(session_id: &str) -> String {
    format!("X-Qlik-Session-mashup={session_id}")
}

#[tokio::test]
async fn non_ascii_header_on_the_websocket_is_400() {
    let sim = start(header_opts(HeaderAuth::static_form("hdr-usr"))).await;
    let path = format!("/mashup/app/{SALES_APP_ID}");
    let err = proxy_ws(
        &sim,
        &path,
        &[("hdr-usr", "UserDirectory=DIR; UserId=jürgen")],
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(refused_status(err), 400);
    // Without any credentials the socket gets mustAuthenticate, as on any virtual proxy.
    let (mut ws, _) = proxy_ws(&sim, &path, &[]).await.expect("upgrade");
    assert_eq!(next_json(&mut ws).await["params"]["mustAuthenticate"], true);
}

#[tokio::test]
async fn header_is_ignored_without_header_auth() {
    let sim = start_default().await;
    let (status, cookie, _) = echo(&sim, Some(STATIC_ALICE.as_bytes()), None).await;
    assert_eq!((status, cookie), (302, None));
    assert!(sim.control().sessions().is_empty());
}

#[tokio::test]
async fn invalid_header_options_are_refused() {
    install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in [
        HeaderAuth::static_form("X-Qlik-User"),
        HeaderAuth::static_form("my-x-qlik-security-hdr"),
        HeaderAuth::static_form("bad header"),
        HeaderAuth::dynamic("hdr-usr", "$ud"),
        HeaderAuth::dynamic("hdr-usr", "$ud$id"),
    ] {
        match Sim::start(header_opts(bad.clone()), dir.path()).await {
            Err(SimError::Options(_)) => {}
            Err(e) => panic!("{bad:?}: unexpected error {e}"),
            Ok(_) => panic!("{bad:?} accepted"),
        }
    }
}
