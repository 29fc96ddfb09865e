//! Test harness: a qlik-sim and a gateway in-process on ephemeral loopback ports, plus clients.
#![allow(dead_code)]
// Shared by several test files, each using a part: `pub` is how they see it.
#![allow(unreachable_pub)]

pub mod browser;
pub mod disk;
pub mod fake_idp;
pub mod fault_proxy;
#[cfg(feature = "kerberos")]
pub mod kdc;
pub mod oidc;
pub mod redis_server;

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use qlik_gateway::config;
use qlik_gateway::server::Server;
use qlik_gateway::state::AppState;
use qlik_sim::{Sim, SimOptions};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The upstream-facing parts of a gateway config that tests vary, as TOML lines per section.
#[derive(Default, Clone)]
pub struct Setup {
    pub sim: SimOptions,
    /// Lines appended to `[server]`.
    pub server: String,
    /// Lines appended to `[session]`.
    pub session: String,
    /// Replaces the whole `[auth]` section (default: static DEV\alice).
    pub auth: Option<String>,
    /// Lines appended to `[qlik]`.
    pub qlik: String,
    /// The `[mashup]` section body.
    pub mashup: String,
    /// The `[security]` section body.
    pub security: String,
    /// Overrides `qlik.qps_api_url` (e.g. a closed port).
    pub qps_api_url: Option<String>,
    /// Overrides `qlik.proxy_url` (e.g. a [`fault_proxy::FaultProxy`] in front of the sim).
    pub proxy_url: Option<String>,
    /// Overrides the client certificate and key (e.g. the sim's untrusted pair).
    pub untrusted_client_cert: bool,
    /// Serve HTTPS with this certificate chain and key (PEM paths); `public_url` becomes https.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Start the sim with these certificates (another sim's, for a second node of one site).
    pub sim_pki: Option<qlik_sim::PkiPaths>,
    /// More Qlik proxy nodes after the sim's own: (proxy_url, qps_api_url) each.
    pub extra_nodes: Vec<(String, String)>,
    /// The host name in `public_url` (and [`Env::url`]) instead of the listener's IP, e.g.
    /// `localhost` so that Kerberos clients ask for `HTTP/localhost`.
    pub public_host: Option<String>,
}

/// A running simulated Qlik and gateway.
pub struct Env {
    pub sim: Option<Sim>,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub state: Arc<AppState>,
    pub toml: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Env {
    pub async fn start() -> Env {
        Self::with(Setup::default()).await
    }

    pub async fn with(setup: Setup) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = match &setup.sim_pki {
            Some(pki) => Sim::start_with_pki(setup.sim.clone(), pki).await,
            None => Sim::start(setup.sim.clone(), &dir.path().join("pki")).await,
        }
        .expect("qlik-sim starts");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let scheme = if setup.tls.is_some() { "https" } else { "http" };
        let url = match &setup.public_host {
            Some(h) => format!("{scheme}://{h}:{}", addr.port()),
            None => format!("{scheme}://{addr}"),
        };
        let toml = config_toml(&sim, &setup, addr);
        let cfg =
            config::load_str(&toml).unwrap_or_else(|e| panic!("test config invalid: {e}\n{toml}"));
        let state = AppState::new(cfg).expect("state");
        let server = Server::with_listener(state.clone(), listener).expect("server");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Env {
            sim: Some(sim),
            dir,
            addr,
            url,
            state,
            toml,
            shutdown: Some(tx),
            server: Some(handle),
        }
    }

    pub fn sim(&self) -> &Sim {
        self.sim.as_ref().expect("sim running")
    }

    /// Logs in with the configured provider and returns the `Cookie` header value.
    pub async fn login(&self) -> String {
        let resp = http_client()
            .get(format!("{}/_gateway/login", self.url))
            .send()
            .await
            .expect("login request");
        assert_eq!(resp.status(), 302, "login should redirect");
        cookie_from(&resp).expect("login sets the gateway cookie")
    }

    /// GET with the given cookie.
    pub async fn get(&self, path: &str, cookie: &str) -> reqwest::Response {
        http_client()
            .get(format!("{}{}", self.url, path))
            .header("cookie", cookie)
            .header("accept", "application/json")
            .send()
            .await
            .expect("request")
    }

    /// Opens a websocket through the gateway with the public origin.
    pub async fn ws(&self, path: &str, cookie: Option<&str>) -> Result<Ws, tungstenite::Error> {
        self.ws_with_origin(path, cookie, Some(&self.url)).await
    }

    pub async fn ws_with_origin(
        &self,
        path: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Ws, tungstenite::Error> {
        let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}{}",
            self.addr, path
        ))?;
        if let Some(c) = cookie {
            req.headers_mut()
                .insert("cookie", c.parse().expect("cookie header"));
        }
        if let Some(o) = origin {
            req.headers_mut()
                .insert("origin", o.parse().expect("origin header"));
        }
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(128 << 20))
            .max_frame_size(Some(128 << 20));
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(req, Some(config), false).await?;
        Ok(Ws::new(ws))
    }

    /// Stops the gateway (graceful) and the sim.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn http_client() -> reqwest::Client {
    qlik_gateway::net::tls::install_default_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// `name=value` of the gateway cookie a response sets.
pub fn cookie_from(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.contains("qlik-gateway="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

/// One URL as a TOML string, several as a TOML array.
fn toml_list(urls: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = urls.map(|u| format!("\"{u}\"")).collect();
    if v.len() == 1 {
        v[0].clone()
    } else {
        format!("[{}]", v.join(", "))
    }
}

pub fn config_toml(sim: &Sim, s: &Setup, addr: SocketAddr) -> String {
    let pki = sim.pki();
    let (cert, key) = if s.untrusted_client_cert {
        (&pki.untrusted_client_cert, &pki.untrusted_client_key)
    } else {
        (&pki.client_cert, &pki.client_key)
    };
    let auth = s.auth.clone().unwrap_or_else(|| {
        "[auth]\nprovider = \"static\"\n[auth.static]\nuser_directory = \"DEV\"\nuser_id = \"alice\"\n".into()
    });
    let (scheme, tls) = match &s.tls {
        Some((c, k)) => (
            "https",
            format!(
                "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                c.display(),
                k.display()
            ),
        ),
        None => ("http", String::new()),
    };
    let public = match &s.public_host {
        Some(h) => format!("{h}:{}", addr.port()),
        None => addr.to_string(),
    };
    format!(
        r#"
[server]
listen = "{addr}"
public_url = "{scheme}://{public}"
{server}
{tls}

[session]
store = "memory"
{session}

{auth}

[qlik]
proxy_url = {proxy}
qps_api_url = {qps}
virtual_proxy = "mashup"
session_cookie = "X-Qlik-Session-mashup"
client_cert = "{cert}"
client_key = "{key}"
ca_cert = "{ca}"
{qlik}

[mashup]
{mashup}

[security]
{security}
"#,
        server = s.server,
        session = s.session,
        proxy = toml_list(
            std::iter::once(s.proxy_url.clone().unwrap_or_else(|| sim.proxy_url()))
                .chain(s.extra_nodes.iter().map(|n| n.0.clone()))
        ),
        qps = toml_list(
            std::iter::once(s.qps_api_url.clone().unwrap_or_else(|| sim.qps_api_url()))
                .chain(s.extra_nodes.iter().map(|n| n.1.clone()))
        ),
        cert = cert.display(),
        key = key.display(),
        ca = pki.ca_cert.display(),
        qlik = s
            .qlik
            .replace("{engine_url}", &sim.engine_url().unwrap_or_default()),
        mashup = s.mashup,
        security = s.security,
    )
}

/// A websocket client speaking Qlik's JSON-RPC.
pub struct Ws {
    pub inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Ws {
    /// A client on a socket opened some other way (with headers of the test's own).
    pub fn new(inner: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Ws {
        Ws { inner, next_id: 1 }
    }

    /// Next text frame as JSON (skipping pings/pongs); `None` when the socket closed.
    pub async fn next_json(&mut self) -> Option<serde_json::Value> {
        loop {
            match self.inner.next().await? {
                Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Next message of any kind.
    pub async fn next_message(&mut self) -> Option<Message> {
        self.inner.next().await?.ok()
    }

    /// Reads frames until the notification `method` arrives; returns its params.
    pub async fn wait_notification(&mut self, method: &str) -> serde_json::Value {
        loop {
            let v = self
                .next_json()
                .await
                .unwrap_or_else(|| panic!("socket closed before {method}"));
            if v["method"] == method {
                return v["params"].clone();
            }
        }
    }

    /// Sends a request and returns its response (notifications in between are skipped).
    pub async fn call(
        &mut self,
        handle: i64,
        method: &str,
        params: serde_json::Value,
    ) -> serde_json::Value {
        let id = self.next_id;
        self.next_id += 1;
        let req = serde_json::json!({"jsonrpc": "2.0", "id": id, "handle": handle, "method": method, "params": params});
        self.inner
            .send(Message::text(req.to_string()))
            .await
            .expect("send");
        loop {
            let v = self
                .next_json()
                .await
                .unwrap_or_else(|| panic!("socket closed awaiting {method}"));
            if v["id"] == id {
                return v;
            }
        }
    }
}

/// The real `qlik-gateway` binary, started with a config file and extra environment, logging
/// JSON to stderr; ready once it logged where it listens.
pub struct Binary {
    pub child: tokio::process::Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// Everything logged so far; the reader task appends while the process runs.
    log: Arc<std::sync::Mutex<String>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Binary {
    /// Starts the binary with `toml` (written to `dir`) and waits until it listens.
    pub async fn start(
        dir: &std::path::Path,
        toml: &str,
        envs: &[(&str, std::ffi::OsString)],
    ) -> Binary {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let toml = format!("[log]\nformat = \"json\"\n\n{toml}");
        let cfg = dir.join("gateway.toml");
        std::fs::write(&cfg, toml).expect("write config");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_qlik-gateway"))
            .arg("--config")
            .arg(&cfg)
            .envs(envs.iter().map(|(k, v)| (*k, v)))
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start qlik-gateway");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut seen = String::new();
        let addr = loop {
            let Ok(Some(line)) = lines.next_line().await else {
                panic!("gateway exited before listening:\n{seen}");
            };
            seen.push_str(&line);
            seen.push('\n');
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "qlik-gateway listening" {
                break v["listen"].as_str().expect("listen").to_string();
            }
        };
        let log = Arc::new(std::sync::Mutex::new(seen));
        let sink = log.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                let mut all = sink.lock().expect("log");
                all.push_str(&l);
                all.push('\n');
            }
        });
        Binary {
            child,
            addr,
            log,
            reader,
        }
    }

    /// What the gateway logged so far.
    pub fn log_so_far(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// Waits (20 s at most) until `count` log lines contain `needle`; returns the log.
    pub async fn wait_for_log(&self, needle: &str, count: usize) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let log = self.log_so_far();
            if log.lines().filter(|l| l.contains(needle)).count() >= count {
                return log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the gateway did not log {needle:?} {count} times:\n{log}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends SIGTERM, waits for the exit and returns everything it logged.
    pub async fn stop(mut self) -> (std::process::ExitStatus, String) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let status = tokio::time::timeout(std::time::Duration::from_secs(20), self.child.wait())
            .await
            .expect("exits within the drain time")
            .expect("wait");
        let _ = (&mut self.reader).await;
        (status, self.log_so_far())
    }
}
