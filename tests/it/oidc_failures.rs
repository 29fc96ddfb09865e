//! OIDC login against a scriptable IdP (tests/it/common/fake_idp.rs): the code flow with PKCE,
//! state and nonce, every ID token check, key rotation, the IdP down at start-up and at login,
//! logout at the IdP, and the login cookie staying one cookie.

use crate::common;
use std::time::{Duration, Instant};

use crate::common::fake_idp::FakeIdp;
use crate::common::*;
use serde_json::Value;

fn oidc_toml(issuer: &str, extra: &str) -> String {
    format!(
        "[auth]\nprovider = \"oidc\"\n[auth.oidc]\nissuer = \"{issuer}\"\nclient_id = \"qlik-gateway\"\nuser_directory = \"CORP\"\nscopes = [\"openid\", \"profile\", \"email\", \"groups\"]\nattributes = {{ groups = \"Group\", email = \"Email\" }}\n{extra}\n"
    )
}

async fn gateway(issuer: &str, extra: &str) -> Env {
    Env::with(Setup {
        auth: Some(oidc_toml(issuer, extra)),
        ..Setup::default()
    })
    .await
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
        .collect()
}

/// The browser's round trip: gateway login → IdP → gateway callback. Returns the callback's
/// response (with the login cookie the gateway set).
async fn round_trip(
    env: &Env,
    tamper: impl FnOnce(String) -> String,
    json: bool,
) -> reqwest::Response {
    let c = no_redirects();
    let r = c
        .get(format!("{}/_gateway/login?return_to=/mashup/hub/", env.url))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 302, "login sends the browser to the IdP");
    let cookie = set_cookie(&r, "qlik-gateway-oidc")
        .pop()
        .expect("login cookie");
    let at_idp = c.get(location(&r)).send().await.expect("authorize");
    assert!(
        at_idp.status().is_redirection(),
        "{:?}",
        at_idp.text().await
    );
    let back = tamper(location(&at_idp));
    assert!(
        back.starts_with(&format!("{}/_gateway/callback?", env.url)),
        "{back}"
    );
    c.get(back)
        .header("cookie", cookie)
        .header(
            "accept",
            if json {
                "application/json"
            } else {
                "text/html"
            },
        )
        .send()
        .await
        .expect("callback")
}

async fn refused(r: reqwest::Response, status: u16) -> (String, String) {
    assert_eq!(r.status(), status);
    let v: Value = r.json().await.expect("JSON error");
    (
        v["error"].as_str().unwrap_or_default().to_string(),
        v["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn code_flow_with_pkce_logs_in_and_passes_claims_to_qlik() {
    let idp = FakeIdp::start().await;
    let env = gateway(&idp.issuer, "").await;
    let c = no_redirects();
    let r = c
        .get(format!("{}/_gateway/login?return_to=/mashup/hub/", env.url))
        .send()
        .await
        .unwrap();
    let auth = reqwest::Url::parse(&location(&r)).unwrap();
    let q: std::collections::HashMap<_, _> = auth.query_pairs().into_owned().collect();
    assert!(auth
        .as_str()
        .starts_with(&format!("{}/authorize", idp.issuer)));
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "qlik-gateway");
    assert_eq!(q["redirect_uri"], format!("{}/_gateway/callback", env.url));
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["code_challenge"].len() >= 43);
    assert!(q["state"].len() >= 16 && q["nonce"].len() >= 16);
    assert!(q["scope"].split(' ').any(|s| s == "openid") && q["scope"].contains("groups"));

    let r = round_trip(&env, |l| l, false).await;
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), "/mashup/hub/");
    assert_eq!(
        set_cookie(&r, "qlik-gateway-oidc"),
        vec!["qlik-gateway-oidc=".to_string()],
        "the login cookie is cleared"
    );
    let cookie = cookie_from(&r).expect("session");
    let echo: Value = env
        .get("/mashup/sim/echo", &cookie)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(echo["user"]["userDirectory"], "CORP");
    assert_eq!(echo["user"]["userId"], "alice");
    let sessions = env.sim().control().sessions();
    assert_eq!(sessions.len(), 1);
    let attrs = &sessions[0].attributes;
    assert!(
        attrs.contains(&("Group".into(), "Sales".into())),
        "{attrs:?}"
    );
    assert!(
        attrs.contains(&("Email".into(), "alice@corp.example.com".into())),
        "{attrs:?}"
    );
    env.stop().await;
}

#[tokio::test]
async fn repeated_logins_reuse_one_cookie() {
    let idp = FakeIdp::start().await;
    let env = gateway(&idp.issuer, "").await;
    let c = no_redirects();
    let mut cookie = String::new();
    for _ in 0..5 {
        let r = c
            .get(format!("{}/_gateway/login", env.url))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let set = set_cookie(&r, "qlik-gateway-oidc");
        assert_eq!(set.len(), 1, "one login cookie per response");
        let all: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
        assert_eq!(all.len(), 1, "{all:?}");
        cookie = set[0].clone();
    }
    // Only the last attempt can finish: its cookie is the one the browser holds.
    env.stop().await;
}

#[tokio::test]
async fn access_denied_is_a_403_page() {
    let idp = FakeIdp::start().await;
    let env = gateway(&idp.issuer, "").await;
    idp.script(|s| s.deny = true);
    let r = round_trip(&env, |l| l, false).await;
    assert_eq!(r.status(), 403);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("did not grant access") && page.contains("Start again"),
        "{page}"
    );
    let r = round_trip(&env, |l| l, true).await;
    assert_eq!(refused(r, 403).await.0, "oidc_access_denied");
    env.stop().await;
}

#[tokio::test]
async fn state_and_nonce_mismatches_are_400_with_a_way_back() {
    let idp = FakeIdp::start().await;
    let env = gateway(&idp.issuer, "").await;
    let tampered = |l: String| {
        let mut u = reqwest::Url::parse(&l).unwrap();
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    if k == "state" {
                        "forged".to_string()
                    } else {
                        v.to_string()
                    },
                )
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        u.to_string()
    };
    let r = round_trip(&env, tampered, true).await;
    assert_eq!(refused(r, 400).await.0, "oidc_state");
    let r = round_trip(&env, tampered, false).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("Start again"));
    // A callback without the login cookie (bookmarked, another browser).
    let r = no_redirects()
        .get(format!("{}/_gateway/callback?code=x&state=y", env.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(refused(r, 400).await.0, "oidc_state");
    // RFC 9207: an answer naming another issuer (a mix-up) is refused.
    let r = round_trip(
        &env,
        |l| format!("{l}&iss=https%3A%2F%2Fevil.example.com"),
        true,
    )
    .await;
    assert_eq!(refused(r, 400).await.0, "oidc_state");
    let issuer = idp.issuer.clone();
    let r = round_trip(&env, move |l| format!("{l}&iss={issuer}"), true).await;
    assert_eq!(r.status(), 302, "its own issuer is fine");
    idp.script(|s| s.nonce = Some("someone-elses".into()));
    let r = round_trip(&env, |l| l, true).await;
    assert_eq!(refused(r, 400).await.0, "oidc_nonce");
    env.stop().await;
}

#[tokio::test]
async fn every_id_token_check_has_its_own_answer() {
    let idp = FakeIdp::start().await;
    let env = gateway(&idp.issuer, "").await;
    type Tweak = fn(&mut common::fake_idp::Script);
    let cases: [(&str, Tweak); 6] = [
        ("aud", |s| s.aud = Some("another-app".into())),
        ("iss", |s| s.iss = Some("https://evil.example.com".into())),
        ("exp", |s| s.exp_in = -600),
        ("iat", |s| s.iat_in = 3600),
        ("signature", |s| s.bad_signature = true),
        ("signature", |s| s.unknown_key = true),
    ];
    for (check, tweak) in cases {
        idp.script(|s| {
            *s = Default::default();
            tweak(s)
        });
        let r = round_trip(&env, |l| l, true).await;
        let (code, _) = refused(r, 401).await;
        assert_eq!(code, "oidc_id_token", "{check}");
    }
    idp.script(|s| {
        *s = Default::default();
        s.reject_code = true;
    });
    let r = round_trip(&env, |l| l, true).await;
    assert_eq!(refused(r, 401).await.0, "oidc_token_rejected");
    idp.script(|s| {
        *s = Default::default();
        s.claims = serde_json::json!({"email": "nobody@x"});
    });
    let r = round_trip(&env, |l| l, true).await;
    assert_eq!(refused(r, 401).await.0, "oidc_claims");
    assert_eq!(
        env.sim().control().counters().sessions_created,
        0,
        "no Qlik session for a refused login"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_rotated_signing_key_is_fetched() {
    let idp = FakeIdp::start().await;
    let env = gateway(&idp.issuer, "").await;
    assert_eq!(round_trip(&env, |l| l, true).await.status(), 302);
    idp.rotate("k2", true);
    let r = round_trip(&env, |l| l, true).await;
    assert_eq!(
        r.status(),
        302,
        "the gateway fetched the JWKS again for the new kid"
    );
    env.stop().await;
}

#[tokio::test]
async fn an_idp_down_at_start_up_is_retried_and_reported() {
    // A port with nothing behind it yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let env = gateway(&format!("http://{addr}"), "timeout = \"2s\"").await;
    let ready = env.get("/_gateway/readyz", "").await;
    assert_eq!(ready.status(), 503);
    let v: Value = ready.json().await.unwrap();
    assert!(
        v["identity_provider"]
            .as_str()
            .unwrap()
            .contains(&addr.to_string()),
        "{v}"
    );
    let r = http_client()
        .get(format!("{}/_gateway/login", env.url))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let r = http_client()
        .get(format!("{}/_gateway/login", env.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(refused(r, 503).await.0, "oidc_unreachable");

    // The IdP comes up: the gateway notices without a restart.
    let _idp = FakeIdp::start_on(addr).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = env.get("/_gateway/readyz", "").await;
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "readyz never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(round_trip(&env, |l| l, true).await.status(), 302);
    env.stop().await;
}

#[tokio::test]
async fn logout_ends_the_idp_session_too() {
    let idp = FakeIdp::start().await;
    let env = gateway(&idp.issuer, "").await;
    let r = round_trip(&env, |l| l, false).await;
    let cookie = cookie_from(&r).expect("session");
    let r = no_redirects()
        .post(format!("{}/_gateway/logout", env.url))
        .header("origin", &env.url)
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let to = reqwest::Url::parse(&location(&r)).unwrap();
    assert!(
        to.as_str().starts_with(&format!("{}/logout?", idp.issuer)),
        "{to}"
    );
    let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
    assert_eq!(
        q["post_logout_redirect_uri"],
        format!("{}/_gateway/logged-out", env.url)
    );
    assert_eq!(
        q["id_token_hint"].split('.').count(),
        3,
        "the ID token as hint"
    );
    let back = no_redirects().get(to.as_str()).send().await.unwrap();
    assert!(back.status().is_redirection());
    assert_eq!(location(&back), format!("{}/_gateway/logged-out", env.url));
    assert_eq!(idp.logouts().len(), 1);
    assert_eq!(
        env.sim().control().sessions().len(),
        0,
        "the Qlik session is gone"
    );
    assert_eq!(env.get("/_gateway/me", &cookie).await.status(), 401);

    // Programs get the IdP's logout URL in JSON.
    let r = round_trip(&env, |l| l, false).await;
    let cookie = cookie_from(&r).expect("session");
    let r = http_client()
        .post(format!("{}/_gateway/logout", env.url))
        .header("origin", &env.url)
        .header("cookie", &cookie)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert!(
        v["end_session_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/logout?", idp.issuer)),
        "{v}"
    );
    env.stop().await;
}

#[tokio::test]
async fn client_secret_and_private_key_jwt_authenticate_the_gateway() {
    let idp = FakeIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    // client_secret_basic (the default with a secret) and client_secret_post.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cr3t\n").unwrap();
    idp.script(|s| s.secret = Some("s3cr3t".into()));
    for method in ["", "client_auth = \"client_secret_post\""] {
        let env = gateway(
            &idp.issuer,
            &format!("client_secret_file = \"{}\"\n{method}", secret.display()),
        )
        .await;
        assert_eq!(
            round_trip(&env, |l| l, true).await.status(),
            302,
            "{method}"
        );
        env.stop().await;
    }
    idp.script(|s| s.secret = Some("another".into()));
    let env = gateway(
        &idp.issuer,
        &format!("client_secret_file = \"{}\"", secret.display()),
    )
    .await;
    assert_eq!(
        refused(round_trip(&env, |l| l, true).await, 401).await.0,
        "oidc_token_rejected"
    );
    env.stop().await;

    // private_key_jwt with an EC key whose public half the IdP knows.
    let key = rcgen::KeyPair::generate().unwrap();
    let key_file = dir.path().join("client-key.pem");
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    idp.script(|s| {
        s.secret = None;
        s.assertion_key = Some(key.public_key_raw().to_vec());
    });
    let env = gateway(
        &idp.issuer,
        &format!(
            "private_key_file = \"{}\"\nprivate_key_id = \"gw-1\"",
            key_file.display()
        ),
    )
    .await;
    assert_eq!(round_trip(&env, |l| l, true).await.status(), 302);
    env.stop().await;
    // A key the IdP does not know is refused at the token endpoint.
    let other = rcgen::KeyPair::generate().unwrap();
    idp.script(|s| s.assertion_key = Some(other.public_key_raw().to_vec()));
    let env = gateway(
        &idp.issuer,
        &format!("private_key_file = \"{}\"", key_file.display()),
    )
    .await;
    assert_eq!(
        refused(round_trip(&env, |l| l, true).await, 401).await.0,
        "oidc_token_rejected"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_forged_callback_does_not_cancel_the_login_in_progress() {
    let idp = FakeIdp::start().await;
    let env = gateway(&idp.issuer, "").await;
    let c = no_redirects();
    let r = c
        .get(format!("{}/_gateway/login", env.url))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&r, "qlik-gateway-oidc")
        .pop()
        .expect("login cookie");
    let back = location(&c.get(location(&r)).send().await.unwrap());
    // Another site makes the browser hit the callback with a state of its own.
    let forged = c
        .get(format!(
            "{}/_gateway/callback?code=evil&state=evil",
            env.url
        ))
        .header("cookie", &cookie)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(refused(forged, 400).await.0, "oidc_state");
    // The user's own answer still completes the login.
    let real = c.get(back).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(real.status(), 302);
    assert!(cookie_from(&real).is_some());
    env.stop().await;
}

/// A flood of logins started by others (more than any server-side table of logins in progress
/// would hold) cannot push out a user's login: their answer from the IdP still completes it,
/// once.
#[tokio::test]
async fn a_flood_of_other_logins_does_not_evict_a_login_in_progress_and_a_replay_is_refused() {
    let idp = FakeIdp::start().await;
    let env = gateway(&idp.issuer, "").await;
    let c = no_redirects();
    let r = c
        .get(format!("{}/_gateway/login", env.url))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&r, "qlik-gateway-oidc")
        .pop()
        .expect("login cookie");
    let back = location(&c.get(location(&r)).send().await.unwrap());

    let url = format!("{}/_gateway/login", env.url);
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (c, url) = (c.clone(), url.clone());
        flood.spawn(async move {
            for _ in 0..650 {
                let r = c.get(&url).send().await.expect("flood login");
                assert_eq!(r.status(), 302);
            }
        });
    }
    while let Some(done) = flood.join_next().await {
        done.expect("flood task");
    }

    let real = c.get(&back).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(real.status(), 302, "the user's login completes");
    assert!(cookie_from(&real).is_some());
    // The same answer again (a replayed callback) is refused.
    let replay = c
        .get(&back)
        .header("cookie", &cookie)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(refused(replay, 400).await.0, "oidc_state");
    env.stop().await;
}
