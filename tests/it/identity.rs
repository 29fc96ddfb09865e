//! Who reaches Qlik: a trusted-header value names exactly one user of a domain the
//! configuration maps by its full name, and the name reaches qlik-sim unchanged in every mode.

use crate::common::*;
use qlik_sim::{HeaderAuth, SimOptions};
use serde_json::Value;

fn trusted(extra: &str) -> String {
    format!("[auth]\nprovider = \"trusted_header\"\n[auth.trusted_header]\nheader = \"X-Remote-User\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n{extra}\n")
}

fn header_mode(auth: String) -> Setup {
    Setup {
        sim: SimOptions {
            header_auth: Some(HeaderAuth {
                header: "hdr-usr".into(),
                dynamic_pattern: None,
            }),
            ..SimOptions::default()
        },
        qlik: "mode = \"header\"\nheader_name = \"hdr-usr\"\n".into(),
        auth: Some(auth),
        ..Setup::default()
    }
}

/// Logs in with these `X-Remote-User` values: the status, the error code, the cookie.
async fn login(env: &Env, values: &[&str]) -> (u16, Option<String>, Option<String>) {
    let mut req = http_client()
        .get(format!("{}/_gateway/login", env.url))
        .header("accept", "application/json");
    for v in values {
        req = req.header("x-remote-user", *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let cookie = cookie_from(&r);
    let code = r
        .json::<Value>()
        .await
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from));
    (status, code, cookie)
}

/// The user qlik-sim serves for this session.
async fn qlik_user(env: &Env, cookie: &str) -> (String, String) {
    let r = env.get("/mashup/sim/echo", cookie).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let u = &v["user"];
    (
        u["userDirectory"].as_str().unwrap_or_default().to_string(),
        u["userId"].as_str().unwrap_or_default().to_string(),
    )
}

/// Logs in with one value, which must succeed: the user qlik-sim then serves.
async fn logs_in_as(env: &Env, value: &str) -> (String, String) {
    let (status, code, cookie) = login(env, &[value]).await;
    assert_eq!(status, 302, "{value}: {code:?}");
    qlik_user(env, &cookie.expect("a session cookie")).await
}

#[tokio::test]
async fn a_header_sent_twice_or_a_list_is_refused_with_400() {
    let env = Env::with(Setup {
        auth: Some(trusted("user_directory = \"CORP\"")),
        ..Default::default()
    })
    .await;
    let (status, code, cookie) = login(&env, &["EVIL\\administrator", "CORP\\bob"]).await;
    assert_eq!(
        (status, code.as_deref()),
        (400, Some("bad_identity_header"))
    );
    assert!(cookie.is_none());
    let (status, code, cookie) = login(&env, &["EVIL\\administrator, CORP\\bob"]).await;
    assert_eq!(
        (status, code.as_deref()),
        (400, Some("bad_identity_header"))
    );
    assert!(cookie.is_none());
    env.stop().await;
}

#[tokio::test]
async fn a_foreign_domain_is_not_folded_into_the_configured_directory() {
    let env = Env::with(Setup {
        auth: Some(trusted("user_directory = \"CORP\"")),
        ..Default::default()
    })
    .await;
    for v in [
        "EVIL\\alice",
        "alice@evil.example.net",
        "alice@CORP.attacker.example",
    ] {
        let (status, code, cookie) = login(&env, &[v]).await;
        assert_eq!(
            (status, code.as_deref()),
            (403, Some("unknown_domain")),
            "{v}"
        );
        assert!(cookie.is_none(), "{v}");
    }
    assert_eq!(
        logs_in_as(&env, "alice").await,
        ("CORP".into(), "alice".into())
    );
    env.stop().await;
}

#[tokio::test]
async fn domains_map_through_the_table_by_their_full_name() {
    let env = Env::with(Setup {
        auth: Some(trusted("domain_map = { \"CORP.EXAMPLE.COM\" = \"CORP\" }")),
        ..Default::default()
    })
    .await;
    let (status, code, cookie) = login(&env, &["alice@corp.attacker.example"]).await;
    assert_eq!((status, code.as_deref()), (403, Some("unknown_domain")));
    assert!(cookie.is_none());
    assert_eq!(
        logs_in_as(&env, "alice@corp.example.com").await,
        ("CORP".into(), "alice".into())
    );
    env.stop().await;
}

#[tokio::test]
async fn header_mode_sends_percent_escapes_as_they_are() {
    let env = Env::with(header_mode(trusted("user_directory = \"CORP\""))).await;
    assert_eq!(
        logs_in_as(&env, "CORP\\adm%69n").await,
        ("CORP".into(), "adm%69n".into()),
        "Qlik URL-decodes the header: the name must arrive encoded once"
    );
    env.stop().await;
}

#[tokio::test]
async fn header_mode_refuses_a_name_it_cannot_carry_at_login() {
    let env = Env::with(header_mode(trusted("user_directory = \"CORP\""))).await;
    let r = http_client()
        .get(format!("{}/_gateway/login", env.url))
        .header("accept", "application/json")
        .header("x-remote-user", "alice; UserDirectory=ADMIN")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(cookie_from(&r).is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "unacceptable_identity", "{v}");
    assert!(
        v.to_string().contains(';'),
        "the answer names the rule: {v}"
    );
    let c = env.sim().control().counters();
    assert_eq!(c.qps_requests, 0, "{c:?}");
    env.stop().await;
}
