//! Self-test of the test OpenID Provider (tests/oidc/provider.mjs) and its harness
//! (tests/it/common/oidc.rs), with a fake relying party written here: no gateway involved.

use crate::common;
use crate::common::oidc::{self, Act, Browser, Idp, Stop, ALICE, BOB};
use serde_json::{json, Value};

/// Nothing listens there: flows stop before requesting it.
const RP: &str = "http://127.0.0.1:1/rp";

fn callback() -> String {
    format!("{RP}/callback")
}

fn after_logout() -> String {
    format!("{RP}/signed-out")
}

fn clients() -> Value {
    let mut post = Idp::client("rp-post", Some("post-secret"), &callback(), &after_logout());
    post["token_endpoint_auth_method"] = "client_secret_post".into();
    json!([
        Idp::client("rp", Some("rp-secret"), &callback(), &after_logout()),
        post,
        Idp::client("rp-public", None, &callback(), &after_logout()),
    ])
}

/// An authorization request of the fake RP.
struct AuthRequest {
    url: String,
    state: String,
    nonce: String,
    verifier: String,
}

fn auth_request(idp: &Idp, client_id: &str, scope: &str) -> AuthRequest {
    let (verifier, challenge) = oidc::pkce_pair();
    let state = format!("state-{}", rand::random::<u64>());
    let nonce = format!("nonce-{}", rand::random::<u64>());
    let query = oidc::form_urlencode(&[
        ("response_type".into(), "code".into()),
        ("client_id".into(), client_id.into()),
        ("redirect_uri".into(), callback()),
        ("scope".into(), scope.into()),
        ("state".into(), state.clone()),
        ("nonce".into(), nonce.clone()),
        ("code_challenge".into(), challenge),
        ("code_challenge_method".into(), "S256".into()),
    ]);
    AuthRequest {
        url: format!("{}/auth?{query}", idp.issuer),
        state,
        nonce,
        verifier,
    }
}

/// The token endpoint's answer (status, JSON) for `code`.
async fn redeem(
    idp: &Idp,
    client_id: &str,
    secret: Option<&str>,
    code: &str,
    verifier: &str,
) -> (u16, Value) {
    let mut fields = vec![
        ("grant_type".to_string(), "authorization_code".to_string()),
        ("code".into(), code.into()),
        ("redirect_uri".into(), callback()),
        ("code_verifier".into(), verifier.into()),
    ];
    let token_endpoint = idp.discovery().await["token_endpoint"]
        .as_str()
        .expect("token_endpoint")
        .to_string();
    let mut req = common::http_client().post(token_endpoint);
    match (client_id, secret) {
        ("rp-post", Some(s)) => {
            fields.push(("client_id".into(), client_id.into()));
            fields.push(("client_secret".into(), s.into()));
        }
        (_, Some(s)) => req = req.basic_auth(client_id, Some(s)),
        (_, None) => fields.push(("client_id".into(), client_id.into())),
    }
    let resp = req
        .header("content-type", "application/x-www-form-urlencoded")
        .body(oidc::form_urlencode(&fields))
        .send()
        .await
        .expect("token request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("token response JSON"))
}

/// Logs in through the login form and returns the ID token (header, payload, compact JWT).
async fn login_and_redeem(
    idp: &Idp,
    browser: &mut Browser,
    client_id: &str,
    secret: Option<&str>,
    (user, pw): (&str, &str),
) -> (Value, Value, String) {
    let req = auth_request(idp, client_id, "openid profile email groups upn");
    let flow = browser
        .login_flow(&req.url, Act::login(user, pw), &Stop::before(RP))
        .await;
    assert_eq!(flow.status(), 303, "{flow}");
    let location = flow.location().expect("location");
    assert!(location.starts_with(&callback()), "{flow}");
    assert_eq!(flow.param("state").as_deref(), Some(req.state.as_str()));
    assert_eq!(flow.param("iss").as_deref(), Some(idp.issuer.as_str()));
    assert!(
        flow.visited("POST", &format!("{}/interaction/", idp.issuer)),
        "the login form was submitted: {flow}"
    );
    let code = flow.param("code").expect("code");
    let (status, tokens) = redeem(idp, client_id, secret, &code, &req.verifier).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let jwt = tokens["id_token"].as_str().expect("id_token").to_string();
    let (header, payload) = oidc::jwt_parts(&jwt);
    assert_eq!(payload["nonce"], req.nonce.as_str());
    (header, payload, jwt)
}

#[tokio::test]
async fn discovery_advertises_the_endpoints() {
    let idp = Idp::start(clients()).await;
    assert!(idp.issuer.starts_with("http://127.0.0.1:"));
    let d = idp.discovery().await;
    assert_eq!(d["issuer"], idp.issuer.as_str());
    for key in [
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "end_session_endpoint",
        "userinfo_endpoint",
    ] {
        let url = d[key].as_str().unwrap_or_else(|| panic!("{key} in {d}"));
        assert!(url.starts_with(&idp.issuer), "{key}: {url}");
    }
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    let scopes = d["scopes_supported"].as_array().expect("scopes");
    for s in ["openid", "profile", "email", "groups", "upn"] {
        assert!(scopes.contains(&json!(s)), "scope {s} in {d}");
    }
    let kids = idp.kids().await;
    assert_eq!(kids.len(), 1, "{}", idp.jwks().await);
    let health = common::http_client()
        .get(idp.url("/test/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn code_flow_with_pkce_puts_the_claims_in_the_id_token() {
    let idp = Idp::start(clients()).await;
    let mut browser = Browser::new();
    let (header, p, _) = login_and_redeem(&idp, &mut browser, "rp", Some("rp-secret"), ALICE).await;
    assert_eq!(header["alg"], "RS256");
    assert_eq!(
        header["kid"].as_str(),
        idp.kids().await.first().map(|k| k.as_str())
    );
    assert_eq!(p["iss"], idp.issuer.as_str());
    assert_eq!(p["aud"], "rp");
    assert_eq!(p["sub"], "alice-sub");
    assert_eq!(p["preferred_username"], "alice");
    assert_eq!(p["name"], "Alice Example");
    assert_eq!(p["email"], "alice@corp.example.com");
    assert_eq!(p["upn"], "alice@corp.example.com");
    assert_eq!(p["groups"], json!(["Sales", "Qlik Admins"]));

    // Same browser, another client: single sign-on, no form.
    let req = auth_request(&idp, "rp-post", "openid profile");
    let sso = browser
        .login_flow(&req.url, Act::Nothing, &Stop::before(RP))
        .await;
    assert!(sso.param("code").is_some(), "{sso}");
    assert!(!sso.visited("POST", &idp.issuer), "{sso}");
    let (status, tokens) = redeem(
        &idp,
        "rp-post",
        Some("post-secret"),
        &sso.param("code").unwrap(),
        &req.verifier,
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let (_, p) = oidc::jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(p["preferred_username"], "alice");
    assert!(p.get("groups").is_none(), "groups only with its scope: {p}");
    assert!(p.get("email").is_none(), "email only with its scope: {p}");
}

#[tokio::test]
async fn public_client_bob_and_a_client_added_at_run_time() {
    let idp = Idp::start(json!([])).await;
    idp.add_clients(clients()).await;
    let mut browser = Browser::new();
    let (_, p, _) = login_and_redeem(&idp, &mut browser, "rp-public", None, BOB).await;
    assert_eq!(p["sub"], "bob-sub");
    assert_eq!(p["preferred_username"], "CORP\\bob");
    assert_eq!(p["upn"], "bob@corp.example.com");
    assert_eq!(p["groups"], json!(["Staff"]));
}

#[tokio::test]
async fn pkce_is_required_and_checked() {
    let idp = Idp::start(clients()).await;
    // No code_challenge: the provider answers the client with invalid_request.
    let query = oidc::form_urlencode(&[
        ("response_type".into(), "code".into()),
        ("client_id".into(), "rp".into()),
        ("redirect_uri".into(), callback()),
        ("scope".into(), "openid".into()),
        ("state".into(), "s1".into()),
    ]);
    let flow = Browser::new()
        .follow(&format!("{}/auth?{query}", idp.issuer), &Stop::before(RP))
        .await;
    assert_eq!(
        flow.param("error").as_deref(),
        Some("invalid_request"),
        "{flow}"
    );
    assert_eq!(flow.param("state").as_deref(), Some("s1"));

    // A wrong code_verifier: invalid_grant at the token endpoint.
    let req = auth_request(&idp, "rp", "openid");
    let flow = oidc::login_flow(
        &common::http_client(),
        &req.url,
        ALICE.0,
        ALICE.1,
        false,
        &Stop::before(RP),
    )
    .await;
    let code = flow.param("code").unwrap_or_else(|| panic!("{flow}"));
    let (wrong, _) = oidc::pkce_pair();
    let (status, body) = redeem(&idp, "rp", Some("rp-secret"), &code, &wrong).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn cancel_returns_access_denied() {
    let idp = Idp::start(clients()).await;
    let req = auth_request(&idp, "rp", "openid profile");
    let flow = oidc::login_flow(
        &common::http_client(),
        &req.url,
        "",
        "",
        true,
        &Stop::before(RP),
    )
    .await;
    assert!(flow.location().unwrap().starts_with(&callback()), "{flow}");
    assert_eq!(
        flow.param("error").as_deref(),
        Some("access_denied"),
        "{flow}"
    );
    assert_eq!(flow.param("state").as_deref(), Some(req.state.as_str()));
    assert!(flow.param("code").is_none());
}

#[tokio::test]
async fn wrong_password_shows_the_form_again() {
    let idp = Idp::start(clients()).await;
    let mut browser = Browser::new();
    let req = auth_request(&idp, "rp", "openid");
    let flow = browser
        .login_flow(&req.url, Act::login("alice", "nope"), &Stop::before(RP))
        .await;
    assert_eq!(flow.status(), 401, "{flow}");
    assert!(flow
        .last
        .url
        .starts_with(&format!("{}/interaction/", idp.issuer)));
    assert!(flow.last.body.contains("name=\"username\""), "{flow}");
    assert!(flow.last.body.contains("Invalid username or password"));
    assert!(flow.location().is_none());

    // The same interaction still works with the right password.
    let uid = flow.last.url.trim_end_matches("/login").to_string();
    let retry = browser
        .login_flow(&uid, Act::login(ALICE.0, ALICE.1), &Stop::before(RP))
        .await;
    assert_eq!(
        retry.param("state").as_deref(),
        Some(req.state.as_str()),
        "{retry}"
    );
    assert!(retry.param("code").is_some(), "{retry}");
}

#[tokio::test]
async fn rotate_keys_changes_the_jwks_and_the_signing_key() {
    let idp = Idp::start(clients()).await;
    let first = idp.kids().await;
    let mut browser = Browser::new();
    let (h, _, _) = login_and_redeem(&idp, &mut browser, "rp", Some("rp-secret"), ALICE).await;
    assert_eq!(h["kid"].as_str(), Some(first[0].as_str()));

    let second = idp.rotate_keys(false).await;
    assert_eq!(idp.kids().await, vec![second.clone(), first[0].clone()]);
    // A fresh browser: the provider keeps sessions across rotations, too.
    let (h, _, _) = login_and_redeem(&idp, &mut Browser::new(), "rp", Some("rp-secret"), BOB).await;
    assert_eq!(h["kid"].as_str(), Some(second.as_str()));

    let third = idp.rotate_keys(true).await;
    assert_eq!(idp.kids().await, vec![third.clone()]);
    let req = auth_request(&idp, "rp", "openid");
    let sso = browser
        .login_flow(&req.url, Act::Nothing, &Stop::before(RP))
        .await;
    let code = sso.param("code").unwrap_or_else(|| panic!("{sso}"));
    let (_, tokens) = redeem(&idp, "rp", Some("rp-secret"), &code, &req.verifier).await;
    let (h, _) = oidc::jwt_parts(tokens["id_token"].as_str().expect("id_token"));
    assert_eq!(h["kid"].as_str(), Some(third.as_str()));
}

#[tokio::test]
async fn rp_initiated_logout_ends_the_session_and_returns() {
    let idp = Idp::start(clients()).await;
    let mut browser = Browser::new();
    let (_, _, id_token) =
        login_and_redeem(&idp, &mut browser, "rp", Some("rp-secret"), ALICE).await;
    let end_session = idp.discovery().await["end_session_endpoint"]
        .as_str()
        .expect("end_session_endpoint")
        .to_string();
    let query = oidc::form_urlencode(&[
        ("id_token_hint".into(), id_token),
        ("post_logout_redirect_uri".into(), after_logout()),
        ("state".into(), "bye-1".into()),
    ]);
    let logout_url = format!("{end_session}?{query}");

    // Without a provider session (another browser) the provider's own auto-submitting page
    // leads to the same place.
    let stranger = Browser::new()
        .logout_flow(&logout_url, &Stop::before(RP))
        .await;
    assert_eq!(
        stranger.param("state").as_deref(),
        Some("bye-1"),
        "{stranger}"
    );

    let flow = browser.logout_flow(&logout_url, &Stop::before(RP)).await;
    assert_eq!(flow.status(), 303, "{flow}");
    let location = flow.location().unwrap();
    assert!(location.starts_with(&after_logout()), "{flow}");
    assert_eq!(flow.param("state").as_deref(), Some("bye-1"));
    assert!(
        flow.visited("POST", &end_session),
        "confirmation posted: {flow}"
    );

    // The provider session is gone: the next authorization shows the login form.
    let req = auth_request(&idp, "rp", "openid");
    let again = browser
        .login_flow(&req.url, Act::Nothing, &Stop::before(RP))
        .await;
    assert_eq!(again.status(), 200, "{again}");
    assert!(again.last.body.contains("name=\"password\""), "{again}");
}
