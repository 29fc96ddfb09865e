//! `/_gateway/metrics` over real sockets, against qlik-sim: what a login, a refused login, a
//! proxied request, an engine websocket and a logout do to the counters; the text parses as
//! Prometheus text; and with `server.admin_listen` the metrics move to the admin listener.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use qlik_gateway::config;
use qlik_gateway::server::Server;
use qlik_gateway::state::AppState;
use qlik_sim::{Sim, SALES_APP_ID};
use serde_json::json;

/// A safety net so a broken gateway fails the test instead of hanging it; never a synchronisation.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

const PHASE_COUNT: &str = "qlik_gateway_proxy_phase_duration_seconds_count";
const PHASES: [&str; 4] = [
    "session",
    "qlik_session",
    "upstream_connection",
    "upstream_response",
];

/// One sample line: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses Prometheus/OpenMetrics text strictly: every line is a `# ` comment (HELP, TYPE, UNIT,
/// EOF) or `name{k="v",…} value`, with a valid metric name, quoted label values and a number.
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix("# ") {
            let kind = c.split(' ').next().unwrap_or("");
            assert!(
                ["HELP", "TYPE", "UNIT", "EOF"].contains(&kind),
                "unexpected comment line {line:?}"
            );
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value on line {line:?}"));
        let name = &line[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name on line {line:?}"
        );
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut r = r;
            loop {
                if let Some(after) = r.strip_prefix('}') {
                    r = after;
                    break;
                }
                let eq = r
                    .find("=\"")
                    .unwrap_or_else(|| panic!("bad label in {line:?}"));
                let key = &r[..eq];
                assert!(
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label name {key:?} in {line:?}"
                );
                r = &r[eq + 2..];
                let mut value = String::new();
                let mut chars = r.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => panic!("dangling escape in {line:?}"),
                        },
                        Some((i, '"')) => break i,
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value in {line:?}"),
                    }
                };
                labels.insert(key.to_string(), value);
                r = &r[end + 1..];
                if let Some(after) = r.strip_prefix(',') {
                    r = after;
                }
            }
            rest = r;
        }
        let value_text = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before the value in {line:?}"));
        // An optional timestamp may follow; the gateway writes none.
        assert!(
            !value_text.contains(' '),
            "unexpected timestamp in {line:?}"
        );
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("value {v:?} is not a number in {line:?}")),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// A parsed scrape.
struct Scrape(Vec<Sample>);

impl Scrape {
    /// The one sample named `name` with exactly `labels`; `None` if there is none.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let found: Vec<_> = self
            .0
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?} appears twice");
        found.first().map(|s| s.value)
    }

    /// Like [`Self::get`], failing when absent.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
    }

    /// The sum of every sample named `name` (any labels).
    fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }
}

/// GETs `url` (the metrics) and parses it, checking the content type.
async fn scrape(url: &str) -> Scrape {
    let r = http_client().get(url).send().await.expect("scrape");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    Scrape(parse(&r.text().await.expect("body")))
}

fn trusted_header_auth() -> String {
    "[auth]\nprovider = \"trusted_header\"\n[auth.trusted_header]\nheader = \"X-Remote-User\"\ntrusted_proxies = [\"127.0.0.1/32\"]\nuser_directory = \"CORP\"\n".into()
}

const REQUESTS: &str = "qlik_gateway_http_requests_total";

#[tokio::test]
async fn a_login_a_proxied_request_a_websocket_and_a_refusal_are_counted() {
    let env = Env::with(Setup {
        auth: Some(trusted_header_auth()),
        ..Default::default()
    })
    .await;
    let metrics = format!("{}/_gateway/metrics", env.url);

    // Before anything: every fixed series is there at zero.
    let s = scrape(&metrics).await;
    for class in ["gateway", "qlik", "websocket", "mashup"] {
        let count = "qlik_gateway_http_request_duration_seconds_count";
        assert_eq!(s.value(count, &[("route_class", class)]), 0.0, "{class}");
    }
    assert_eq!(s.value("qlik_gateway_websockets_open", &[]), 0.0);
    assert_eq!(s.value("qlik_gateway_sessions", &[]), 0.0);
    for event in ["created", "recreated", "failed"] {
        let name = "qlik_gateway_qlik_sessions_total";
        assert_eq!(s.value(name, &[("event", event)]), 0.0);
    }
    assert_eq!(
        s.value(
            "qlik_gateway_qlik_notifications_total",
            &[("method", "OnSessionTimedOut")]
        ),
        0.0
    );
    assert_eq!(s.value("qlik_gateway_login_prompts_total", &[]), 0.0);
    assert_eq!(s.value("qlik_gateway_store_errors_total", &[]), 0.0);
    for phase in PHASES {
        assert_eq!(s.value(PHASE_COUNT, &[("phase", phase)]), 0.0, "{phase}");
    }

    // A login through the trusted front proxy (127.0.0.1).
    let r = http_client()
        .get(format!("{}/_gateway/login", env.url))
        .header("x-remote-user", "CORP\\alice")
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 302);
    let cookie = cookie_from(&r).expect("cookie");

    // The same header from another address: refused.
    let untrusted = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = untrusted
        .get(format!("{}/_gateway/login", env.url))
        .header("x-remote-user", "CORP\\mallory")
        .header("accept", "application/json")
        .send()
        .await
        .expect("refused login");
    assert_eq!(r.status(), 400);

    // A proxied request to Qlik (this creates the Qlik session).
    let r = env
        .get("/mashup/resources/autogenerated/qlik-styles.css", &cookie)
        .await;
    assert_eq!(r.status(), 200);

    // An engine websocket: greeting, one call.
    let mut ws = within(
        "websocket",
        env.ws(&format!("/mashup/app/{SALES_APP_ID}"), Some(&cookie)),
    )
    .await
    .expect("websocket opens");
    let auth = within("auth", ws.wait_notification("OnAuthenticationInformation")).await;
    assert_eq!(auth["mustAuthenticate"], false);
    let v = within("EngineVersion", ws.call(-1, "EngineVersion", json!([]))).await;
    assert!(v.get("result").is_some(), "{v}");

    let s = scrape(&metrics).await;
    assert_eq!(s.value("qlik_gateway_websockets_open", &[]), 1.0);
    let login = "qlik_gateway_logins_total";
    let provider = ("provider", "trusted_header");
    assert_eq!(
        s.value(login, &[provider, ("outcome", "success"), ("reason", "")]),
        1.0
    );
    assert_eq!(
        s.value(
            login,
            &[
                provider,
                ("outcome", "refused"),
                ("reason", "untrusted_identity_header")
            ]
        ),
        1.0
    );
    assert_eq!(s.sum(login), 2.0, "no other login series");
    assert_eq!(
        s.value(REQUESTS, &[("route_class", "gateway"), ("status", "302")]),
        1.0
    );
    assert_eq!(
        s.value(REQUESTS, &[("route_class", "gateway"), ("status", "400")]),
        1.0
    );
    assert_eq!(
        s.value(REQUESTS, &[("route_class", "qlik"), ("status", "200")]),
        1.0
    );
    assert_eq!(
        s.value(REQUESTS, &[("route_class", "websocket"), ("status", "101")]),
        1.0
    );
    let duration = "qlik_gateway_http_request_duration_seconds";
    let qlik = [("route_class", "qlik")];
    assert_eq!(s.value(&format!("{duration}_count"), &qlik), 1.0);
    assert!(s.value(&format!("{duration}_sum"), &qlik) > 0.0);
    assert_eq!(
        s.value(
            &format!("{duration}_bucket"),
            &[("route_class", "qlik"), ("le", "+Inf")]
        ),
        1.0
    );
    assert_eq!(
        s.value("qlik_gateway_qlik_sessions_total", &[("event", "created")]),
        1.0
    );
    assert_eq!(
        s.value(
            "qlik_gateway_qlik_sessions_total",
            &[("event", "recreated")]
        ),
        0.0
    );
    assert_eq!(
        s.value("qlik_gateway_qlik_sessions_total", &[("event", "failed")]),
        0.0
    );
    assert_eq!(
        s.value(
            "qlik_gateway_qps_request_duration_seconds_count",
            &[("call", "create_session")]
        ),
        1.0
    );
    assert_eq!(s.sum("qlik_gateway_qps_errors_total"), 0.0);
    assert_eq!(s.value("qlik_gateway_sessions", &[]), 1.0);
    // Where the proxied request's time went: its session was looked up (and the websocket's),
    // its Qlik session made (the QPS call is inside that phase), a connection to Qlik opened
    // and Qlik answered.
    let phase = |p: &str| s.value(PHASE_COUNT, &[("phase", p)]);
    assert_eq!(phase("session"), 2.0);
    assert_eq!(phase("qlik_session"), 1.0);
    assert_eq!(phase("upstream_connection"), 1.0);
    assert_eq!(phase("upstream_response"), 1.0);
    let phase_sum = "qlik_gateway_proxy_phase_duration_seconds_sum";
    assert!(
        s.value(phase_sum, &[("phase", "qlik_session")])
            >= s.value(
                "qlik_gateway_qps_request_duration_seconds_sum",
                &[("call", "create_session")]
            )
    );
    assert_eq!(
        s.value(
            "qlik_gateway_proxy_phase_duration_seconds_bucket",
            &[("phase", "upstream_response"), ("le", "+Inf")]
        ),
        1.0
    );
    let frames = "qlik_gateway_websocket_frames_total";
    let bytes = "qlik_gateway_websocket_bytes_total";
    let up = [("direction", "client_to_qlik")];
    let down = [("direction", "qlik_to_client")];
    assert_eq!(s.value(frames, &up), 1.0, "one call");
    // The greeting (OnAuthenticationInformation, OnConnected) and the answer.
    assert!(s.value(frames, &down) >= 2.0);
    assert!(s.value(bytes, &up) > 0.0);
    assert!(s.value(bytes, &down) > s.value(frames, &down));

    // Closed: the gauge goes back to 0 once the relay has ended.
    let _ = ws.inner.close(None).await;
    while let Some(Ok(_)) = ws.inner.next().await {}
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(&metrics).await;
        if s.value("qlik_gateway_websockets_open", &[]) == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "websockets_open stayed above 0 after the close"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A logout ends the session.
    let r = http_client()
        .post(format!("{}/_gateway/logout", env.url))
        .header("cookie", &cookie)
        .header("origin", &env.url)
        .header("accept", "application/json")
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 200);
    let s = scrape(&metrics).await;
    assert_eq!(s.value("qlik_gateway_logouts_total", &[]), 1.0);
    assert_eq!(s.value("qlik_gateway_sessions", &[]), 0.0);
    assert_eq!(
        s.value(
            "qlik_gateway_qps_request_duration_seconds_count",
            &[("call", "delete_session")]
        ),
        1.0
    );
    // Scrapes are requests too (gateway, 200); never a raw path as a label.
    assert!(s.value(REQUESTS, &[("route_class", "gateway"), ("status", "200")]) >= 4.0);
    for sample in s.0.iter().filter(|x| x.name == REQUESTS) {
        let class = sample.labels["route_class"].as_str();
        assert!(
            ["gateway", "qlik", "websocket", "mashup"].contains(&class),
            "{sample:?}"
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn openmetrics_is_served_when_asked_for() {
    let env = Env::start().await;
    let r = http_client()
        .get(format!("{}/_gateway/healthz", env.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    let r = http_client()
        .get(format!("{}/_gateway/metrics", env.url))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = r.text().await.expect("body");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let s = Scrape(parse(&text));
    assert_eq!(s.value("qlik_gateway_websockets_open", &[]), 0.0);
    // OpenMetrics names a counter's family without `_total`.
    assert!(text.contains("# TYPE qlik_gateway_http_requests counter"));
    assert_eq!(
        s.value(
            "qlik_gateway_http_requests_total",
            &[("route_class", "gateway"), ("status", "200")]
        ),
        1.0
    );
    assert!(text.contains("# TYPE qlik_gateway_http_request_duration_seconds histogram"));
    env.stop().await;
}

/// A gateway with `server.admin_listen` (port 0, so the address comes from the server).
struct AdminGateway {
    sim: Sim,
    _dir: tempfile::TempDir,
    url: String,
    admin: String,
    state: Arc<AppState>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl AdminGateway {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let setup = Setup {
            server: "admin_listen = \"127.0.0.1:0\"".into(),
            ..Default::default()
        };
        let sim = Sim::start(setup.sim.clone(), &dir.path().join("pki"))
            .await
            .expect("qlik-sim starts");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let toml = config_toml(&sim, &setup, addr);
        let cfg = config::load_str(&toml).expect("config");
        let state = AppState::new(cfg).expect("state");
        let server = Server::with_listener(state.clone(), listener).expect("server");
        let admin: SocketAddr = server.admin_addr().expect("admin listener bound");
        assert_ne!(admin.port(), 0);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Self {
            sim,
            _dir: dir,
            url: format!("http://{addr}"),
            admin: format!("http://{admin}"),
            state,
            shutdown: tx,
            server: handle,
        }
    }
}

#[tokio::test]
async fn with_an_admin_listener_metrics_leave_the_public_origin() {
    let gw = AdminGateway::start().await;
    let client = http_client();

    let r = client
        .get(format!("{}/_gateway/metrics", gw.url))
        .send()
        .await
        .expect("public metrics");
    assert_eq!(
        r.status(),
        404,
        "the public listener no longer serves metrics"
    );
    for path in ["/_gateway/healthz", "/_gateway/readyz"] {
        let r = client
            .get(format!("{}{path}", gw.url))
            .send()
            .await
            .expect("public health");
        assert_eq!(r.status(), 200, "{path} stays on the public listener");
    }

    // Traffic on the public listener shows on the admin listener's scrape.
    let r = client
        .get(format!("{}/_gateway/login", gw.url))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 302);
    let s = scrape(&format!("{}/_gateway/metrics", gw.admin)).await;
    assert_eq!(
        s.value(
            "qlik_gateway_logins_total",
            &[
                ("provider", "static"),
                ("outcome", "success"),
                ("reason", "")
            ]
        ),
        1.0
    );
    assert_eq!(
        s.value(REQUESTS, &[("route_class", "gateway"), ("status", "404")]),
        1.0
    );
    assert_eq!(s.value("qlik_gateway_sessions", &[]), 1.0);
    // Admin requests are not counted as the gateway's traffic.
    assert_eq!(
        s.get(REQUESTS, &[("route_class", "gateway"), ("status", "200")]),
        Some(2.0),
        "healthz and readyz on the public listener only"
    );

    for path in ["/_gateway/healthz", "/_gateway/readyz"] {
        let r = client
            .get(format!("{}{path}", gw.admin))
            .send()
            .await
            .expect("admin health");
        assert_eq!(r.status(), 200, "{path} on the admin listener");
    }
    for path in ["/_gateway/login", "/", "/mashup/hub/"] {
        let r = client
            .get(format!("{}{path}", gw.admin))
            .send()
            .await
            .expect("admin other");
        assert_eq!(
            r.status(),
            404,
            "{path} is not served on the admin listener"
        );
    }

    // The admin listener stops with the gateway.
    let admin = gw.admin.clone();
    let _ = gw.shutdown.send(());
    within("shutdown", gw.server).await.expect("server task");
    assert!(
        client
            .get(format!("{admin}/_gateway/healthz"))
            .send()
            .await
            .is_err(),
        "the admin listener is closed after shutdown"
    );
    drop(gw.state);
    gw.sim.shutdown().await;
}

#[tokio::test]
async fn check_config_refuses_an_admin_listener_on_the_public_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(Default::default(), &dir.path().join("pki"))
        .await
        .expect("qlik-sim starts");
    let addr: SocketAddr = "127.0.0.1:18080".parse().unwrap();
    for admin in ["127.0.0.1:18080", "0.0.0.0:18080"] {
        let setup = Setup {
            server: format!("admin_listen = \"{admin}\""),
            ..Default::default()
        };
        let err = config::load_str(&config_toml(&sim, &setup, addr))
            .expect_err("the public address refused");
        assert_eq!(err.key_name(), Some("server.admin_listen"), "{err}");
    }
    let setup = Setup {
        server: "admin_listen = \"127.0.0.1:19090\"".into(),
        ..Default::default()
    };
    let cfg = config::load_str(&config_toml(&sim, &setup, addr)).expect("another port is fine");
    assert_eq!(
        cfg.server.admin_listen,
        Some("127.0.0.1:19090".parse().unwrap())
    );
    let setup = Setup {
        server: "admin_listen = \"localhost\"".into(),
        ..Default::default()
    };
    let err = config::load_str(&config_toml(&sim, &setup, addr)).expect_err("not an address");
    assert_eq!(err.key_name(), Some("server.admin_listen"), "{err}");
    sim.shutdown().await;
}
