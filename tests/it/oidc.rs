//! OIDC login against a real OpenID Provider (node `oidc-provider`, tests/oidc/), driven by a
//! cookie-keeping client that follows redirects and fills in the IdP's login form.

use crate::common::oidc::{Act, Browser, Idp, Stop, ALICE, BOB};
use crate::common::*;
use serde_json::{json, Value};

struct Site {
    env: Env,
    idp: Idp,
    _dir: tempfile::TempDir,
}

/// The IdP, then the gateway (it needs the issuer), then the gateway registered at the IdP (it
/// needs the gateway's redirect URI).
async fn site(secret: bool, extra: &str) -> Site {
    site_with_callback(secret, extra, "/_gateway/callback").await
}

/// [`site`] with the gateway registered at the IdP under `callback` (`auth.oidc.redirect_path`).
async fn site_with_callback(secret: bool, extra: &str, callback: &str) -> Site {
    let idp = Idp::start(json!([])).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_line = if secret {
        let f = dir.path().join("client-secret");
        std::fs::write(&f, "gw-secret\n").unwrap();
        format!("client_secret_file = \"{}\"\n", f.display())
    } else {
        String::new()
    };
    let env = Env::with(Setup {
        auth: Some(format!(
            "[auth]\nprovider = \"oidc\"\n[auth.oidc]\nissuer = \"{}\"\nclient_id = \"gw\"\n{secret_line}scopes = [\"openid\", \"profile\", \"email\", \"groups\"]\nattributes = {{ groups = \"Group\", email = \"Email\" }}\n{extra}\n",
            idp.issuer
        )),
        ..Setup::default()
    })
    .await;
    idp.add_clients(Idp::client(
        "gw",
        secret.then_some("gw-secret"),
        &format!("{}{callback}", env.url),
        &format!("{}/_gateway/logged-out", env.url),
    ))
    .await;
    Site {
        env,
        idp,
        _dir: dir,
    }
}

async fn me(b: &mut Browser, env: &Env) -> (u16, Value) {
    let p = b.get(&format!("{}/_gateway/me", env.url)).await;
    (
        p.status.as_u16(),
        serde_json::from_str(&p.body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_user_logs_in_at_the_idp_and_reaches_qlik_with_attributes() {
    let s = site(true, "user_directory = \"CORP\"").await;
    let mut b = Browser::new();
    let callback = format!("{}/_gateway/callback", s.env.url);
    let flow = b
        .login_flow(
            &format!("{}/_gateway/login?return_to=/mashup/hub/", s.env.url),
            Act::login(ALICE.0, ALICE.1),
            &Stop::after(&callback),
        )
        .await;
    assert_eq!(flow.status(), 302, "{flow}");
    assert_eq!(
        flow.location().as_deref(),
        Some(format!("{}/mashup/hub/", s.env.url).as_str()),
        "{flow}"
    );
    assert!(
        flow.visited("POST", &s.idp.issuer),
        "the IdP's form was submitted: {flow}"
    );
    let (status, v) = me(&mut b, &s.env).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v.to_string().contains("CORP") && v.to_string().contains("alice"),
        "{v}"
    );
    let hub = b.get(&format!("{}/mashup/hub/", s.env.url)).await;
    assert_eq!(hub.status, 200);
    assert!(hub.body.contains("CORP\\alice"), "{}", hub.body);
    let sessions = s.env.sim().control().sessions();
    assert_eq!(sessions.len(), 1);
    let attrs = &sessions[0].attributes;
    for want in [
        ("Group", "Sales"),
        ("Group", "Qlik Admins"),
        ("Email", "alice@corp.example.com"),
    ] {
        assert!(attrs.contains(&(want.0.into(), want.1.into())), "{attrs:?}");
    }
    s.env.stop().await;
}

#[tokio::test]
async fn a_public_client_with_pkce_and_a_split_user_id() {
    // No client secret: PKCE alone protects the code. bob's preferred_username is CORP\bob.
    let s = site(false, "split_user_id = true").await;
    let mut b = Browser::new();
    let flow = b
        .login_flow(
            &format!("{}/_gateway/login", s.env.url),
            Act::login(BOB.0, BOB.1),
            &Stop::after(&format!("{}/_gateway/callback", s.env.url)),
        )
        .await;
    assert_eq!(flow.status(), 302, "{flow}");
    let (_, v) = me(&mut b, &s.env).await;
    assert!(
        v.to_string().contains("\"CORP\"") && v.to_string().contains("\"bob\""),
        "{v}"
    );
    s.env.stop().await;
}

#[tokio::test]
async fn a_callback_path_outside_the_gateway_prefix_completes_the_login() {
    // Relying parties registered at ADFS or Entra often use a path such as /signin-oidc; every
    // path outside /_gateway/ is otherwise the mashup's or Qlik's.
    let s = site_with_callback(
        false,
        "split_user_id = true\nredirect_path = \"/signin-oidc\"",
        "/signin-oidc",
    )
    .await;
    let mut b = Browser::new();
    let flow = b
        .login_flow(
            &format!("{}/_gateway/login", s.env.url),
            Act::login(BOB.0, BOB.1),
            &Stop::after(&format!("{}/signin-oidc", s.env.url)),
        )
        .await;
    assert_eq!(flow.status(), 302, "{flow}");
    let (status, v) = me(&mut b, &s.env).await;
    assert_eq!(status, 200, "{v}");
    assert!(v.to_string().contains("\"bob\""), "{v}");
    s.env.stop().await;
}

#[tokio::test]
async fn cancel_at_the_idp_is_a_403_page() {
    let s = site(true, "user_directory = \"CORP\"").await;
    let mut b = Browser::new();
    let flow = b
        .login_flow(
            &format!("{}/_gateway/login", s.env.url),
            Act::Deny,
            &Stop::after(&format!("{}/_gateway/callback", s.env.url)),
        )
        .await;
    assert_eq!(flow.status(), 403, "{flow}");
    assert!(flow.last.body.contains("did not grant access"), "{flow}");
    assert_eq!(s.env.sim().control().counters().sessions_created, 0);
    s.env.stop().await;
}

#[tokio::test]
async fn logout_ends_qlik_gateway_and_idp_sessions() {
    let s = site(true, "user_directory = \"CORP\"").await;
    let mut b = Browser::new();
    let login = format!("{}/_gateway/login", s.env.url);
    let callback = format!("{}/_gateway/callback", s.env.url);
    let flow = b
        .login_flow(
            &login,
            Act::login(ALICE.0, ALICE.1),
            &Stop::after(&callback),
        )
        .await;
    assert_eq!(flow.status(), 302, "{flow}");
    assert_eq!(
        b.get(&format!("{}/mashup/hub/", s.env.url)).await.status,
        200
    );
    assert_eq!(s.env.sim().control().sessions().len(), 1);

    let logged_out = format!("{}/_gateway/logged-out", s.env.url);
    let out = b
        .post_flow(
            &format!("{}/_gateway/logout", s.env.url),
            &[],
            &Stop::after(&logged_out),
        )
        .await;
    assert_eq!(out.status(), 200, "{out}");
    assert!(
        out.visited("GET", &s.idp.issuer) || out.visited("POST", &s.idp.issuer),
        "went through the IdP: {out}"
    );
    assert_eq!(me(&mut b, &s.env).await.0, 401);
    assert_eq!(
        s.env.sim().control().sessions().len(),
        0,
        "the Qlik session is deleted"
    );

    // The IdP's session ended too: logging in again asks for the password.
    let again = b
        .login_flow(&login, Act::Nothing, &Stop::after(&callback))
        .await;
    assert_ne!(again.status(), 302, "no silent login after logout: {again}");
    assert!(again.last.body.contains("password"), "{again}");
    s.env.stop().await;
}

/// A navigation to Qlik's `logoutUri` (rewritten to the gateway's `{mount}/qps/user`) is the
/// gateway's logout, the IdP's included.
#[tokio::test]
async fn a_navigation_to_qliks_logout_uri_ends_the_idp_session_too() {
    let s = site(true, "user_directory = \"CORP\"").await;
    let mut b = Browser::new();
    let login = format!("{}/_gateway/login", s.env.url);
    let callback = format!("{}/_gateway/callback", s.env.url);
    let flow = b
        .login_flow(
            &login,
            Act::login(ALICE.0, ALICE.1),
            &Stop::after(&callback),
        )
        .await;
    assert_eq!(flow.status(), 302, "{flow}");
    assert_eq!(
        b.get(&format!("{}/mashup/hub/", s.env.url)).await.status,
        200
    );

    let logged_out = format!("{}/_gateway/logged-out", s.env.url);
    b.next_request_with(&[
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "same-origin"),
    ]);
    let out = b
        .follow(
            &format!("{}/mashup/qps/user", s.env.url),
            &Stop::after(&logged_out),
        )
        .await;
    assert_eq!(out.status(), 200, "{out}");
    assert!(
        out.visited("GET", &s.idp.issuer) || out.visited("POST", &s.idp.issuer),
        "went through the IdP: {out}"
    );
    assert_eq!(me(&mut b, &s.env).await.0, 401);
    assert_eq!(s.env.sim().control().sessions().len(), 0);
    let again = b
        .login_flow(&login, Act::Nothing, &Stop::after(&callback))
        .await;
    assert!(
        again.last.body.contains("password"),
        "no silent login after logout: {again}"
    );
    s.env.stop().await;
}

#[tokio::test]
async fn a_rotated_idp_key_is_picked_up() {
    let s = site(true, "user_directory = \"CORP\"").await;
    let login = format!("{}/_gateway/login", s.env.url);
    let callback = format!("{}/_gateway/callback", s.env.url);
    let mut b = Browser::new();
    assert_eq!(
        b.login_flow(
            &login,
            Act::login(ALICE.0, ALICE.1),
            &Stop::after(&callback)
        )
        .await
        .status(),
        302
    );
    s.idp.rotate_keys(true).await;
    let mut b = Browser::new();
    let flow = b
        .login_flow(
            &login,
            Act::login(ALICE.0, ALICE.1),
            &Stop::after(&callback),
        )
        .await;
    assert_eq!(
        flow.status(),
        302,
        "signed with a key the gateway had not seen: {flow}"
    );
    s.env.stop().await;
}
