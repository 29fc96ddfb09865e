//! Login, gateway sessions and the gateway cookie, as a browser and an operator see them.

use crate::common::*;
use qlik_sim::SALES_APP_ID;

use std::io::{Read, Write};

fn set_cookie(resp: &reqwest::Response) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.contains("qlik-gateway"))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn unauthenticated_navigation_redirects_and_programs_get_json() {
    let env = Env::start().await;
    let c = http_client();
    let nav = c
        .get(format!("{}/reports/q3?x=1", env.url))
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(nav.status(), 302);
    assert_eq!(
        nav.headers()["location"],
        "/_gateway/login?return_to=%2Freports%2Fq3%3Fx%3D1"
    );
    let html = c
        .get(format!("{}/", env.url))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(html.status(), 302);
    let api = c
        .get(format!("{}/", env.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(body["login_url"], "/_gateway/login?return_to=%2F");
    let cors = c
        .get(format!("{}/", env.url))
        .header("sec-fetch-mode", "cors")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        cors.status(),
        401,
        "fetch() calls must get JSON, not a redirect they cannot follow"
    );
    env.stop().await;
}

#[tokio::test]
async fn login_issues_a_safe_cookie_and_rotates_the_id() {
    let env = Env::start().await;
    let c = http_client();
    let first = c
        .get(format!("{}/_gateway/login?return_to=/app/x%3Fy", env.url))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 302);
    assert_eq!(first.headers()["location"], "/app/x?y");
    let sc = set_cookie(&first);
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(sc.contains(flag), "{sc} lacks {flag}");
    }
    assert!(
        !sc.contains("Secure"),
        "plain http public_url: no Secure flag ({sc})"
    );
    let old = sc.split(';').next().unwrap().to_string();
    let value = old.split_once('=').unwrap().1;
    assert!(value.len() >= 22, "id has at least 128 bits: {value}");

    // After a logout, a login with the old cookie gives a new id, never the old one back.
    let out = c
        .post(format!("{}/_gateway/logout", env.url))
        .header("cookie", &old)
        .header("origin", &env.url)
        .send()
        .await
        .unwrap();
    assert!(
        out.status().is_success() || out.status().is_redirection(),
        "{}",
        out.status()
    );
    let second = c
        .get(format!("{}/_gateway/login", env.url))
        .header("cookie", &old)
        .send()
        .await
        .unwrap();
    let new = cookie_from(&second).unwrap();
    assert_ne!(new, old);
    assert_eq!(env.get("/_gateway/me", &old).await.status(), 401);
    let me: serde_json::Value = env.get("/_gateway/me", &new).await.json().await.unwrap();
    assert_eq!(me["userId"], "alice");
    assert_eq!(me["userDirectory"], "DEV");
    assert!(me["expiresAt"].as_u64().unwrap() > me["loginAt"].as_u64().unwrap());
    env.stop().await;
}

/// `@qlik/api` and qlik-embed send `loginUri.replace("{location}", encodeURIComponent(location.href))`:
/// an absolute URL on the gateway's own origin.
#[tokio::test]
async fn an_absolute_return_to_on_the_public_origin_comes_back_as_its_path() {
    let env = Env::start().await;
    let href = format!("{}/reports/q3?x=1#chart", env.url);
    let enc = percent_encoding::utf8_percent_encode(&href, percent_encoding::NON_ALPHANUMERIC);
    let r = http_client()
        .get(format!("{}/_gateway/login?return_to={enc}", env.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/reports/q3?x=1#chart");
    assert!(cookie_from(&r).is_some());
    // Another port of the same host is another origin.
    let port = env.addr.port().wrapping_add(1);
    let other = format!("http://127.0.0.1:{port}/reports");
    let enc = percent_encoding::utf8_percent_encode(&other, percent_encoding::NON_ALPHANUMERIC);
    let r = http_client()
        .get(format!("{}/_gateway/login?return_to={enc}", env.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    env.stop().await;
}

/// qlik-embed's loader navigates to `data-login-uri` as it is, `{location}` unfilled: the login
/// goes back to the page it came from (the Referer) when that is on the gateway's origin.
#[tokio::test]
async fn an_unfilled_location_placeholder_returns_to_the_referring_page() {
    let env = Env::start().await;
    let login = |referer: Option<String>| {
        let mut r = http_client().get(format!(
            "{}/_gateway/login?return_to=%7Blocation%7D",
            env.url
        ));
        if let Some(referer) = referer {
            r = r.header("referer", referer);
        }
        r.send()
    };
    let r = login(Some(format!("{}/embed.html?view=1", env.url)))
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/embed.html?view=1");
    for other in [Some("https://evil.example/page".to_string()), None] {
        let r = login(other.clone()).await.unwrap();
        assert_eq!(r.status(), 302, "{other:?}");
        assert_eq!(r.headers()["location"], "/", "{other:?}");
    }
    env.stop().await;
}

#[tokio::test]
async fn return_to_never_leaves_the_origin() {
    let env = Env::start().await;
    let c = http_client();
    for bad in [
        "//evil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "https://evil.example",
        "https://evil.example/http://127.0.0.1/",
        "javascript:alert(1)",
        "%2F%2Fevil.example",
        "/%252F%252Fevil.example",
        "/%09/evil.example",
    ] {
        let r = c
            .get(format!(
                "{}/_gateway/login?return_to={}",
                env.url,
                percent_encoding::utf8_percent_encode(bad, percent_encoding::NON_ALPHANUMERIC)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert!(r.headers().get("location").is_none(), "{bad}");
        assert!(
            cookie_from(&r).is_none(),
            "no session for a refused login ({bad})"
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn logout_needs_same_origin_and_ends_both_sessions() {
    let env = Env::start().await;
    let cookie = env.login().await;
    assert_eq!(env.get("/mashup/sim/echo", &cookie).await.status(), 200);
    assert_eq!(env.sim().control().sessions().len(), 1);
    let c = http_client();
    let url = format!("{}/_gateway/logout", env.url);
    assert_eq!(
        c.get(&url)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    assert_eq!(
        c.post(&url)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let foreign = c
        .post(&url)
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    assert_eq!(
        env.get("/_gateway/me", &cookie).await.status(),
        200,
        "refused logouts change nothing"
    );

    let ok = c
        .post(&url)
        .header("cookie", &cookie)
        .header("origin", &env.url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(set_cookie(&ok).contains("Max-Age=0"), "cookie cleared");
    assert_eq!(env.get("/_gateway/me", &cookie).await.status(), 401);
    assert!(
        env.sim().control().sessions().is_empty(),
        "Qlik session deleted at QPS"
    );
    assert_eq!(env.sim().control().counters().sessions_deleted, 1);

    let again = env.login().await;
    let form = c
        .post(&url)
        .header("cookie", &again)
        .header("origin", &env.url)
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 303);
    assert_eq!(form.headers()["location"], "/_gateway/logged-out");
    env.stop().await;
}

#[tokio::test]
async fn https_listener_speaks_h2_and_uses_a_host_prefixed_secure_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cp, kp) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cp, cert.cert.pem()).unwrap();
    std::fs::write(&kp, cert.signing_key.serialize_pem()).unwrap();
    let env = Env::with(Setup {
        tls: Some((cp, kp)),
        ..Default::default()
    })
    .await;
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    for h2 in [true, false] {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .add_root_certificate(root.clone());
        b = if h2 { b } else { b.http1_only() };
        let c = b.build().unwrap();
        let r = c
            .get(format!("{}/_gateway/login", env.url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.version(),
            if h2 {
                reqwest::Version::HTTP_2
            } else {
                reqwest::Version::HTTP_11
            }
        );
        let sc = set_cookie(&r);
        assert!(sc.starts_with("__Host-qlik-gateway="), "{sc}");
        assert!(
            sc.contains("Secure") && sc.contains("HttpOnly") && sc.contains("Path=/"),
            "{sc}"
        );
        let cookie = sc.split(';').next().unwrap().to_string();
        let echo = c
            .get(format!("{}/mashup/sim/echo", env.url))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(echo.status(), 200);
        let v: serde_json::Value = echo.json().await.unwrap();
        assert_eq!(v["headers"]["x-forwarded-proto"][0], "https");
    }
    env.stop().await;
}

fn trusted_header_auth(trusted: &str) -> String {
    format!(
        "[auth]\nprovider = \"trusted_header\"\n[auth.trusted_header]\nheader = \"X-Remote-User\"\ntrusted_proxies = [\"{trusted}\"]\nuser_directory = \"CORP\"\n"
    )
}

#[tokio::test]
async fn trusted_header_from_a_trusted_proxy_logs_in() {
    let env = Env::with(Setup {
        auth: Some(trusted_header_auth("127.0.0.1/32")),
        ..Default::default()
    })
    .await;
    let c = http_client();
    let r = c
        .get(format!("{}/_gateway/login", env.url))
        .header("x-remote-user", "CORP\\bob")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let cookie = cookie_from(&r).unwrap();
    let me: serde_json::Value = env.get("/_gateway/me", &cookie).await.json().await.unwrap();
    assert_eq!(
        (me["userDirectory"].as_str(), me["userId"].as_str()),
        (Some("CORP"), Some("bob"))
    );
    let r = c
        .get(format!("{}/_gateway/login", env.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "trusted proxy but no header");
    env.stop().await;
}

#[tokio::test]
async fn trusted_header_from_anyone_else_is_refused() {
    let env = Env::with(Setup {
        auth: Some(trusted_header_auth("10.9.9.9/32")),
        ..Default::default()
    })
    .await;
    let r = http_client()
        .get(format!("{}/_gateway/login", env.url))
        .header("x-remote-user", "CORP\\admin")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(cookie_from(&r).is_none());
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "untrusted_identity_header");
    env.stop().await;
}

#[tokio::test]
async fn large_headers_up_to_the_limit_are_accepted() {
    let env = Env::start().await;
    // A Kerberos ticket with a large PAC: 60 KiB in one header.
    let big = "a".repeat(60 * 1024);
    let r = http_client()
        .get(format!("{}/_gateway/login", env.url))
        .header("authorization", format!("Negotiate {big}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let huge = "a".repeat(200 * 1024);
    let r = http_client()
        .get(format!("{}/_gateway/login", env.url))
        .header("x-huge", huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    env.stop().await;
}

#[tokio::test]
async fn slow_header_senders_are_cut_off() {
    let env = Env::with(Setup {
        server: "header_read_timeout = \"1s\"".into(),
        ..Default::default()
    })
    .await;
    let addr = env.addr;
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        let mut buf = Vec::new();
        // The gateway closes the connection (possibly after a 408); a read error would be a timeout.
        s.read_to_end(&mut buf)
            .map(|_| String::from_utf8_lossy(&buf).to_string())
    })
    .await
    .unwrap();
    let text =
        closed.expect("connection closed by the gateway before the client's 10 s read timeout");
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    env.stop().await;
}

#[tokio::test]
async fn public_paths_need_no_session_and_gateway_paths_404() {
    let env = Env::with(Setup {
        mashup: "public_paths = [\"/\"]".into(),
        ..Default::default()
    })
    .await;
    let r = http_client()
        .get(format!("{}/", env.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the built-in page is public here");
    let r = http_client()
        .get(format!("{}/_gateway/nope", env.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http_client()
        .get(format!("{}/_gateway/healthz", env.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    env.stop().await;
}

/// A link to the login from another site (the Lax cookie goes along) ends nothing: a user who is
/// logged in is sent back to `return_to` with their session, and its websockets, untouched.
#[tokio::test]
async fn login_with_a_live_session_goes_back_and_ends_nothing() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let mut ws = env
        .ws(&format!("/mashup/app/{}", SALES_APP_ID), Some(&cookie))
        .await
        .expect("ws");
    let v = ws.call(-1, "EngineVersion", serde_json::json!([])).await;
    assert!(v["result"]["qVersion"].is_object(), "{v}");

    let again = http_client()
        .get(format!("{}/_gateway/login?return_to=/app/y", env.url))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 302);
    assert_eq!(again.headers()["location"], "/app/y");
    assert!(cookie_from(&again).is_none(), "no new session was made");
    assert_eq!(env.get("/_gateway/me", &cookie).await.status(), 200);
    let v = ws.call(-1, "EngineVersion", serde_json::json!([])).await;
    assert!(
        v["result"]["qVersion"].is_object(),
        "the socket still relays: {v}"
    );
    env.stop().await;
}

#[tokio::test]
async fn logins_beyond_the_limit_per_user_are_refused_until_one_ends() {
    let env = Env::with(Setup {
        session: "max_sessions_per_user = 2".into(),
        ..Setup::default()
    })
    .await;
    let first = env.login().await;
    let _second = env.login().await;
    let c = http_client();
    let refused = c
        .get(format!("{}/_gateway/login", env.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert!(cookie_from(&refused).is_none(), "no session was made");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "too_many_sessions", "{body}");
    let page = c
        .get(format!("{}/_gateway/login", env.url))
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 429, "a browser gets the page, not a loop");

    let out = c
        .post(format!("{}/_gateway/logout", env.url))
        .header("cookie", &first)
        .header("origin", &env.url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    let again = env.login().await;
    assert_eq!(env.get("/_gateway/me", &again).await.status(), 200);
    env.stop().await;
}

/// Every page the gateway writes itself can neither be framed nor sniffed, and runs no script
/// but its own.
#[tokio::test]
async fn gateway_pages_cannot_be_framed_sniffed_or_fed_scripts() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let c = http_client();
    let check = |r: &reqwest::Response, scripts: bool| {
        let h = r.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("base-uri 'none'"), "{csp}");
        let script_src = csp.split(';').find(|d| d.trim().starts_with("script-src"));
        match script_src {
            Some(d) => {
                assert!(scripts, "{csp}");
                assert!(
                    !d.contains("unsafe-inline") && d.contains("'sha256-"),
                    "{csp}"
                );
            }
            None => assert!(!scripts, "{csp}"),
        }
    };
    let html = |path: &str, cookie: Option<&str>| {
        let mut rb = c
            .get(format!("{}{path}", env.url))
            .header("sec-fetch-mode", "navigate")
            .header("accept", "text/html");
        if let Some(k) = cookie {
            rb = rb.header("cookie", k);
        }
        rb.send()
    };
    let r = html("/_gateway/logged-out", None).await.unwrap();
    assert_eq!(r.status(), 200);
    check(&r, false);
    // An error answered to a navigation is a page too.
    let r = html("/mashup/..%5cqrs/about", Some(&cookie)).await.unwrap();
    assert_eq!(r.status(), 400);
    check(&r, false);
    // The built-in mashup page runs its one inline script, allowed by its hash.
    let r = html("/", Some(&cookie)).await.unwrap();
    assert_eq!(r.status(), 200);
    check(&r, true);
    env.stop().await;
}

/// A navigation to the `logoutUri` Qlik announces (rewritten to the gateway's `{mount}/qps/user`).
async fn navigate_to_logout_uri(env: &Env, cookie: &str, site: &str) -> reqwest::Response {
    http_client()
        .get(format!("{}/mashup/qps/user", env.url))
        .header("cookie", cookie)
        .header("accept", "text/html,application/xhtml+xml")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .header("sec-fetch-site", site)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_navigation_to_qliks_logout_uri_logs_out_and_a_fetch_reads_the_user() {
    let env = Env::start().await;
    let cookie = env.login().await;
    // What client libraries do with the same URL: read the user.
    let r = http_client()
        .get(format!("{}/mashup/qps/user", env.url))
        .header("cookie", &cookie)
        .header("sec-fetch-mode", "cors")
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["userId"], "alice");

    // A link on another site only gets a confirmation page.
    let r = navigate_to_logout_uri(&env, &cookie, "cross-site").await;
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("action=\"/_gateway/logout\""));
    assert_eq!(env.get("/_gateway/me", &cookie).await.status(), 200);

    let r = navigate_to_logout_uri(&env, &cookie, "same-origin").await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/_gateway/logged-out");
    assert!(cookie_from(&r).is_some_and(|c| c.ends_with('=')));
    assert_eq!(env.get("/_gateway/me", &cookie).await.status(), 401);
    assert!(env.sim().control().sessions().is_empty());
    env.stop().await;
}
