//! Qlik's fatal proxy notifications on an open engine websocket (`qlik-reference.md` §4), through
//! the gateway, against qlik-sim: each reaches the client byte for byte, is counted and logged
//! once with the user, and is followed by what the client needs. After `OnSessionTimedOut` and
//! `OnSessionClosed` the Qlik session is already renewed when the client's socket closes (with
//! 4002, a code enigma.js resumes from), so a new socket works at once; `OnSessionLoggedOut` and
//! the engine/license ones keep Qlik's close. `mustAuthenticate: true` reaches the client only
//! when the gateway session itself is gone, pointing at the gateway's login.
//!
//! The gateway talks to qlik-sim through a byte tap (plain-HTTP proxy), so "unchanged" is checked
//! against the bytes Qlik actually sent, not against a re-serialisation.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::common::{config_toml, cookie_from, http_client, Setup};
use futures_util::{SinkExt, StreamExt};
use qlik_gateway::config;
use qlik_gateway::server::Server;
use qlik_gateway::session::SessionId;
use qlik_gateway::state::AppState;
use qlik_gateway::stats::{FATAL_NOTIFICATIONS, OTHER_FATAL};
use qlik_sim::{AuthInfoTiming, Sim, SimOptions, SALES_APP_ID};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Raw = WebSocketStream<MaybeTlsStream<TcpStream>>;

const DIR: &str = "NOTE";

/// A safety net so a broken gateway fails the test instead of hanging it; never a synchronisation.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

// ---------------------------------------------------------------------------------------------
// The gateway's log, as JSON lines. The test binary holds every integration test, so a global
// subscriber would also take in the logs of all their gateways: each gateway here logs through a
// subscriber set on its test's thread instead (the tests run on current-thread runtimes, so the
// gateway's tasks log on that thread). The buffer is shared; each test has its own user, so its
// lines are told apart by the `user` field.

#[derive(Clone)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_buffer() -> &'static LogBuf {
    static LOGS: OnceLock<LogBuf> = OnceLock::new();
    LOGS.get_or_init(|| LogBuf(Arc::new(Mutex::new(Vec::new()))))
}

/// Sends what the gateway logs on this thread to [`log_buffer`] while the guard lives.
fn capture_logs() -> tracing::subscriber::DefaultGuard {
    let w = log_buffer().clone();
    tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter(tracing_subscriber::EnvFilter::new("qlik_gateway=info"))
            .with_writer(move || w.clone())
            .finish(),
    )
}

/// Log lines of the gateway that name `user` (`DIR\id`).
fn log_lines_of(user: &str) -> Vec<Value> {
    let all = log_buffer().0.lock().unwrap().clone();
    String::from_utf8_lossy(&all)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["user"] == user)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A TCP tap between the gateway and qlik-sim's (plain HTTP) proxy, keeping what Qlik sent.

struct Tap {
    url: String,
    from_qlik: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    async fn start(target: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tap");
        let url = format!("http://{}", listener.local_addr().expect("tap addr"));
        let from_qlik = Arc::new(Mutex::new(Vec::new()));
        let seen = from_qlik.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let idx = {
                        let mut v = seen.lock().unwrap();
                        v.push(Vec::new());
                        v.len() - 1
                    };
                    let (mut in_r, mut in_w) = inbound.into_split();
                    let (mut out_r, mut out_w) = outbound.into_split();
                    let up = async {
                        let _ = tokio::io::copy(&mut in_r, &mut out_w).await;
                        let _ = out_w.shutdown().await;
                    };
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match out_r.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            // Recorded before it is passed on: whatever the client got, Qlik sent.
                            seen.lock().unwrap()[idx].extend_from_slice(&buf[..n]);
                            if in_w.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = in_w.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Tap {
            url,
            from_qlik,
            task,
        }
    }

    /// Whether Qlik sent exactly these bytes on some connection.
    fn qlik_sent(&self, bytes: &[u8]) -> bool {
        self.from_qlik
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.windows(bytes.len()).any(|w| w == bytes))
    }
}

/// A server's (unmasked) close frame on the wire, for a short reason.
fn close_frame_bytes(f: &CloseFrame) -> Vec<u8> {
    let reason = f.reason.as_bytes();
    assert!(reason.len() < 124, "short reasons only");
    let mut b = vec![0x88, (2 + reason.len()) as u8];
    b.extend_from_slice(&u16::from(f.code).to_be_bytes());
    b.extend_from_slice(reason);
    b
}

// ---------------------------------------------------------------------------------------------
// qlik-sim, the tap and the gateway, for one user.

struct Gw {
    sim: Option<Sim>,
    tap: Tap,
    addr: SocketAddr,
    url: String,
    state: Arc<AppState>,
    /// `DIR\id`
    user: String,
    user_id: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
    /// The gateway's log goes to [`log_buffer`] while this lives.
    _logs: tracing::subscriber::DefaultGuard,
}

impl Gw {
    async fn start(user_id: &str, sim: SimOptions) -> Gw {
        Self::start_with(user_id, sim, "").await
    }

    /// With `session` lines added to the gateway's `[session]` section.
    async fn start_with(user_id: &str, sim: SimOptions, session: &str) -> Gw {
        let logs = capture_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = Sim::start(
            SimOptions {
                proxy_tls: false,
                ..sim
            },
            &dir.path().join("pki"),
        )
        .await
        .expect("qlik-sim starts");
        let sim_addr: SocketAddr = sim
            .proxy_url()
            .trim_start_matches("http://")
            .parse()
            .expect("sim proxy address");
        let tap = Tap::start(sim_addr).await;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let setup = Setup {
            auth: Some(format!(
                "[auth]\nprovider = \"static\"\n[auth.static]\nuser_directory = \"{DIR}\"\nuser_id = \"{user_id}\"\n"
            )),
            session: session.to_string(),
            // One serving thread, this test's: the logs are captured by a subscriber set on it.
            server: "threads = 1".into(),
            ..Setup::default()
        };
        let toml = config_toml(&sim, &setup, addr).replace(
            &format!("proxy_url = \"{}\"", sim.proxy_url()),
            &format!("proxy_url = \"{}\"", tap.url),
        );
        let cfg =
            config::load_str(&toml).unwrap_or_else(|e| panic!("test config invalid: {e}\n{toml}"));
        let state = AppState::new(cfg).expect("state");
        let server = Server::with_listener(state.clone(), listener).expect("server");
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Gw {
            sim: Some(sim),
            tap,
            addr,
            url: format!("http://{addr}"),
            state,
            user: format!("{DIR}\\{user_id}"),
            user_id: user_id.to_string(),
            shutdown: Some(tx),
            server: Some(server),
            _dir: dir,
            _logs: logs,
        }
    }

    fn sim(&self) -> &Sim {
        self.sim.as_ref().expect("sim running")
    }

    fn sessions_created(&self) -> u64 {
        self.sim().control().counters().sessions_created
    }

    /// Logs in and returns the `Cookie` header value.
    async fn login(&self) -> String {
        let resp = http_client()
            .get(format!("{}/_gateway/login", self.url))
            .send()
            .await
            .expect("login request");
        assert_eq!(resp.status(), 302, "login should redirect");
        cookie_from(&resp).expect("login sets the gateway cookie")
    }

    async fn ws(&self, cookie: &str) -> Result<Raw, tungstenite::Error> {
        let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/mashup/app/{SALES_APP_ID}",
            self.addr
        ))?;
        req.headers_mut()
            .insert("cookie", cookie.parse().expect("cookie"));
        req.headers_mut()
            .insert("origin", self.url.parse().expect("origin"));
        Ok(tokio_tungstenite::connect_async(req).await?.0)
    }

    /// A socket with the Sales app open (by it or before), and `OnConnected`'s `qSessionState`. The request goes
    /// first: a proxy that speaks after the client's first frame gets one.
    async fn working_socket(&self, cookie: &str) -> (Raw, String) {
        let mut ws = self.ws(cookie).await.expect("websocket");
        let frames = within(
            "OpenDoc",
            send_and_collect(&mut ws, 1, -1, "OpenDoc", json!([SALES_APP_ID])),
        )
        .await;
        let v = frames.last().expect("the response");
        // 1002 ALREADY_OPEN: the socket attached to an engine session that has it open (§4).
        assert!(
            v["result"]["qReturn"]["qType"] == "Doc" || v["error"]["code"] == 1002,
            "{v}"
        );
        let auth: Vec<_> = frames
            .iter()
            .filter(|f| f["method"] == "OnAuthenticationInformation")
            .collect();
        assert_eq!(auth.len(), 1, "{frames:?}");
        assert_eq!(auth[0]["params"]["mustAuthenticate"], false, "{frames:?}");
        let state = frames
            .iter()
            .find(|f| f["method"] == "OnConnected")
            .and_then(|f| f["params"]["qSessionState"].as_str())
            .unwrap_or_else(|| panic!("OnConnected in {frames:?}"))
            .to_string();
        (ws, state)
    }

    /// Makes Qlik send `method` to this user's sockets, then close them.
    fn notify(&self, method: &str) {
        let n = self
            .sim()
            .control()
            .notify_user(DIR, &self.user_id, method, true)
            .expect("qlik-sim knows the notification");
        assert!(n >= 1, "qlik-sim sent {method} to no socket");
    }

    fn session_tag(cookie: &str) -> String {
        let value = cookie.split_once('=').expect("name=value").1;
        SessionId::parse(value).expect("a gateway id").log_tag()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
        self.tap.task.abort();
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.tap.task.abort();
    }
}

async fn next_json(ws: &mut Raw) -> Option<Value> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Sends a request and returns every JSON frame up to and including its response.
async fn send_and_collect(
    ws: &mut Raw,
    id: u64,
    handle: i64,
    method: &str,
    params: Value,
) -> Vec<Value> {
    let req =
        json!({"jsonrpc": "2.0", "id": id, "handle": handle, "method": method, "params": params});
    ws.send(Message::text(req.to_string())).await.expect("send");
    let mut seen = Vec::new();
    loop {
        let v = next_json(ws)
            .await
            .unwrap_or_else(|| panic!("socket closed awaiting {method}; saw {seen:?}"));
        let done = v["id"] == id;
        seen.push(v);
        if done {
            return seen;
        }
    }
}

async fn call(ws: &mut Raw, id: u64, handle: i64, method: &str, params: Value) -> Value {
    let mut frames = send_and_collect(ws, id, handle, method, params).await;
    frames.pop().expect("the response")
}

/// Every text frame (verbatim) until the socket closes, and the close frame.
async fn read_until_close(ws: &mut Raw) -> (Vec<String>, Option<CloseFrame>) {
    let mut frames = Vec::new();
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => frames.push(t.as_str().to_string()),
            Some(Ok(Message::Close(f))) => return (frames, f),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (frames, None),
        }
    }
}

async fn close(mut ws: Raw) {
    let _ = ws.close(None).await;
    while let Some(Ok(_)) = ws.next().await {}
}

fn must_authenticate_seen(frames: &[String]) -> bool {
    frames.iter().any(|f| {
        serde_json::from_str::<Value>(f)
            .map(|v| v["params"]["mustAuthenticate"] == true)
            .unwrap_or(false)
    })
}

/// The part every notification shares: the socket works, Qlik sends `method` and closes; the
/// client gets exactly Qlik's frame; the counter and the log say so once. Returns the gateway,
/// the cookie, the close frame the client got and the `sessions_created` before the notification.
async fn fatal_on_open_socket(
    method: &str,
    user_id: &str,
    sim: SimOptions,
    greeted: bool,
) -> (Gw, String, CloseFrame, u64) {
    let gw = Gw::start(user_id, sim).await;
    let cookie = gw.login().await;
    let mut ws = if greeted {
        gw.working_socket(&cookie).await.0
    } else {
        // Qlik has said nothing yet (it speaks after the client's first frame): the relay is
        // still settling authentication when the notification comes.
        gw.ws(&cookie).await.expect("websocket")
    };
    let created = gw.sessions_created();
    assert_eq!(created, 1);
    let counted = gw.state.stats.fatal_notifications(method);

    gw.notify(method);
    let (frames, close_frame) = within("the close", read_until_close(&mut ws)).await;
    drop(ws);

    // Qlik's frame, byte for byte, and nothing else.
    assert_eq!(frames.len(), 1, "{frames:?}");
    let n: Value = serde_json::from_str(&frames[0]).expect("JSON");
    assert_eq!(n["method"], method, "{n}");
    assert_eq!(n["params"]["severity"], "fatal", "{n}");
    assert!(n["params"]["timestamp"].is_string(), "{n}");
    assert!(
        gw.tap.qlik_sent(frames[0].as_bytes()),
        "the client's frame is not what Qlik sent: {}",
        frames[0]
    );
    assert!(!must_authenticate_seen(&frames), "{frames:?}");
    let close_frame = close_frame.expect("a close frame");

    // Counted once, under its own name.
    assert_eq!(gw.state.stats.fatal_notifications(method), counted + 1);
    let snap = gw.state.stats.snapshot();
    assert_eq!(snap.fatal_notifications[method], counted + 1);
    assert_eq!(snap.fatal_notifications[OTHER_FATAL], 0);
    assert_eq!(
        snap.login_prompts, 0,
        "no login prompt while the gateway session lives"
    );

    // Logged once, with the user, the session's tag and the notification.
    let tag = Gw::session_tag(&cookie);
    let lines: Vec<Value> = log_lines_of(&gw.user)
        .into_iter()
        .filter(|l| l["notification"] == method)
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["session"], tag.as_str(), "{}", lines[0]);
    assert!(
        matches!(lines[0]["level"].as_str(), Some("INFO" | "WARN")),
        "{}",
        lines[0]
    );
    (gw, cookie, close_frame, created)
}

/// `OnSessionTimedOut` / `OnSessionClosed`: the client gets 4002 with Qlik's reason, the Qlik
/// session is renewed before that close, and a new socket with the same cookie works at once
/// (no login, no further Qlik session, no `mustAuthenticate` even between gateway and Qlik).
async fn qlik_session_ended(method: &str, user_id: &str, sim: SimOptions, greeted: bool) {
    let (gw, cookie, f, created) = fatal_on_open_socket(method, user_id, sim, greeted).await;
    assert_eq!(u16::from(f.code), 4002, "{f:?}");
    let qlik_close = CloseFrame {
        code: CloseCode::Normal,
        reason: f.reason.clone(),
    };
    assert!(
        gw.tap.qlik_sent(&close_frame_bytes(&qlik_close)),
        "the reason is Qlik's: {f:?}"
    );
    assert_eq!(
        gw.sessions_created(),
        created + 1,
        "the Qlik session is renewed by the time the client's socket closes"
    );
    let rejected = gw.sim().control().counters().ws_must_authenticate;

    // A reconnect needs no login, and the app opens on the new Qlik session.
    let (ws, state) = gw.working_socket(&cookie).await;
    assert_eq!(state, "SESSION_CREATED");
    let c = gw.sim().control().counters();
    assert_eq!(c.sessions_created, created + 1, "{c:?}");
    assert_eq!(
        c.ws_must_authenticate, rejected,
        "the new socket went straight to the renewed session: {c:?}"
    );
    assert_eq!(gw.sim().control().sessions().len(), 1);
    assert_eq!(gw.state.stats.login_prompts(), 0);
    close(ws).await;
    gw.stop().await;
}

/// The engine, license and limit notifications: passed on with Qlik's close as is; the Qlik
/// session is not touched, and a new socket uses it.
async fn passed_on(method: &str, user_id: &str, sim: SimOptions, greeted: bool) {
    let (gw, cookie, f, created) = fatal_on_open_socket(method, user_id, sim, greeted).await;
    assert!(
        gw.tap.qlik_sent(&close_frame_bytes(&f)),
        "Qlik's close code and reason, as is: {f:?}"
    );
    assert_eq!(f.code, CloseCode::Normal, "{f:?}");
    assert_eq!(gw.sessions_created(), created);
    let (mut ws, state) = gw.working_socket(&cookie).await;
    assert_eq!(
        state, "SESSION_ATTACHED",
        "the same Qlik session, its engine session kept"
    );
    let v = within(
        "GetActiveDoc",
        call(&mut ws, 8, -1, "GetActiveDoc", json!([])),
    )
    .await;
    assert_eq!(v["result"]["qReturn"]["qType"], "Doc", "{v}");
    assert_eq!(gw.sessions_created(), created, "the same Qlik session");
    close(ws).await;
    gw.stop().await;
}

#[tokio::test]
async fn session_timed_out_is_passed_on_and_the_qlik_session_renewed() {
    qlik_session_ended(
        "OnSessionTimedOut",
        "timed-out",
        SimOptions::default(),
        true,
    )
    .await;
}

#[tokio::test]
async fn session_closed_is_passed_on_and_the_qlik_session_renewed() {
    qlik_session_ended("OnSessionClosed", "closed", SimOptions::default(), true).await;
}

#[tokio::test]
async fn session_timed_out_while_authentication_settles_is_handled_alike() {
    qlik_session_ended(
        "OnSessionTimedOut",
        "timed-out-settling",
        SimOptions {
            auth_info_timing: AuthInfoTiming::AfterFirstFrame,
            ..SimOptions::default()
        },
        false,
    )
    .await;
}

#[tokio::test]
async fn session_logged_out_keeps_qliks_close_and_a_reconnect_needs_no_login() {
    let (gw, cookie, f, created) = fatal_on_open_socket(
        "OnSessionLoggedOut",
        "logged-out",
        SimOptions::default(),
        true,
    )
    .await;
    // Qlik's close as is: the page shows "logged out", enigma.js does not resume.
    assert_eq!(f.code, CloseCode::Normal, "{f:?}");
    assert!(gw.tap.qlik_sent(&close_frame_bytes(&f)), "{f:?}");
    // No Qlik session is made behind the back of whoever ended this one ...
    assert_eq!(gw.sessions_created(), created);
    assert!(gw.sim().control().sessions().is_empty());
    // ... but the user is still logged in to the gateway: a reconnect gets a new one.
    let (mut ws, _) = gw.working_socket(&cookie).await;
    assert_eq!(gw.sessions_created(), created + 1);
    let v = within(
        "EngineVersion",
        call(&mut ws, 8, -1, "EngineVersion", json!([])),
    )
    .await;
    assert!(v["result"]["qVersion"].is_object(), "{v}");
    assert_eq!(gw.state.stats.login_prompts(), 0);
    close(ws).await;
    gw.stop().await;
}

#[tokio::test]
async fn no_engine_available_is_passed_on_with_qliks_close() {
    passed_on(
        "OnNoEngineAvailable",
        "no-engine",
        SimOptions::default(),
        true,
    )
    .await;
}

#[tokio::test]
async fn max_parallel_sessions_exceeded_is_passed_on_with_qliks_close() {
    passed_on(
        "OnMaxParallelSessionsExceeded",
        "max-parallel",
        SimOptions::default(),
        true,
    )
    .await;
}

#[tokio::test]
async fn license_access_denied_is_passed_on_with_qliks_close() {
    passed_on(
        "OnLicenseAccessDenied",
        "no-license",
        SimOptions::default(),
        true,
    )
    .await;
}

#[tokio::test]
async fn engine_websocket_failed_is_passed_on_with_qliks_close() {
    passed_on(
        "OnEngineWebsocketFailed",
        "engine-failed",
        SimOptions::default(),
        true,
    )
    .await;
}

#[tokio::test]
async fn no_engine_available_while_authentication_settles_is_passed_on_alike() {
    passed_on(
        "OnNoEngineAvailable",
        "no-engine-settling",
        SimOptions {
            auth_info_timing: AuthInfoTiming::AfterFirstFrame,
            ..SimOptions::default()
        },
        false,
    )
    .await;
}

#[test]
fn every_documented_notification_has_its_own_counter() {
    for m in [
        "OnSessionTimedOut",
        "OnSessionClosed",
        "OnSessionLoggedOut",
        "OnNoEngineAvailable",
        "OnMaxParallelSessionsExceeded",
        "OnLicenseAccessDenied",
        "OnEngineWebsocketFailed",
    ] {
        assert!(FATAL_NOTIFICATIONS.contains(&m), "{m}");
    }
}

/// Qlik ended its session and the gateway session is gone too (ended on another replica, say,
/// and this one has not closed the socket yet): now, and only now, the client is sent to the
/// login, the gateway's, after Qlik's own notification.
#[tokio::test]
async fn qlik_session_ended_after_the_gateway_session_sends_the_client_to_the_gateways_login() {
    let gw = Gw::start("gone", SimOptions::default()).await;
    let cookie = gw.login().await;
    let (mut ws, _) = gw.working_socket(&cookie).await;
    let value = cookie.split_once('=').expect("name=value").1;
    let sid = SessionId::parse(value).expect("id");
    gw.state
        .store
        .remove(&sid)
        .await
        .expect("store")
        .expect("the session existed");

    gw.notify("OnSessionTimedOut");
    let (frames, f) = within("the close", read_until_close(&mut ws)).await;
    drop(ws);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(gw.tap.qlik_sent(frames[0].as_bytes()), "{}", frames[0]);
    let prompt: Value = serde_json::from_str(&frames[1]).expect("JSON");
    assert_eq!(prompt["method"], "OnAuthenticationInformation", "{prompt}");
    assert_eq!(prompt["params"]["mustAuthenticate"], true, "{prompt}");
    assert_eq!(
        prompt["params"]["loginUri"],
        format!("{}/_gateway/login", gw.url),
        "the gateway's login on its public origin, never Qlik's: {prompt}"
    );
    // A normal close: there is nothing to resume without a login.
    assert_eq!(f.expect("close").code, CloseCode::Normal);
    assert_eq!(gw.state.stats.login_prompts(), 1);
    assert_eq!(gw.state.stats.fatal_notifications("OnSessionTimedOut"), 1);
    // No Qlik session for a user who is not logged in.
    assert_eq!(gw.sessions_created(), 1);
    assert!(gw.sim().control().sessions().is_empty());
    match gw.ws(&cookie).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| "a websocket")),
    }
    gw.stop().await;
}

/// The gateway session expires under an open socket: the client gets the gateway's login prompt
/// (the gateway's own close, nothing from Qlik), counted.
#[tokio::test]
async fn gateway_session_expiry_sends_the_client_to_the_gateways_login() {
    let gw = Gw::start_with(
        "expired",
        SimOptions::default(),
        "idle_timeout = \"1s\"\nsweep_interval = \"100ms\"\n",
    )
    .await;
    let cookie = gw.login().await;
    let (mut ws, _) = gw.working_socket(&cookie).await;
    // Nobody uses the socket: the gateway session's idle timeout ends it.
    let (frames, f) = within("the close", read_until_close(&mut ws)).await;
    drop(ws);
    let prompts: Vec<Value> = frames
        .iter()
        .map(|f| serde_json::from_str::<Value>(f).expect("JSON"))
        .filter(|v| v["method"] == "OnAuthenticationInformation")
        .collect();
    assert_eq!(prompts.len(), 1, "{frames:?}");
    assert_eq!(prompts[0]["params"]["mustAuthenticate"], true);
    assert_eq!(
        prompts[0]["params"]["loginUri"],
        format!("{}/_gateway/login", gw.url)
    );
    assert_eq!(f.expect("close").code, CloseCode::Normal);
    assert_eq!(gw.state.stats.login_prompts(), 1);
    let fatal = gw.state.stats.snapshot().fatal_notifications;
    assert!(
        fatal.values().all(|n| *n == 0),
        "Qlik sent nothing: {fatal:?}"
    );
    gw.stop().await;
}
