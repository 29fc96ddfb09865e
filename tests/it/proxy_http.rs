//! Plain HTTP through the Qlik mount, against qlik-sim: one Qlik session per user however many
//! requests race for it, what reaches Qlik (and what never does), what comes back from Qlik,
//! large bodies streamed both ways, recovery from a Qlik session Qlik lost, and both QPS reply
//! casings.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use futures_util::StreamExt;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use qlik_sim::{Casing, SimOptions};
use serde_json::Value;

/// 64 MiB: larger than any buffer the gateway could reasonably hold per request.
const BIG: u64 = 64 << 20;

/// A safety net so a broken gateway fails the test instead of hanging it; never a synchronisation.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// `host:port` of the simulated Qlik proxy, as its `Host` header should read.
fn sim_host(env: &Env) -> String {
    env.sim()
        .proxy_url()
        .split_once("://")
        .expect("proxy url has a scheme")
        .1
        .to_string()
}

/// GET `path` with the cookie and returns the echo JSON (asserting a 200).
async fn echo(env: &Env, path: &str, cookie: &str) -> Value {
    let r = env.get(path, cookie).await;
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.expect("echo JSON")
}

/// The values of one header as Qlik received it.
fn header<'a>(echo: &'a Value, name: &str) -> Vec<&'a str> {
    echo["headers"][name]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn parallel_first_requests_create_one_qlik_session() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let c = http_client();
    let requests = (0..20).map(|_| {
        c.get(format!("{}/mashup/sim/echo", env.url))
            .header("cookie", &cookie)
            .header("accept", "application/json")
            .send()
    });
    let responses = within(
        "20 parallel requests",
        futures_util::future::join_all(requests),
    )
    .await;
    for r in responses {
        let r = r.expect("request");
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["user"]["userId"], "alice");
    }
    assert_eq!(
        env.sim().control().counters().sessions_created,
        1,
        "a burst of first requests must not create a burst of Qlik sessions"
    );
    assert_eq!(env.sim().control().sessions().len(), 1);
    env.stop().await;
}

#[tokio::test]
async fn the_browser_cannot_choose_its_qlik_identity_or_see_hop_headers_forwarded() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let gateway_cookie_name = cookie.split('=').next().unwrap().to_string();
    let r = http_client()
        .get(format!("{}/mashup/sim/echo", env.url))
        .header(
            "cookie",
            format!(
                "{cookie}; X-Qlik-Session-mashup=forged; X-Qlik-Session=forged2; x-qlik-session-xyz=forged3; keep=1"
            ),
        )
        .header("x-qlik-user", "UserDirectory=EVIL; UserId=admin")
        .header("X-Qlik-Xrfkey", "0123456789abcdef")
        .header("authorization", "Bearer forged.jwt.token")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-host", "evil.example")
        .header("connection", "x-custom")
        .header("x-custom", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-harmless", "stays")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let headers = v["headers"].as_object().unwrap();

    // Identity: only the gateway's choice reaches Qlik.
    assert_eq!(v["user"]["userDirectory"], "DEV");
    assert_eq!(v["user"]["userId"], "alice");
    // X-Qlik-Xrfkey is Qlik's anti-CSRF key, not an identity: it passes (see qrs_about test).
    for name in headers.keys() {
        assert!(
            !name.starts_with("x-qlik-") || name == "x-qlik-xrfkey",
            "client {name} reached Qlik: {v}"
        );
    }
    assert!(headers.get("authorization").is_none(), "{v}");
    let real = &env.sim().control().sessions()[0].session_id;
    let cookie_header = header(&v, "cookie").join("; ");
    assert!(!cookie_header.contains("forged"), "{cookie_header}");
    let qlik_cookies: Vec<&str> = cookie_header
        .split(';')
        .map(str::trim)
        .filter(|c| c.to_ascii_lowercase().starts_with("x-qlik-session"))
        .collect();
    assert_eq!(
        qlik_cookies,
        [format!("X-Qlik-Session-mashup={real}")],
        "exactly the server-side Qlik session cookie"
    );
    assert!(
        v["cookies"].get(&gateway_cookie_name).is_none(),
        "the gateway's own cookie stays at the gateway: {cookie_header}"
    );
    assert_eq!(v["cookies"]["keep"], "1");
    assert_eq!(header(&v, "x-harmless"), ["stays"]);

    // Forwarding headers are the gateway's, not the client's.
    assert_eq!(header(&v, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header(&v, "x-forwarded-proto"), ["http"]);
    assert_eq!(header(&v, "x-forwarded-host"), [env.addr.to_string()]);
    assert_eq!(header(&v, "host"), [sim_host(&env)]);

    // Hop-by-hop headers, including those the client listed in Connection, end at the gateway.
    for hop in ["x-custom", "keep-alive", "proxy-authorization"] {
        assert!(headers.get(hop).is_none(), "{hop} was forwarded: {v}");
    }
    assert!(
        header(&v, "connection")
            .iter()
            .all(|c| !c.contains("x-custom")),
        "{v}"
    );
    env.stop().await;
}

#[tokio::test]
async fn the_trusted_identity_header_never_reaches_qlik() {
    let env = Env::with(Setup {
        auth: Some(
            "[auth]\nprovider = \"trusted_header\"\n[auth.trusted_header]\nheader = \"X-Remote-User\"\ntrusted_proxies = [\"127.0.0.1/32\"]\nuser_directory = \"CORP\"\n"
                .into(),
        ),
        ..Default::default()
    })
    .await;
    let c = http_client();
    let login = c
        .get(format!("{}/_gateway/login", env.url))
        .header("x-remote-user", "CORP\\bob")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 302);
    let cookie = cookie_from(&login).unwrap();
    // The front proxy sends the header on every request, not only at login.
    let r = c
        .get(format!("{}/mashup/sim/echo", env.url))
        .header("cookie", &cookie)
        .header("x-remote-user", "CORP\\bob")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["user"]["userDirectory"], "CORP");
    assert_eq!(v["user"]["userId"], "bob");
    assert!(
        v["headers"].get("x-remote-user").is_none(),
        "identity header forwarded: {v}"
    );
    env.stop().await;
}

#[tokio::test]
async fn qlik_session_cookies_are_kept_server_side_and_others_pass() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let r = env.get("/mashup/sim/setcookie", &cookie).await;
    assert_eq!(r.status(), 200);
    let set = set_cookies(&r);
    assert!(
        set.iter()
            .all(|c| !c.to_ascii_lowercase().starts_with("x-qlik-session")),
        "the Qlik session cookie reached the browser: {set:?}"
    );
    assert!(
        set.iter()
            .any(|c| c.starts_with("sim-pref=1") && c.contains("Path=/mashup")),
        "Qlik's other cookies pass, under the mount: {set:?}"
    );
    let v = echo(&env, "/mashup/sim/echo", &cookie).await;
    assert_eq!(v["user"]["userId"], "alice", "still authenticated");
    assert_eq!(env.sim().control().counters().sessions_created, 1);
    env.stop().await;
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_qlik_session_made_by_something_else_never_takes_over_the_gateway_session() {
    let env = Env::start().await;
    let cookie = env.login().await;
    assert_eq!(
        echo(&env, "/mashup/sim/echo", &cookie).await["user"]["userId"],
        "alice"
    );
    // Qlik answers with the session cookie of a session of another user, as it would after
    // authenticating a request some other way (a ticket, another module).
    let r = env
        .get("/mashup/sim/setcookie?as=DEV%5Cmallory", &cookie)
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        set_cookies(&r)
            .iter()
            .all(|c| !c.to_ascii_lowercase().starts_with("x-qlik-session")),
        "{:?}",
        set_cookies(&r)
    );
    let v = echo(&env, "/mashup/sim/echo", &cookie).await;
    assert_eq!(v["user"]["userDirectory"], "DEV");
    assert_eq!(
        v["user"]["userId"], "alice",
        "Qlik now serves another user: {v}"
    );
    env.stop().await;
}

#[tokio::test]
async fn cookies_qlik_sets_stay_under_the_mount_and_never_replace_the_gateways() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let name = cookie.split('=').next().unwrap().to_string();
    for (sent, expect) in [
        (
            "pref=2; Path=/; Domain=qlik.internal".to_string(),
            Some("pref=2; Path=/mashup"),
        ),
        ("lang=en".to_string(), Some("lang=en; Path=/mashup")),
        (format!("{name}=forged; Path=/"), None),
        ("__Host-wide=1; Path=/; Secure".to_string(), None),
    ] {
        let q = utf8_percent_encode(&sent, NON_ALPHANUMERIC);
        let r = env
            .get(&format!("/mashup/sim/setcookie?cookie={q}"), &cookie)
            .await;
        assert_eq!(r.status(), 200);
        let set = set_cookies(&r);
        let first = sent.split('=').next().unwrap();
        let got: Vec<_> = set
            .iter()
            .filter(|c| c.starts_with(&format!("{first}=")))
            .collect();
        match expect {
            Some(e) => assert_eq!(got, [e], "{sent}: {set:?}"),
            None => assert!(got.is_empty(), "{sent} reached the browser: {set:?}"),
        }
    }
    // The gateway session is untouched by the forged cookie.
    assert_eq!(
        echo(&env, "/mashup/sim/echo", &cookie).await["user"]["userId"],
        "alice"
    );
    env.stop().await;
}

#[tokio::test]
async fn qlik_answers_are_private_to_the_user_unless_qlik_says_otherwise() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let r = env.get("/mashup/sim/echo", &cookie).await;
    assert_eq!(r.headers()["cache-control"], "private");
    let r = env
        .get("/mashup/resources/autogenerated/qlik-styles.css", &cookie)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "public, max-age=3600");
    env.stop().await;
}

#[tokio::test]
async fn redirects_from_qlik_point_at_the_gateway() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let r = env.get("/mashup/sim/redirect?to=/hub/", &cookie).await;
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap();
    assert_eq!(loc, format!("{}/mashup/hub/", env.url));
    assert!(!loc.contains(&sim_host(&env)), "{loc}");
    env.stop().await;
}

#[tokio::test]
async fn large_downloads_stream_intact() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let mut r = env
        .get(&format!("/mashup/sim/bytes?n={BIG}"), &cookie)
        .await;
    assert_eq!(r.status(), 200);
    let mut offset: u64 = 0;
    within("64 MiB download", async {
        while let Some(chunk) = r.chunk().await.expect("body chunk") {
            for (i, b) in chunk.iter().enumerate() {
                let at = offset + i as u64;
                assert_eq!(*b, (at % 251) as u8, "byte {at} corrupted");
            }
            offset += chunk.len() as u64;
        }
    })
    .await;
    assert_eq!(offset, BIG);
    env.stop().await;
}

#[tokio::test]
async fn large_uploads_stream_through() {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let env = Env::start().await;
    let cookie = env.login().await;
    // A chunked body produced on the fly: the gateway must pass it on without a Content-Length.
    const CHUNK: u64 = 1 << 20;
    let chunks = futures_util::stream::iter(0..BIG / CHUNK)
        .map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![7u8; CHUNK as usize]))));
    let req = http::Request::post(format!("{}/mashup/sim/echo", env.url))
        .header("cookie", &cookie)
        .header("accept", "application/json")
        .header("content-type", "application/octet-stream")
        .body(StreamBody::new(chunks))
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = within("64 MiB upload", client.request(req))
        .await
        .expect("upload");
    assert_eq!(resp.status(), 200);
    let body = within(
        "echo body",
        http_body_util::BodyExt::collect(resp.into_body()),
    )
    .await
    .unwrap()
    .to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["body_len"], BIG);
    env.stop().await;
}

#[tokio::test]
async fn a_qlik_session_qlik_lost_is_recreated_transparently() {
    let env = Env::start().await;
    let cookie = env.login().await;
    echo(&env, "/mashup/sim/echo", &cookie).await;
    let first = env.sim().control().sessions()[0].session_id.clone();
    env.sim().control().expire_all_sessions();
    let v = echo(&env, "/mashup/sim/echo", &cookie).await;
    assert_eq!(v["user"]["userId"], "alice");
    assert_eq!(env.sim().control().counters().sessions_created, 2);
    let sessions = env.sim().control().sessions();
    assert_eq!(sessions.len(), 1);
    assert_ne!(sessions[0].session_id, first);
    // And the new one sticks: no third session for the next request.
    echo(&env, "/mashup/sim/echo", &cookie).await;
    assert_eq!(env.sim().control().counters().sessions_created, 2);
    env.stop().await;
}

#[tokio::test]
async fn without_a_session_qlik_paths_go_to_the_login_and_nothing_reaches_qlik() {
    let env = Env::start().await;
    let c = http_client();
    let nav = c
        .get(format!("{}/mashup/hub/", env.url))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(nav.status(), 302);
    assert_eq!(
        nav.headers()["location"],
        "/_gateway/login?return_to=%2Fmashup%2Fhub%2F"
    );
    let api = c
        .get(format!("{}/mashup/sim/echo", env.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    let v: Value = api.json().await.unwrap();
    assert_eq!(
        v["login_url"],
        "/_gateway/login?return_to=%2Fmashup%2Fsim%2Fecho"
    );
    let counters = env.sim().control().counters();
    assert_eq!(counters.proxy_requests, 0);
    assert_eq!(counters.qps_requests, 0);
    env.stop().await;
}

#[tokio::test]
async fn both_qps_reply_casings_work() {
    for casing in [Casing::Pascal, Casing::Camel] {
        let env = Env::with(Setup {
            sim: SimOptions {
                reply_casing: casing,
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
        let cookie = env.login().await;
        let v = echo(&env, "/mashup/sim/echo", &cookie).await;
        assert_eq!(v["user"]["userId"], "alice", "{casing:?}");
        assert_eq!(
            env.sim().control().counters().sessions_created,
            1,
            "{casing:?}"
        );
        env.stop().await;
    }
}

#[tokio::test]
async fn a_request_body_sent_into_a_lost_qlik_session_is_asked_for_again() {
    let env = Env::start().await;
    let cookie = env.login().await;
    echo(&env, "/mashup/sim/echo", &cookie).await;
    env.sim().control().expire_all_sessions();
    let post = || {
        http_client()
            .post(format!("{}/mashup/sim/echo", env.url))
            .header("cookie", &cookie)
            .header("accept", "application/json")
            .body("payload")
            .send()
    };
    // The body went to Qlik and is gone: the gateway cannot replay it, so it says so.
    let r = post().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "0");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "qlik_session_renewed");
    let r = post().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "the repeat goes through on the new session"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["body_len"], 7);
    assert_eq!(env.sim().control().counters().sessions_created, 2);
    env.stop().await;
}

/// Sends `GET {target}` byte for byte over a raw socket (reqwest would normalise the path) and
/// returns the status and body.
async fn raw_get(env: &Env, target: &str, cookie: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = env.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn paths_that_would_leave_the_virtual_proxy_at_qlik_are_refused_before_qlik() {
    let env = Env::start().await;
    let cookie = env.login().await;
    // Log in and make one request, so the Qlik session exists and the counter is settled.
    let _ = echo(&env, "/mashup/sim/echo", &cookie).await;
    let before = env.sim().control().counters();
    for target in [
        "/mashup/%2e%2e/secret",
        "/mashup/.%2E/x",
        "/mashup/%2e%2e%5cx",
        "/mashup/..\\x",
        "/mashup/..%2f..%2fadmin",
        "/mashup/../hub/",
        "/mashup/sim/%252e%252e/x",
        "/mashup/sim/a%00b",
        "/mashup/%c0%ae%c0%ae/x",
        "/mashup/%u002e%u002e/x",
    ] {
        let (status, body) = raw_get(&env, target, &cookie).await;
        assert_eq!(status, 400, "{target}: {body}");
        assert!(body.contains("path_refused"), "{target}: {body}");
    }
    let after = env.sim().control().counters();
    assert_eq!(
        serde_json::to_value(&before).unwrap(),
        serde_json::to_value(&after).unwrap(),
        "a refused path must not reach Qlik"
    );
    // Plain paths pass, and an escape in the query is not a path.
    let (status, body) = raw_get(&env, "/mashup/sim/echo?a=%2e%2e", &cookie).await;
    assert_eq!(status, 200, "{body}");
    env.stop().await;
}

#[tokio::test]
async fn a_client_sent_qlik_ticket_never_reaches_qlik() {
    let env = Env::start().await;
    let cookie = env.login().await;
    for q in [
        "qlikTicket=abc",
        "QlikTicket=abc&keep=1",
        "keep=1&QLIKTICKET=abc",
        "qlik%54icket=abc&keep=1",
    ] {
        let v = echo(&env, &format!("/mashup/sim/echo?{q}"), &cookie).await;
        let query = v["query"].as_str().unwrap_or("");
        assert!(
            !query.to_ascii_lowercase().contains("ticket"),
            "{q} reached Qlik as {query:?}"
        );
        if q.contains("keep") {
            assert_eq!(query, "keep=1", "{q}");
        }
    }
    env.stop().await;
}

/// A request to sim/echo with the client's own `qlik-csrf-token` header.
async fn echo_with_csrf(
    env: &Env,
    method: reqwest::Method,
    cookie: &str,
    token: Option<&str>,
) -> Value {
    let mut req = http_client()
        .request(method, format!("{}/mashup/sim/echo", env.url))
        .header("cookie", cookie)
        .header("accept", "application/json");
    if let Some(t) = token {
        req = req.header("qlik-csrf-token", t);
    }
    let r = req.send().await.expect("request");
    assert_eq!(r.status(), 200);
    r.json().await.expect("echo JSON")
}

#[tokio::test]
async fn a_client_csrf_header_is_replaced_by_the_injected_sessions() {
    let env = Env::start().await;
    let cookie = env.login().await;
    // @qlik/api sends its token on modifying verbs; the gateway's replaces it.
    let v = echo_with_csrf(&env, reqwest::Method::POST, &cookie, Some("stale")).await;
    assert_eq!(v["csrfToken"], "valid", "{v}");
    assert_eq!(header(&v, "qlik-csrf-token").len(), 1, "{v}");
    // Without one, none is added.
    let v = echo_with_csrf(&env, reqwest::Method::GET, &cookie, None).await;
    assert_eq!(v["csrfToken"], "absent", "{v}");

    // After Qlik lost the session, the token is the new session's.
    env.sim().control().expire_all_sessions();
    let v = echo_with_csrf(&env, reqwest::Method::GET, &cookie, Some("stale")).await;
    assert_eq!(v["csrfToken"], "valid", "{v}");
    let v = echo_with_csrf(&env, reqwest::Method::PUT, &cookie, Some("older")).await;
    assert_eq!(v["csrfToken"], "valid", "{v}");
    env.stop().await;
}

#[tokio::test]
async fn qps_user_names_the_gateway_and_survives_a_lost_qlik_session() {
    let env = Env::start().await;
    let cookie = env.login().await;
    for round in ["live", "after Qlik lost the session"] {
        let r = env.get("/mashup/qps/user", &cookie).await;
        assert_eq!(r.status(), 200, "{round}");
        let len: usize = r.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len(), len, "{round}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["userId"], "alice", "{round}: {v}");
        assert_eq!(
            v["logoutUri"],
            format!("{}/mashup/qps/user", env.url),
            "{round}: {v}"
        );
        env.sim().control().expire_all_sessions();
    }
    env.stop().await;
}

#[tokio::test]
async fn refresh_and_content_location_name_the_gateway() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let r = env.get("/mashup/sim/refresh", &cookie).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["refresh"],
        format!("5; url={}/mashup/hub/", env.url).as_str()
    );
    assert_eq!(
        r.headers()["content-location"],
        format!("{}/mashup/sim/echo", env.url).as_str()
    );
    env.stop().await;
}

/// The Capability API's and `@qlik/api`'s QRS calls: Qlik checks that `X-Qlik-Xrfkey` equals
/// `?xrfkey=` (anti-CSRF, no identity), so the pair must reach it intact, with the user's session.
#[tokio::test]
async fn a_qrs_call_with_its_xrfkey_pair_reaches_qlik_intact() {
    let env = Env::start().await;
    let cookie = env.login().await;
    const K: &str = "Ab3dEf6hIj9lMn0p";
    let r = http_client()
        .get(format!("{}/mashup/qrs/about?xrfkey={K}", env.url))
        .header("cookie", &cookie)
        .header("X-Qlik-Xrfkey", K)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "Qlik's xrfkey check passes");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["schemaPath"], "About");
    let seen = env
        .sim()
        .control()
        .requests()
        .into_iter()
        .rev()
        .find(|q| q.path == "/mashup/qrs/about")
        .expect("Qlik saw the call");
    assert_eq!(seen.query.as_deref(), Some(format!("xrfkey={K}").as_str()));
    assert_eq!(
        seen.headers.get("x-qlik-xrfkey").map(|v| v.as_slice()),
        Some(&[K.to_string()][..])
    );
    let session = &env.sim().control().sessions()[0];
    assert_eq!(session.user_id, "alice");
    let qlik_cookie = seen.headers["cookie"].join("; ");
    assert!(
        qlik_cookie.contains(&format!("X-Qlik-Session-mashup={}", session.session_id)),
        "{qlik_cookie}"
    );
    env.stop().await;
}

/// A dev-server upstream (the mashup's; it shares Qlik's client) that answers one request with
/// `head`, then writes `body` when told to: the test decides when the body exists.
async fn split_upstream(
    head: &'static str,
    body: &'static str,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut req = Vec::new();
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut b = [0u8; 4096];
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&b[..n]),
            }
        }
        s.write_all(head.as_bytes()).await.unwrap();
        s.flush().await.unwrap();
        if wait.await.is_ok() {
            s.write_all(body.as_bytes()).await.unwrap();
        }
        // Kept open until the gateway closes it, as a keep-alive server would.
        let _ = s.read(&mut [0u8; 1]).await;
    });
    (url, go)
}

/// A gateway (with `qlik` lines) in front of a [`split_upstream`], and a raw client's socket
/// that has sent it `GET /` as a logged-in user. The `Env` must live as long as the socket.
async fn split_response(
    head: &'static str,
    body: &'static str,
    qlik: &str,
) -> (Env, tokio::net::TcpStream, tokio::sync::oneshot::Sender<()>) {
    use tokio::io::AsyncWriteExt;
    let (dev, go) = split_upstream(head, body).await;
    let env = Env::with(Setup {
        mashup: format!("upstream = \"{dev}\""),
        qlik: qlik.into(),
        ..Default::default()
    })
    .await;
    let cookie = env.login().await;
    let addr = env.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    (env, s, go)
}

/// Reads until `text` has arrived, returning everything read and how many reads it took.
async fn read_until(s: &mut tokio::net::TcpStream, text: &str) -> (String, usize) {
    use tokio::io::AsyncReadExt;
    let (mut got, mut reads) = (Vec::new(), 0);
    while !String::from_utf8_lossy(&got).contains(text) {
        let mut b = [0u8; 8192];
        let n = within("the response", s.read(&mut b)).await.expect("read");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
        reads += 1;
    }
    (String::from_utf8_lossy(&got).into_owned(), reads)
}

#[tokio::test]
async fn a_responses_head_leaves_with_the_start_of_its_body() {
    // An upstream that flushes its head before its body (nginx's sendfile, most servers under
    // some load): the client gets both in one piece, not a lone head segment it must ACK first.
    let (_env, mut s, go) = split_response(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 11\r\n\r\n",
        "hello world",
        "",
    )
    .await;
    // The head is held while the body has not begun (a bounded look for something that must
    // not come: the gateway has the head from the first instant).
    let early = tokio::time::timeout(Duration::from_millis(300), s.readable()).await;
    assert!(early.is_err(), "the head was passed on before its body");
    go.send(()).unwrap();
    let (resp, reads) = read_until(&mut s, "hello world").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("content-length: 11"), "{resp}");
    assert_eq!(reads, 1, "head and body came in {reads} pieces: {resp:?}");
}

#[tokio::test]
async fn a_streamed_responses_head_is_passed_on_before_its_body() {
    // Without an announced length the body may be a stream of events: its head is not held.
    let (_env, mut s, go) = split_response(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        "6\r\ndata:1\r\n0\r\n\r\n",
        "",
    )
    .await;
    let (head, _) = read_until(&mut s, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.contains("data:1"), "{head}");
    go.send(()).unwrap();
    read_until(&mut s, "data:1").await;
}

#[tokio::test]
async fn a_head_whose_body_does_not_begin_is_passed_on_at_the_response_timeout() {
    let (_env, mut s, go) = split_response(
        "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n",
        "late",
        "response_timeout = \"1s\"",
    )
    .await;
    // The body only begins once the client has the head: it must come without it.
    let (head, _) = read_until(&mut s, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    go.send(()).unwrap();
    read_until(&mut s, "late").await;
}
