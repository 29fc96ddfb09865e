//! The log as operators read it: audit events (login, logout, refusals, re-authentication at
//! Qlik) name the user and are marked `audit`; no secret (the gateway cookie, the Qlik session
//! id) appears in any line, even at debug level.

use crate::common::*;
use serde_json::Value;

#[tokio::test]
async fn audit_events_name_the_user_and_no_secret_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let sim = qlik_sim::Sim::start(qlik_sim::SimOptions::default(), &dir.path().join("pki"))
        .await
        .unwrap();
    let toml = config_toml(&sim, &Setup::default(), "127.0.0.1:0".parse().unwrap());
    let gw = Binary::start(
        dir.path(),
        &toml,
        &[(
            "RUST_LOG",
            "debug,hyper=info,h2=info,rustls=info,reqwest=info".into(),
        )],
    )
    .await;
    let url = gw.url();
    let c = http_client();
    let login = c.get(format!("{url}/_gateway/login")).send().await.unwrap();
    let cookie = cookie_from(&login).expect("cookie");
    let cookie_value = cookie.split_once('=').unwrap().1.to_string();
    assert_eq!(
        c.get(format!("{url}/mashup/sim/echo"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let qlik_session = sim.control().sessions()[0].session_id.clone();
    // Qlik loses the session: the gateway re-authenticates at Qlik for the user.
    sim.control().expire_all_sessions();
    assert_eq!(
        c.get(format!("{url}/mashup/sim/echo"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A refused request (logout from another site) and the real logout.
    let refused = c
        .post(format!("{url}/_gateway/logout"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let out = c
        .post(format!("{url}/_gateway/logout"))
        .header("cookie", &cookie)
        // The configured public origin (the config was written before the port was known).
        .header("origin", "http://127.0.0.1:0")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    let (_, log) = gw.stop().await;

    for secret in [&cookie_value, &qlik_session] {
        assert!(
            !log.contains(secret.as_str()),
            "a secret reached the log:\n{log}"
        );
    }
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let audit: Vec<&Value> = lines.iter().filter(|v| v["audit"] == true).collect();
    let find = |msg: &str| {
        audit
            .iter()
            .find(|v| {
                let m = v["message"].as_str().unwrap_or_default();
                m == msg || (msg.len() > 8 && m.contains(msg))
            })
            .unwrap_or_else(|| panic!("no audit line {msg:?} in:\n{log}"))
    };
    assert_eq!(find("login")["user"], "DEV\\alice");
    assert_eq!(find("logout")["user"], "DEV\\alice");
    let reauth = find("created Qlik session");
    assert_eq!(reauth["user"], "DEV\\alice");
    assert_eq!(reauth["replaced"], true);
    let refusal = find("same-origin");
    assert_eq!(refusal["code"], "forbidden");
    // Every line of a request carries its request id.
    assert!(find("login")["span"]["request_id"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    sim.shutdown().await;
}
