//! The Qlik side in `ticket` and `header` modes against qlik-sim: the user reaches Qlik, the
//! credential never reaches the browser, attributes travel, and client-sent copies are dropped.

use crate::common::*;
use futures_util::future::join_all;
use qlik_sim::{HeaderAuth, SimOptions};
use serde_json::Value;

const STATIC_WITH_GROUPS: &str = "[auth]\nprovider = \"static\"\n[auth.static]\nuser_directory = \"DEV\"\nuser_id = \"alice\"\nattributes = [{ Group = \"Sales\" }, { Email = \"alice@dev\" }]\n";

async fn echo(env: &Env, cookie: &str) -> (reqwest::header::HeaderMap, Value) {
    let r = env.get("/mashup/sim/echo", cookie).await;
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    (headers, r.json().await.expect("echo JSON"))
}

fn no_qlik_credentials_for_the_browser(h: &reqwest::header::HeaderMap) {
    for v in h.get_all("set-cookie") {
        let v = v.to_str().unwrap_or_default();
        assert!(!v.to_ascii_lowercase().starts_with("x-qlik-session"), "{v}");
    }
}

#[tokio::test]
async fn ticket_mode_redeems_server_side_and_passes_attributes() {
    let env = Env::with(Setup {
        qlik: "mode = \"ticket\"\n".into(),
        auth: Some(STATIC_WITH_GROUPS.into()),
        ..Setup::default()
    })
    .await;
    let cookie = env.login().await;
    // A burst of first requests: one ticket, one redemption, one Qlik session.
    let replies = join_all((0..10).map(|_| echo(&env, &cookie))).await;
    for (h, v) in &replies {
        assert_eq!(v["user"]["userId"], "alice");
        no_qlik_credentials_for_the_browser(h);
        assert!(
            !v.to_string().contains("qlikTicket"),
            "the browser's request carried no ticket"
        );
    }
    let c = env.sim().control().counters();
    assert_eq!(
        (c.tickets_issued, c.tickets_redeemed, c.sessions_created),
        (1, 1, 1),
        "{c:?}"
    );
    let s = &env.sim().control().sessions()[0];
    assert!(
        s.attributes.contains(&("Group".into(), "Sales".into())),
        "{s:?}"
    );
    assert!(
        s.attributes.contains(&("Email".into(), "alice@dev".into())),
        "{s:?}"
    );
    // The ticket was redeemed by the gateway, never by a request from the browser's side.
    let redemptions: Vec<_> = env
        .sim()
        .control()
        .requests()
        .into_iter()
        .filter(|r| {
            r.query
                .as_deref()
                .unwrap_or_default()
                .contains("qlikTicket")
        })
        .collect();
    assert_eq!(redemptions.len(), 1);
    assert!(
        redemptions[0].path.ends_with("/qps/user"),
        "{:?}",
        redemptions[0]
    );

    // Qlik loses the session: a new ticket makes a new one, invisibly.
    env.sim().control().expire_all_sessions();
    let (_, v) = echo(&env, &cookie).await;
    assert_eq!(v["user"]["userId"], "alice");
    assert_eq!(env.sim().control().counters().tickets_issued, 2);

    // The engine websocket rides on the redeemed session.
    let mut ws = env.ws("/mashup/app/", Some(&cookie)).await.expect("ws");
    let auth = ws.wait_notification("OnAuthenticationInformation").await;
    assert_eq!(auth["mustAuthenticate"], false, "{auth}");
    let _ = futures_util::SinkExt::close(&mut ws.inner).await;
    env.stop().await;
}

#[tokio::test]
async fn a_ticket_that_cannot_be_redeemed_is_retried_once_then_explained() {
    // This virtual proxy names its cookie differently from the gateway's configuration: no
    // redemption gives the gateway a cookie it can use.
    let env = Env::with(Setup {
        qlik: "mode = \"ticket\"\n".into(),
        sim: SimOptions {
            session_cookie: "X-Qlik-Session-other".into(),
            ..SimOptions::default()
        },
        ..Setup::default()
    })
    .await;
    let cookie = env.login().await;
    let r = env.get("/mashup/sim/echo", &cookie).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "qlik_ticket_redemption", "{v}");
    assert_eq!(
        env.sim().control().counters().tickets_issued,
        2,
        "one retry with a new ticket"
    );
    env.stop().await;
}

fn header_setup(pattern: Option<&str>) -> Setup {
    let mut qlik = "mode = \"header\"\nheader_name = \"hdr-usr\"\n".to_string();
    if let Some(p) = pattern {
        qlik.push_str(&format!("header_pattern = '{p}'\n"));
    }
    Setup {
        sim: SimOptions {
            header_auth: Some(HeaderAuth {
                header: "hdr-usr".into(),
                dynamic_pattern: pattern.map(str::to_string),
            }),
            ..SimOptions::default()
        },
        qlik,
        ..Setup::default()
    }
}

#[tokio::test]
async fn header_mode_names_the_user_on_every_request_and_drops_client_copies() {
    let env = Env::with(header_setup(None)).await;
    let cookie = env.login().await;
    let r = http_client()
        .get(format!("{}/mashup/sim/echo", env.url))
        .header("cookie", &cookie)
        .header("hdr-usr", "UserDirectory=CORP; UserId=admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    no_qlik_credentials_for_the_browser(r.headers());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["user"]["userDirectory"], "DEV", "{v}");
    assert_eq!(v["user"]["userId"], "alice", "{v}");
    assert_eq!(
        v["headers"]["hdr-usr"],
        serde_json::json!(["UserDirectory=DEV; UserId=alice"]),
        "{v}"
    );
    let c = env.sim().control().counters();
    assert_eq!(c.qps_requests, 0, "header mode needs no QPS call: {c:?}");
    // The websocket upgrade carries it too.
    let mut ws = env.ws("/mashup/app/", Some(&cookie)).await.expect("ws");
    let auth = ws.wait_notification("OnAuthenticationInformation").await;
    assert_eq!(auth["mustAuthenticate"], false, "{auth}");
    assert_eq!(auth["userId"], "alice", "{auth}");
    let _ = futures_util::SinkExt::close(&mut ws.inner).await;
    env.stop().await;
}

#[tokio::test]
async fn header_mode_with_a_dynamic_pattern() {
    let env = Env::with(header_setup(Some("$ud\\$id"))).await;
    let cookie = env.login().await;
    let (_, v) = echo(&env, &cookie).await;
    assert_eq!(
        v["headers"]["hdr-usr"],
        serde_json::json!(["DEV\\alice"]),
        "{v}"
    );
    assert_eq!(v["user"]["userId"], "alice");
    env.stop().await;
}

#[test]
fn header_mode_over_plain_http_warns_and_needs_a_header_name() {
    let dir = tempfile::tempdir().unwrap();
    let pem = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    for f in ["c.pem", "r.pem"] {
        std::fs::write(dir.path().join(f), pem.cert.pem()).unwrap();
    }
    std::fs::write(dir.path().join("k.pem"), pem.signing_key.serialize_pem()).unwrap();
    let toml = |mode: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:8080\"\n[auth]\nprovider = \"static\"\n[auth.static]\nuser_directory = \"D\"\nuser_id = \"u\"\n[qlik]\nproxy_url = \"http://qlik.example.com\"\nqps_api_url = \"https://qlik.example.com:4243\"\nvirtual_proxy = \"hdr\"\nsession_cookie = \"X-Qlik-Session-hdr-HTTP\"\n{mode}\nclient_cert = \"{d}/c.pem\"\nclient_key = \"{d}/k.pem\"\nca_cert = \"{d}/r.pem\"\n",
            d = dir.path().display()
        )
    };
    let cfg = qlik_gateway::config::load_str(&toml("mode = \"header\"\nheader_name = \"hdr-usr\""))
        .unwrap();
    assert!(
        cfg.warnings
            .iter()
            .any(|w| w.starts_with("SECURITY") && w.contains("header")),
        "{:?}",
        cfg.warnings
    );
    let e = qlik_gateway::config::load_str(&toml("mode = \"header\"")).unwrap_err();
    assert_eq!(e.key_name(), Some("qlik.header_name"), "{e}");
    let e =
        qlik_gateway::config::load_str(&toml("mode = \"header\"\nheader_name = \"X-Qlik-User\""))
            .unwrap_err();
    assert_eq!(e.key_name(), Some("qlik.header_name"), "{e}");
}

#[tokio::test]
async fn engine_websockets_can_go_straight_to_the_engine() {
    let env = Env::with(Setup {
        sim: SimOptions {
            engine_port: Some(0),
            ..SimOptions::default()
        },
        qlik: "engine_url = \"{engine_url}\"\n".into(),
        auth: Some(STATIC_WITH_GROUPS.into()),
        ..Setup::default()
    })
    .await;
    let cookie = env.login().await;
    let mut ws = env
        .ws(
            &format!("/mashup/app/{}", qlik_sim::SALES_APP_ID),
            Some(&cookie),
        )
        .await
        .expect("ws");
    let connected = ws.wait_notification("OnConnected").await;
    assert!(connected["qSessionState"].is_string(), "{connected}");
    let who = ws
        .call(-1, "GetAuthenticatedUser", serde_json::json!([]))
        .await;
    assert_eq!(
        who["result"]["qReturn"], "UserDirectory=DEV; UserId=alice",
        "{who}"
    );
    let c = env.sim().control().counters();
    assert_eq!(c.engine_direct_upgrades, 1, "{c:?}");
    assert_eq!(c.ws_upgrades, 0, "the proxy was bypassed: {c:?}");
    let direct: Vec<_> = env
        .sim()
        .control()
        .requests()
        .into_iter()
        .filter(|r| r.direct_engine)
        .collect();
    assert_eq!(direct.len(), 1);
    let h = &direct[0].headers;
    assert_eq!(
        h["x-qlik-user"],
        vec!["UserDirectory=DEV; UserId=alice".to_string()]
    );
    assert!(
        h.get("cookie")
            .is_none_or(|c| !c.iter().any(|v| v.contains("qlik-gateway"))),
        "{h:?}"
    );
    let _ = futures_util::SinkExt::close(&mut ws.inner).await;
    env.stop().await;
}
