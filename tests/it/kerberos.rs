//! Windows Integrated Authentication against a real MIT KDC made per test: SPNEGO from a Rust
//! GSSAPI initiator and from `curl --negotiate`, a multi-leg exchange, the principal mapping,
//! every failure's own answer, large tickets, and key rotation without a restart.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::kdc::{
    self, login_with, negotiate_toml, refused, wait_for_login, Kdc, GSS_MECH_KRB5, GSS_MECH_SPNEGO,
    SERVICE,
};
use crate::common::*;
use serde_json::Value;

const OTHER_SERVICE: &str = "HTTP/other.localhost@TEST.LOCAL";

async fn gateway_with(kdc: &Kdc, keytab: &Path, extra: &str) -> Env {
    Env::with(Setup {
        auth: Some(negotiate_toml(kdc, keytab, extra)),
        public_host: Some("localhost".into()),
        ..Setup::default()
    })
    .await
}

async fn gateway(kdc: &Kdc) -> Env {
    gateway_with(kdc, &kdc.keytab(), "").await
}

async fn me(url: &str, cookie: &str) -> Value {
    let r = http_client()
        .get(format!("{url}/_gateway/me"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("me");
    assert_eq!(r.status(), 200);
    r.json().await.expect("me JSON")
}

fn user_of(me: &Value) -> String {
    let u = if me["user"].is_object() {
        &me["user"]
    } else {
        me
    };
    format!(
        "{}\\{}",
        u["user_directory"]
            .as_str()
            .or(u["userDirectory"].as_str())
            .unwrap_or_default(),
        u["user_id"]
            .as_str()
            .or(u["userId"].as_str())
            .unwrap_or_default()
    )
}

#[tokio::test]
async fn login_without_a_token_is_a_negotiate_challenge_with_help() {
    let kdc = Kdc::start();
    let env = gateway(&kdc).await;
    let r = http_client()
        .get(format!("{}/_gateway/login", env.url))
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Negotiate");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = r.text().await.unwrap();
    assert!(
        page.contains("Local intranet") && page.contains("AuthServerAllowlist"),
        "{page}"
    );
    // Basic credentials are not an answer to the challenge.
    let r = http_client()
        .get(format!("{}/_gateway/login", env.url))
        .header("authorization", "Basic YWxpY2U6dXNlcnB3MTIz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Negotiate");
    env.stop().await;
}

#[tokio::test]
async fn a_rust_initiator_logs_in_with_mutual_auth_and_reaches_qlik_as_the_user() {
    let kdc = Kdc::start();
    let env = gateway(&kdc).await;
    let cc = kdc.ccache("alice", None, &["HTTP/localhost"]);
    let mut ctx = kdc::client_ctx(&cc, SERVICE, GSS_MECH_SPNEGO, 0);
    let token = ctx.step(None, None).unwrap().expect("first token");
    let r = login_with(&env.url, &kdc::b64(&token)).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/mashup/hub/");
    // The mutual-authentication reply completes the client's context: the server proved itself.
    let reply = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .strip_prefix("Negotiate ")
        .expect("a reply token")
        .to_string();
    let last = ctx
        .step(Some(&kdc::unb64(&reply)), None)
        .expect("reply token verifies");
    assert!(last.is_none(), "nothing more to send");
    assert!(libgssapi::context::SecurityContext::is_complete(&ctx));
    let cookie = cookie_from(&r).expect("gateway session cookie");

    assert_eq!(user_of(&me(&env.url, &cookie).await), "TEST\\alice");
    let echo: Value = env
        .get("/mashup/sim/echo", &cookie)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(echo["user"]["userDirectory"], "TEST");
    assert_eq!(echo["user"]["userId"], "alice");
    // The browser's Authorization header is the gateway's business, never Qlik's.
    assert!(echo["headers"].get("authorization").is_none(), "{echo}");
    env.stop().await;
}

#[tokio::test]
async fn curl_negotiate_logs_in() {
    let kdc = Kdc::start();
    let env = gateway(&kdc).await;
    let cc = kdc.ccache("alice", None, &[]);
    let jar = kdc.path("cookies.txt");
    // tokio's Command: the gateway answering curl runs on this test's runtime.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--negotiate", "-u", ":", "-o", "/dev/null", "-c"])
        .arg(&jar)
        .args(["-w", "%{http_code} %{redirect_url}"])
        .arg(format!("{}/_gateway/login?return_to=/mashup/hub/", env.url))
        .envs(kdc.env())
        .env("KRB5CCNAME", format!("FILE:{}", cc.display()))
        .output()
        .await
        .expect("curl");
    let written = String::from_utf8_lossy(&out.stdout);
    assert!(
        written.starts_with("302 "),
        "{written} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(written.ends_with("/mashup/hub/"), "{written}");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-b"])
        .arg(&jar)
        .arg(format!("{}/_gateway/me", env.url))
        .output()
        .await
        .expect("curl me");
    let v: Value = serde_json::from_slice(&out.stdout).expect("me JSON");
    assert_eq!(user_of(&v), "TEST\\alice");
    env.stop().await;
}

#[tokio::test]
async fn a_multi_leg_exchange_completes() {
    let kdc = Kdc::start();
    let env = gateway(&kdc).await;
    let cc = kdc.ccache("alice", None, &["HTTP/localhost"]);
    // DCE-style Kerberos takes three legs: AP-REQ, AP-REP from the gateway, AP-REP back.
    let mut ctx = kdc::client_ctx(&cc, SERVICE, GSS_MECH_KRB5, kdc::DCE_STYLE);
    let first = ctx.step(None, None).unwrap().expect("AP-REQ");
    let r = login_with(&env.url, &kdc::b64(&first)).await;
    assert_eq!(r.status(), 401, "the gateway asks for the next leg");
    let reply = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .strip_prefix("Negotiate ")
        .expect("continuation token")
        .to_string();
    let continuation = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let second = ctx
        .step(Some(&kdc::unb64(&reply)), None)
        .unwrap()
        .expect("AP-REP");
    let r = http_client()
        .get(format!("{}/_gateway/login", env.url))
        .header("authorization", format!("Negotiate {}", kdc::b64(&second)))
        .header("cookie", &continuation)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let cookie = cookie_from(&r).expect("session after the last leg");
    assert_eq!(user_of(&me(&env.url, &cookie).await), "TEST\\alice");

    // A second leg whose exchange the gateway no longer has (restart, timeout) is refused with
    // its own answer; without the continuation cookie it is just not a first token.
    for (cookie, status, code) in [
        (
            Some("qlik-gateway-negotiate=forgotten"),
            401,
            "negotiate_exchange_lost",
        ),
        (None, 400, "negotiate_not_kerberos"),
    ] {
        let mut ctx = kdc::client_ctx(&cc, SERVICE, GSS_MECH_KRB5, kdc::DCE_STYLE);
        let first = ctx.step(None, None).unwrap().expect("AP-REQ");
        let r = login_with(&env.url, &kdc::b64(&first)).await;
        let reply =
            r.headers()["www-authenticate"].to_str().unwrap()["Negotiate ".len()..].to_string();
        let second = ctx
            .step(Some(&kdc::unb64(&reply)), None)
            .unwrap()
            .expect("AP-REP");
        let mut req = http_client()
            .get(format!("{}/_gateway/login", env.url))
            .header("authorization", format!("Negotiate {}", kdc::b64(&second)))
            .header("accept", "application/json");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        assert_eq!(refused(r, status).await, code);
    }
    env.stop().await;
}

#[tokio::test]
async fn principals_map_to_qlik_users() {
    let kdc = Kdc::start();
    let cc_bob = kdc.ccache("Bob", None, &["HTTP/localhost"]);
    let cc_alice = kdc.ccache("alice", None, &["HTTP/localhost"]);

    // Default: the realm's first label, user id lower-cased.
    let env = gateway(&kdc).await;
    let r = login_with(&env.url, &kdc::spnego_token(&cc_bob, SERVICE)).await;
    assert_eq!(
        user_of(&me(&env.url, &cookie_from(&r).unwrap()).await),
        "TEST\\bob"
    );
    env.stop().await;

    let env = gateway_with(
        &kdc,
        &kdc.keytab(),
        "user_id_case = \"preserve\"\nuser_directory = \"CORP\"",
    )
    .await;
    let r = login_with(&env.url, &kdc::spnego_token(&cc_bob, SERVICE)).await;
    assert_eq!(
        user_of(&me(&env.url, &cookie_from(&r).unwrap()).await),
        "CORP\\Bob"
    );
    env.stop().await;

    let env = gateway_with(
        &kdc,
        &kdc.keytab(),
        "realm_map = { \"test.local\" = \"QLIKDIR\" }",
    )
    .await;
    let r = login_with(&env.url, &kdc::spnego_token(&cc_alice, SERVICE)).await;
    assert_eq!(
        user_of(&me(&env.url, &cookie_from(&r).unwrap()).await),
        "QLIKDIR\\alice"
    );
    env.stop().await;

    // A map that does not list the realm refuses its users.
    let env = gateway_with(
        &kdc,
        &kdc.keytab(),
        "realm_map = { \"CORP.EXAMPLE.COM\" = \"CORP\" }",
    )
    .await;
    let r = login_with(&env.url, &kdc::spnego_token(&cc_alice, SERVICE)).await;
    assert_eq!(refused(r, 401).await, "negotiate_unmapped_realm");
    assert_eq!(env.sim().control().counters().sessions_created, 0);
    env.stop().await;
}

#[tokio::test]
async fn broken_and_foreign_tokens_are_400() {
    let kdc = Kdc::start();
    let env = gateway(&kdc).await;
    let r = login_with(&env.url, "%%%not base64%%%").await;
    assert_eq!(refused(r, 400).await, "negotiate_malformed");
    let r = login_with(
        &env.url,
        &kdc::b64(&[0x60, 0x03, 0x06, 0x01, 0x00, 1, 2, 3, 4, 5, 6, 7]),
    )
    .await;
    assert_eq!(refused(r, 400).await, "negotiate_not_kerberos");
    let r = login_with(
        &env.url,
        &kdc::b64(b"just some bytes, not a GSSAPI token at all"),
    )
    .await;
    assert_eq!(refused(r, 400).await, "negotiate_not_kerberos");
    env.stop().await;
}

#[tokio::test]
async fn ntlm_is_explained_and_never_looped() {
    let kdc = Kdc::start();
    let env = gateway(&kdc).await;
    let ntlm_negotiate =
        kdc::b64(b"NTLMSSP\0\x01\x00\x00\x00\x07\x82\x08\xa2\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    for header in [
        format!("NTLM {ntlm_negotiate}"),
        format!("Negotiate {ntlm_negotiate}"),
    ] {
        let r = http_client()
            .get(format!("{}/_gateway/login", env.url))
            .header("authorization", &header)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(refused(r, 401).await, "negotiate_ntlm", "{header}");
    }
    // A person gets a page that says why, with no challenge that would start the loop again.
    let r = http_client()
        .get(format!("{}/_gateway/login", env.url))
        .header("authorization", format!("Negotiate {ntlm_negotiate}"))
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_none());
    let page = r.text().await.unwrap();
    assert!(page.contains("NTLM") && page.contains("SPN"), "{page}");
    env.stop().await;
}

#[tokio::test]
async fn tickets_for_another_service_are_refused() {
    let kdc = Kdc::start();
    let cc = kdc.ccache("alice", None, &["HTTP/localhost", "HTTP/other.localhost"]);

    // The keytab has no key for the ticket's service.
    let env = gateway(&kdc).await;
    let r = login_with(&env.url, &kdc::spnego_token(&cc, OTHER_SERVICE)).await;
    assert_eq!(refused(r, 401).await, "negotiate_no_key");
    env.stop().await;

    // The keytab has the key, but the ticket names another site than the one asked for.
    let env = gateway_with(&kdc, &kdc.path("both.keytab"), "").await;
    let r = login_with(&env.url, &kdc::spnego_token(&cc, OTHER_SERVICE)).await;
    assert_eq!(refused(r, 401).await, "negotiate_wrong_service");
    let r = login_with(&env.url, &kdc::spnego_token(&cc, SERVICE)).await;
    assert_eq!(r.status(), 302);
    env.stop().await;

    // With service_principal set, only that principal's tickets count.
    let env = gateway_with(
        &kdc,
        &kdc.path("both.keytab"),
        "service_principal = \"HTTP/localhost\"",
    )
    .await;
    let r = login_with(&env.url, &kdc::spnego_token(&cc, OTHER_SERVICE)).await;
    assert_eq!(refused(r, 401).await, "negotiate_wrong_service");
    env.stop().await;
}

#[tokio::test]
async fn a_replayed_token_is_refused() {
    let kdc = Kdc::start();
    let env = gateway(&kdc).await;
    let cc = kdc.ccache("alice", None, &["HTTP/localhost"]);
    let token = kdc::spnego_token(&cc, SERVICE);
    assert_eq!(login_with(&env.url, &token).await.status(), 302);
    let r = login_with(&env.url, &token).await;
    assert_eq!(refused(r, 401).await, "negotiate_replay");
    env.stop().await;
}

/// A gateway process whose Kerberos library allows one second of clock skew, so that expired
/// tickets and stale authenticators can be made in a test's time (the default is five minutes).
async fn strict_clock_gateway(kdc: &Kdc, sim: &qlik_sim::Sim) -> Binary {
    let conf = kdc.path("strict-krb5.conf");
    let realm = std::fs::read_to_string(kdc.path("krb5.conf")).unwrap();
    std::fs::write(
        &conf,
        realm.replace("[libdefaults]\n", "[libdefaults]\n  clockskew = 1\n"),
    )
    .unwrap();
    let toml = kdc::gateway_toml(kdc, sim, &kdc.keytab(), "");
    Binary::start(kdc.dir.path(), &toml, &[("KRB5_CONFIG", conf.into())]).await
}

#[tokio::test]
async fn expired_tickets_and_clock_skew_have_their_own_answers() {
    let kdc = Kdc::start();
    let sim = qlik_sim::Sim::start(qlik_sim::SimOptions::default(), &kdc.path("pki"))
        .await
        .unwrap();
    let gw = strict_clock_gateway(&kdc, &sim).await;
    let short = kdc.ccache("alice", Some("2s"), &["HTTP/localhost"]);
    let long = kdc.ccache("alice", None, &["HTTP/localhost"]);
    let made = Instant::now();
    let expiring = kdc::spnego_token(&short, SERVICE);
    let stale = kdc::spnego_token(&long, SERVICE);
    assert_eq!(
        login_with(&gw.url(), &kdc::spnego_token(&long, SERVICE))
            .await
            .status(),
        302
    );
    // Time passing is the scenario: the short ticket's end plus the allowed skew.
    tokio::time::sleep(Duration::from_millis(4000).saturating_sub(made.elapsed())).await;
    let r = login_with(&gw.url(), &expiring).await;
    assert_eq!(refused(r, 401).await, "negotiate_ticket_expired");
    let r = login_with(&gw.url(), &stale).await;
    assert_eq!(refused(r, 401).await, "negotiate_clock_skew");
    let (_, log) = gw.stop().await;
    for cause in ["negotiate_ticket_expired", "negotiate_clock_skew"] {
        let line = log
            .lines()
            .find(|l| l.contains(cause))
            .unwrap_or_else(|| panic!("no log line for {cause}:\n{log}"));
        assert!(
            line.contains("\"WARN\"") || line.contains("\"level\":\"WARN\""),
            "{line}"
        );
    }
    assert!(log.contains("NTP"), "the skew line names the fix:\n{log}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_keytab_without_the_sites_key_fails_check_config_and_start_up() {
    let kdc = Kdc::start();
    let sim = qlik_sim::Sim::start(qlik_sim::SimOptions::default(), &kdc.path("pki"))
        .await
        .unwrap();
    let check = |extra: &str, keytab: &Path| {
        let cfg = kdc.path("check.toml");
        std::fs::write(&cfg, kdc::gateway_toml(&kdc, &sim, keytab, extra)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_qlik-gateway"))
            .args(["check-config", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let other = kdc.path("other.keytab");
    let (code, out) = check("", &other);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("auth.negotiate.keytab") && out.contains("no key for HTTP/localhost"),
        "{out}"
    );
    assert!(
        out.contains("HTTP/other.localhost@TEST.LOCAL"),
        "lists what the keytab has: {out}"
    );
    let (code, out) = check(
        "service_principal = \"HTTP/bi.example.com@TEST.LOCAL\"",
        &kdc.keytab(),
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("auth.negotiate.service_principal")
            && out.contains("HTTP/bi.example.com@TEST.LOCAL"),
        "{out}"
    );
    let (code, out) = check("", &kdc.path("missing.keytab"));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("auth.negotiate.keytab") && out.contains("missing.keytab"),
        "{out}"
    );
    let (code, out) = check(
        "replay_cache = \"file2:/nonexistent/dir/rcache\"",
        &kdc.keytab(),
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("auth.negotiate.replay_cache") && out.contains("/nonexistent/dir/rcache"),
        "{out}"
    );
    let (code, out) = check("", &kdc.keytab());
    assert_eq!(code, Some(0), "{out}");

    // Start-up refuses the same keytab, with the same words.
    let cfg = kdc.path("check.toml");
    std::fs::write(&cfg, kdc::gateway_toml(&kdc, &sim, &other, "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_qlik-gateway"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no key for HTTP/localhost"), "{err}");
    sim.shutdown().await;
}

#[tokio::test]
async fn large_tickets_fit_in_the_header_limit() {
    let kdc = Kdc::start();
    let env = gateway(&kdc).await;
    let cc = kdc.ccache("alice", None, &["HTTP/localhost"]);
    // A PAC with many groups makes the Authorization header large; with the cookies of an
    // intranet site the headers reach tens of KiB.
    let r = http_client()
        .get(format!("{}/_gateway/login", env.url))
        .header(
            "authorization",
            format!("Negotiate {}", kdc::spnego_token(&cc, SERVICE)),
        )
        .header("x-padding", "p".repeat(56 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    // And a 60 KiB token is read and judged, not cut off with 431.
    let big = kdc::b64(&vec![0x60u8; 45 * 1024]);
    assert!(big.len() >= 60 * 1024);
    let r = login_with(&env.url, &big).await;
    assert_eq!(refused(r, 400).await, "negotiate_not_kerberos");
    env.stop().await;
}

#[tokio::test]
async fn a_replaced_keytab_is_used_without_a_restart() {
    let kdc = Kdc::start();
    let live = kdc.path("live.keytab");
    std::fs::copy(kdc.keytab(), &live).unwrap();
    let env = gateway_with(&kdc, &live, "keytab_poll_interval = \"100ms\"").await;
    let old = kdc.ccache("alice", None, &["HTTP/localhost"]);
    assert_eq!(
        login_with(&env.url, &kdc::spnego_token(&old, SERVICE))
            .await
            .status(),
        302
    );

    // The password of the service account changes: new tickets carry the new key version.
    let fresh = kdc.rotate("rotated.keytab");
    let new = kdc.ccache("alice", None, &["HTTP/localhost"]);
    let r = login_with(&env.url, &kdc::spnego_token(&new, SERVICE)).await;
    assert_eq!(
        refused(r, 401).await,
        "negotiate_no_key",
        "before the keytab is replaced"
    );
    // Replaced the way deployments do it: a new file renamed over the old one.
    std::fs::rename(&fresh, &live).unwrap();
    let r = wait_for_login(&env.url, &new).await;
    assert_eq!(r.status(), 302, "the new keytab is picked up by polling");

    // A broken replacement is reported and the keytab in use stays.
    std::fs::write(kdc.path("broken.keytab"), b"not a keytab").unwrap();
    std::fs::rename(kdc.path("broken.keytab"), &live).unwrap();
    // Give the poller several periods to see it; then logins must still work.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        login_with(&env.url, &kdc::spnego_token(&new, SERVICE))
            .await
            .status(),
        302
    );
    env.stop().await;
}

#[tokio::test]
async fn sighup_reloads_the_keytab() {
    let kdc = Kdc::start();
    let sim = qlik_sim::Sim::start(qlik_sim::SimOptions::default(), &kdc.path("pki"))
        .await
        .unwrap();
    let live = kdc.path("live.keytab");
    std::fs::copy(kdc.keytab(), &live).unwrap();
    let toml = kdc::gateway_toml(&kdc, &sim, &live, "keytab_poll_interval = \"0s\"");
    let gw = Binary::start(kdc.dir.path(), &toml, &kdc.os_env()).await;
    let fresh = kdc.rotate("rotated.keytab");
    std::fs::rename(&fresh, &live).unwrap();
    let new = kdc.ccache("alice", None, &["HTTP/localhost"]);
    // Without polling, the new key is unknown until the operator says so.
    let r = login_with(&gw.url(), &kdc::spnego_token(&new, SERVICE)).await;
    assert_eq!(refused(r, 401).await, "negotiate_no_key");
    let pid = gw.child.id().expect("pid").to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(wait_for_login(&gw.url(), &new).await.status(), 302);
    let (status, log) = gw.stop().await;
    assert!(
        status.success(),
        "SIGHUP does not stop the gateway: {status:?}"
    );
    assert!(log.contains("keytab reloaded"), "{log}");
    sim.shutdown().await;
}
