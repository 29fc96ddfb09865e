//! Each way the QPS API can fail gets its own clear answer: a status that says whether retrying
//! helps, a JSON code naming the cause for programs, a short HTML page for people, and readiness
//! that reports QPS while liveness does not.

use std::time::{Duration, Instant};

use crate::common::*;
use qlik_sim::QpsFault;
use serde_json::Value;

/// `http://127.0.0.1:PORT` of a port nothing listens on.
fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("https://127.0.0.1:{port}")
}

/// The first request through the mount (the one that needs a Qlik session), as a program.
async fn first_request(env: &Env) -> reqwest::Response {
    let cookie = env.login().await;
    env.get("/mashup/sim/echo", &cookie).await
}

/// Asserts the status and JSON `error` code of a failure answer, and returns the body.
async fn expect_failure(r: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status(), status, "{code}");
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "{code}: {ct}");
    let v: Value = r.json().await.expect("JSON body");
    assert_eq!(v["error"], code, "{v}");
    let msg = v["message"].as_str().expect("a message for the user");
    assert!(!msg.is_empty());
    v
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()
        .get("retry-after")
        .expect("503 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds")
}

#[tokio::test]
async fn xrfkey_rejection_is_a_502_naming_it() {
    let env = Env::start().await;
    env.sim().control().set_fault(Some(QpsFault::RejectXrfkey));
    let r = first_request(&env).await;
    expect_failure(r, 502, "qps_xrfkey").await;
    assert_eq!(
        env.sim().control().counters().proxy_requests,
        0,
        "nothing is sent to Qlik without a Qlik session"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_slow_qps_is_a_503_with_retry_after() {
    let env = Env::with(Setup {
        qlik: "qps_timeout = \"300ms\"".into(),
        ..Default::default()
    })
    .await;
    let delay = Duration::from_secs(5);
    env.sim().control().set_fault(Some(QpsFault::Delay(delay)));
    let started = Instant::now();
    let r = first_request(&env).await;
    assert!(
        started.elapsed() < delay,
        "the gateway gives up at qlik.qps_timeout, not when QPS finally answers"
    );
    assert!(retry_after(&r) > 0);
    expect_failure(r, 503, "qps_timeout").await;
    env.sim().control().set_fault(None);
    env.stop().await;
}

#[tokio::test]
async fn a_qps_error_status_is_a_502() {
    let env = Env::start().await;
    env.sim().control().set_fault(Some(QpsFault::Status(500)));
    let r = first_request(&env).await;
    assert!(r.headers().get("retry-after").is_none());
    expect_failure(r, 502, "qps_status").await;

    // Once QPS recovers, the same user gets in without logging in again.
    env.sim().control().set_fault(None);
    let cookie = env.login().await;
    assert_eq!(env.get("/mashup/sim/echo", &cookie).await.status(), 200);
    env.stop().await;
}

#[tokio::test]
async fn a_qps_timeout_on_a_lone_node_leaves_other_users_their_qlik_sessions() {
    let env = Env::with(Setup {
        qlik: "qps_timeout = \"300ms\"".into(),
        ..Default::default()
    })
    .await;
    let qlik_cookie = |v: Value| v["cookies"]["X-Qlik-Session-mashup"].clone();
    let alice = env.login().await;
    let r = env.get("/mashup/sim/echo", &alice).await;
    let before = qlik_cookie(r.json().await.expect("echo"));
    assert!(before.is_string());

    // Someone else's login meets a QPS that does not answer in time.
    env.sim()
        .control()
        .set_fault(Some(QpsFault::Delay(Duration::from_secs(2))));
    expect_failure(first_request(&env).await, 503, "qps_timeout").await;
    env.sim().control().set_fault(None);

    // The only node is still where alice's Qlik session lives: she keeps it (and the app
    // state in it) instead of getting a new one on every request.
    for _ in 0..3 {
        let r = env.get("/mashup/sim/echo", &alice).await;
        assert_eq!(r.status(), 200);
        assert_eq!(qlik_cookie(r.json().await.expect("echo")), before);
    }
    env.stop().await;
}

#[tokio::test]
async fn an_unreachable_qps_is_a_503() {
    let env = Env::with(Setup {
        qps_api_url: Some(closed_port_url()),
        ..Default::default()
    })
    .await;
    let r = first_request(&env).await;
    assert!(retry_after(&r) > 0);
    expect_failure(r, 503, "qps_unreachable").await;
    env.stop().await;
}

#[tokio::test]
async fn an_untrusted_client_certificate_is_a_502_naming_tls() {
    let env = Env::with(Setup {
        untrusted_client_cert: true,
        ..Default::default()
    })
    .await;
    let r = first_request(&env).await;
    expect_failure(r, 502, "qps_tls").await;
    env.stop().await;
}

#[tokio::test]
async fn people_get_a_short_html_page_not_json() {
    let env = Env::start().await;
    env.sim().control().set_fault(Some(QpsFault::Status(500)));
    let cookie = env.login().await;
    let r = http_client()
        .get(format!("{}/mashup/hub/", env.url))
        .header("cookie", &cookie)
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/html"), "{ct}");
    let page = r.text().await.unwrap();
    assert!(page.len() < 4096, "short: {} bytes", page.len());
    assert!(page.contains("Qlik Sense"), "{page}");
    assert!(
        !page.contains("qps") && !page.contains("127.0.0.1"),
        "operator detail stays in the log: {page}"
    );

    // The same for an unreachable QPS (a 503 page, still with Retry-After).
    let env2 = Env::with(Setup {
        qps_api_url: Some(closed_port_url()),
        ..Default::default()
    })
    .await;
    let cookie = env2.login().await;
    let r = http_client()
        .get(format!("{}/mashup/hub/", env2.url))
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(retry_after(&r) > 0);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/html"), "{ct}");
    env.stop().await;
    env2.stop().await;
}

#[tokio::test]
async fn readiness_follows_qps_and_liveness_does_not() {
    let c = http_client();
    let env = Env::start().await;
    let ready = c
        .get(format!("{}/_gateway/readyz", env.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let v: Value = ready.json().await.unwrap();
    assert_eq!(v["ready"], true, "{v}");
    env.stop().await;

    let env = Env::with(Setup {
        qps_api_url: Some(closed_port_url()),
        ..Default::default()
    })
    .await;
    let ready = c
        .get(format!("{}/_gateway/readyz", env.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let v: Value = ready.json().await.unwrap();
    assert_eq!(v["ready"], false, "{v}");
    assert_eq!(v["store"], "ok", "{v}");
    let healthz = c
        .get(format!("{}/_gateway/healthz", env.url))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200, "liveness does not depend on QPS");
    env.stop().await;
}
