//! `session.store = "redis"` against a real redis-server (started per test on a free loopback
//! port, killed on drop): sessions shared by replicas, sealed at rest, sliding idle and absolute
//! expiry, key rotation, TLS with a password, fail-closed outages and recovery without restart,
//! logout and expiry closing websockets on every replica.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::fake_idp::FakeIdp;
use crate::common::redis_server::{free_port, key_file, RedisServer};
use crate::common::{config_toml, cookie_from, http_client, Setup};
use base64::Engine;
use futures_util::StreamExt;
use qlik_gateway::config;
use qlik_gateway::server::Server;
use qlik_gateway::session::crypto::read_key_file;
use qlik_gateway::state::AppState;
use qlik_sim::{Sim, SimOptions, SALES_APP_ID};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::{self, Message};

/// A safety net so a broken gateway fails the test instead of hanging it; never a synchronisation.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn key_id(p: &Path) -> [u8; 4] {
    read_key_file(p).expect("key").id()
}

fn toml_path(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

/// `[session]` lines for the Redis store.
fn redis_session(url: &str, key: &Path, old: &[&Path], extra: &str) -> String {
    let old: Vec<String> = old.iter().map(|p| toml_path(p)).collect();
    format!(
        "store = \"redis\"\nredis_url = \"{url}\"\nencryption_key_file = {}\nold_encryption_key_files = [{}]\n{extra}\n",
        toml_path(key),
        old.join(", ")
    )
}

// ---------------------------------------------------------------------------------------------
// gateway

/// One gateway replica (with its own qlik-sim), configured through `config_toml` with the
/// `[session]` section of the test.
struct Gw {
    sim: Option<Sim>,
    _sim_dir: Option<tempfile::TempDir>,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    url: String,
    state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Gw {
    async fn start(session: String) -> Gw {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = Sim::start(SimOptions::default(), &dir.path().join("pki"))
            .await
            .expect("qlik-sim starts");
        let mut gw = Gw::start_on(&sim, session).await;
        gw.sim = Some(sim);
        gw._sim_dir = Some(dir);
        gw
    }

    /// A replica in front of `sim`, which the caller owns (replicas of one site share one Qlik).
    async fn start_on(sim: &Sim, session: String) -> Gw {
        Gw::start_as(sim, session, None, None).await
    }

    /// A replica with the `[auth]` section `auth` (default: the static user) and, behind one
    /// load balancer with `public_of`, that replica's `public_url`.
    async fn start_as(
        sim: &Sim,
        session: String,
        auth: Option<String>,
        public_of: Option<&Gw>,
    ) -> Gw {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let setup = Setup {
            auth,
            ..gateway_setup(session)
        };
        let mut toml = config_toml(sim, &setup, addr).replace("store = \"memory\"\n", "");
        if let Some(other) = public_of {
            toml = toml.replace(
                &format!("public_url = \"http://{addr}\""),
                &format!("public_url = \"{}\"", other.url),
            );
        }
        let cfg = config::load_str(&toml).unwrap_or_else(|e| panic!("config invalid: {e}\n{toml}"));
        let state = AppState::new(cfg).expect("state");
        let server = Server::with_listener(state.clone(), listener).expect("server");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Gw {
            sim: None,
            _sim_dir: None,
            _dir: dir,
            addr,
            url: format!("http://{addr}"),
            state,
            shutdown: Some(tx),
            server: Some(handle),
        }
    }

    async fn login(&self) -> String {
        let resp = http_client()
            .get(format!("{}/_gateway/login", self.url))
            .send()
            .await
            .expect("login request");
        assert_eq!(resp.status(), 302, "login should redirect");
        cookie_from(&resp).expect("login sets the gateway cookie")
    }

    async fn get(&self, path: &str, cookie: &str) -> reqwest::Response {
        http_client()
            .get(format!("{}{}", self.url, path))
            .header("cookie", cookie)
            .header("accept", "application/json")
            .send()
            .await
            .expect("request")
    }

    async fn me(&self, cookie: &str) -> u16 {
        self.get("/_gateway/me", cookie).await.status().as_u16()
    }

    async fn logout(&self, cookie: &str) -> u16 {
        http_client()
            .post(format!("{}/_gateway/logout", self.url))
            .header("origin", &self.url)
            .header("cookie", cookie)
            .header("accept", "application/json")
            .send()
            .await
            .expect("logout")
            .status()
            .as_u16()
    }

    async fn readyz(&self) -> (u16, Value) {
        let r = http_client()
            .get(format!("{}/_gateway/readyz", self.url))
            .send()
            .await
            .expect("readyz");
        let status = r.status().as_u16();
        (status, r.json().await.expect("readyz JSON"))
    }

    /// The engine websocket of the sales app, greeted and authenticated.
    async fn engine_ws(
        &self,
        cookie: &str,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tungstenite::Error,
    > {
        let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/mashup/app/{SALES_APP_ID}",
            self.addr
        ))?;
        req.headers_mut()
            .insert("cookie", cookie.parse().expect("cookie"));
        req.headers_mut()
            .insert("origin", self.url.parse().expect("origin"));
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(ws)
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
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn gateway_setup(session: String) -> Setup {
    Setup {
        session,
        ..Setup::default()
    }
}

/// `config_toml` writes `store = "memory"` before the test's lines; the test's own `store` wins.
fn config_toml_for(sim: &Sim, session: &str, addr: SocketAddr) -> String {
    config_toml(sim, &gateway_setup(session.to_string()), addr).replace("store = \"memory\"\n", "")
}

/// The cookie's value (the session id).
fn cookie_value(cookie: &str) -> &str {
    cookie.split_once('=').expect("name=value").1
}

/// The Redis key the gateway uses for a session (the SHA-256 of its id, never the id).
fn redis_key(cookie: &str) -> String {
    let d = Sha256::digest(cookie_value(cookie).as_bytes());
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("qlik-gateway:session:{hex}")
}

/// Waits for the engine's greeting; fails if it asks to authenticate.
async fn expect_authenticated(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) {
    loop {
        let m = within("engine greeting", ws.next())
            .await
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
            if v["method"] == "OnAuthenticationInformation" {
                assert_eq!(v["params"]["mustAuthenticate"], false, "{v}");
            }
            if v["method"] == "OnConnected" {
                return;
            }
        }
    }
}

/// One request on an open engine socket; fails if the socket closed.
async fn engine_version(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) {
    use futures_util::SinkExt;
    let req = serde_json::json!({"jsonrpc": "2.0", "id": 4242, "handle": -1, "method": "EngineVersion", "params": []});
    ws.send(Message::text(req.to_string())).await.expect("send");
    loop {
        let m = within("EngineVersion", ws.next())
            .await
            .expect("socket still open")
            .expect("frame");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
            if v["id"] == 4242 {
                assert!(v["result"]["qVersion"].is_object(), "{v}");
                return;
            }
        }
    }
}

/// Reads until the gateway closes the socket; returns the close frame's reason.
async fn closed_by_gateway(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Option<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(f))) => {
                // Finish the closing handshake (the reply goes out while reading on), so the
                // gateway's relay ends now rather than after its linger time.
                while let Some(Ok(_)) = ws.next().await {}
                return f.map(|f| f.reason.to_string());
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

/// Closes the client side cleanly (so the relay ends now, not after its close grace period).
async fn close(
    mut ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) {
    let _ = ws.close(None).await;
    while let Some(Ok(_)) = ws.next().await {}
}

// ---------------------------------------------------------------------------------------------
// tests

#[tokio::test]
async fn sessions_are_shared_by_replicas_and_sealed_at_rest() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let key = key_file(keys.path(), "session.key");
    let session = redis_session(&redis.url(), &key, &[], "");
    let a = Gw::start(session.clone()).await;
    let b = Gw::start(session).await;

    // Login on A, the session works on B.
    let cookie = a.login().await;
    let me = b.get("/_gateway/me", &cookie).await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.expect("me JSON");
    assert_eq!(me["userId"], "alice", "{me}");
    assert_eq!(me["userDirectory"], "DEV", "{me}");

    // What Redis holds: a key derived from the id (not the id), a sealed value (no JSON, no
    // user), with the current key's id, expiring by itself.
    let mut raw = redis.raw();
    let (all, users): (Vec<String>, Vec<String>) = redis::cmd("KEYS")
        .arg("*")
        .query::<Vec<String>>(&mut raw)
        .expect("KEYS")
        .into_iter()
        .partition(|k| !k.starts_with("qlik-gateway:user:"));
    assert_eq!(all, vec![redis_key(&cookie)]);
    assert_eq!(users.len(), 1, "one set of alice's sessions: {users:?}");
    assert!(
        !users[0].to_lowercase().contains("alice"),
        "user names are hashed in key names: {users:?}"
    );
    assert!(!all[0].contains(cookie_value(&cookie)));
    let value: Vec<u8> = redis::cmd("GET").arg(&all[0]).query(&mut raw).expect("GET");
    for plain in [
        &b"alice"[..],
        b"DEV",
        b"static",
        b"identity",
        b"created_at",
        b"last_seen",
    ] {
        assert!(
            !value.windows(plain.len()).any(|w| w == plain),
            "the stored value shows {:?}",
            String::from_utf8_lossy(plain)
        );
    }
    assert_eq!(value[0], 1, "format version");
    assert_eq!(value[1..5], key_id(&key), "sealed with the current key");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&all[0])
        .query(&mut raw)
        .expect("PTTL");
    assert!(
        pttl > 0 && pttl <= 30 * 60 * 1000,
        "expires with the idle timeout: {pttl}"
    );

    // A value copied onto another session's key does not open there.
    let other = a.login().await;
    assert_eq!(b.me(&other).await, 200);
    let _: () = redis::cmd("SET")
        .arg(redis_key(&other))
        .arg(&value)
        .query(&mut raw)
        .expect("SET");
    assert_eq!(b.me(&other).await, 401, "a swapped value is no session");
    assert_eq!(a.me(&cookie).await, 200, "the original is unaffected");

    // Secrets stay out of Debug output.
    let debug = format!("{:?}", a.state.cfg);
    let key_text = std::fs::read_to_string(&key).expect("key");
    assert!(!debug.contains(key_text.trim()), "{debug}");
    assert!(debug.contains("redis://127.0.0.1"), "{debug}");

    // Logout on B removes the key; A no longer knows the session.
    assert_eq!(b.logout(&cookie).await, 200);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(redis_key(&cookie))
        .query(&mut raw)
        .expect("EXISTS");
    assert_eq!(exists, 0, "logout deletes the session in Redis");
    assert_eq!(a.me(&cookie).await, 401);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn logout_on_one_replica_closes_websockets_on_another() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let key = key_file(keys.path(), "session.key");
    let session = redis_session(&redis.url(), &key, &[], "sweep_interval = \"200ms\"");
    let a = Gw::start(session.clone()).await;
    let b = Gw::start(session).await;
    let cookie = a.login().await;
    let bystander = a.login().await;
    let mut ws = a.engine_ws(&cookie).await.expect("websocket on A");
    let mut other_ws = a.engine_ws(&bystander).await.expect("bystander websocket");
    expect_authenticated(&mut ws).await;
    expect_authenticated(&mut other_ws).await;

    assert_eq!(b.logout(&cookie).await, 200);
    let started = Instant::now();
    let reason = within(
        "A closing the logged-out socket",
        closed_by_gateway(&mut ws),
    )
    .await;
    assert!(reason.is_some(), "a close frame, not a dropped connection");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed within a few sweep intervals, took {:?}",
        started.elapsed()
    );
    // The other session's socket stays open and working.
    engine_version(&mut other_ws).await;
    assert_eq!(a.me(&bystander).await, 200);
    close(other_ws).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn idle_expiry_slides_and_the_absolute_timeout_is_enforced() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let key = key_file(keys.path(), "session.key");
    let gw = Gw::start(redis_session(
        &redis.url(),
        &key,
        &[],
        "idle_timeout = \"2s\"\nabsolute_timeout = \"5s\"",
    ))
    .await;
    let before_login = Instant::now();
    let busy = gw.login().await;
    let idle = gw.login().await;
    let login = Instant::now();
    let mut raw = redis.raw();

    // Touched every 500 ms: alive past twice the idle timeout, with Redis's TTL sliding along but
    // never past the absolute limit. The pauses are the scenario (time passing).
    while login.elapsed() < Duration::from_millis(4200) {
        assert_eq!(gw.me(&busy).await, 200, "touched at {:?}", login.elapsed());
        let pttl: i64 = redis::cmd("PTTL")
            .arg(redis_key(&busy))
            .query(&mut raw)
            .expect("PTTL");
        let left = 5000 - login.elapsed().as_millis() as i64;
        assert!(
            pttl > 0 && pttl <= 2000 && pttl <= left + 50,
            "PTTL {pttl} with {left} ms of the absolute timeout left"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The untouched session ended at its idle timeout, and Redis deleted it by itself.
    let exists: i64 = redis::cmd("EXISTS")
        .arg(redis_key(&idle))
        .query(&mut raw)
        .expect("EXISTS");
    assert_eq!(exists, 0, "Redis expired the idle session");
    assert_eq!(gw.me(&idle).await, 401);

    // Still touched, the busy session ends at the absolute timeout.
    let ended = loop {
        let s = gw.me(&busy).await;
        if s == 401 {
            break before_login.elapsed();
        }
        assert_eq!(s, 200);
        assert!(
            login.elapsed() < Duration::from_millis(6500),
            "alive past the absolute timeout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        ended >= Duration::from_millis(5000),
        "ended at {ended:?}, before the absolute timeout"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_websocket_is_closed_when_redis_expires_its_session() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let key = key_file(keys.path(), "session.key");
    let gw = Gw::start(redis_session(
        &redis.url(),
        &key,
        &[],
        "idle_timeout = \"1s\"\nsweep_interval = \"100ms\"",
    ))
    .await;
    let cookie = gw.login().await;
    let mut ws = gw.engine_ws(&cookie).await.expect("websocket");
    expect_authenticated(&mut ws).await;
    let started = Instant::now();
    let reason = within("the idle socket closing", closed_by_gateway(&mut ws)).await;
    assert!(reason.is_some(), "a close frame");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed soon after the idle timeout, took {:?}",
        started.elapsed()
    );
    assert_eq!(gw.me(&cookie).await, 401);
    gw.stop().await;
}

#[tokio::test]
async fn a_session_found_expired_by_a_request_still_closes_its_websockets() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let key = key_file(keys.path(), "session.key");
    // The sweep is rare next to the polling below, so a request is what finds the session over.
    let gw = Gw::start(redis_session(
        &redis.url(),
        &key,
        &[],
        "idle_timeout = \"1h\"\nabsolute_timeout = \"2s\"\nsweep_interval = \"3s\"",
    ))
    .await;
    let cookie = gw.login().await;
    let mut ws = gw.engine_ws(&cookie).await.expect("websocket");
    expect_authenticated(&mut ws).await;
    within("the session to end", async {
        while gw.me(&cookie).await != 401 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let reason = within(
        "the expired session's socket closing",
        closed_by_gateway(&mut ws),
    )
    .await;
    assert!(
        reason.is_some(),
        "the socket gets the gateway's close frame"
    );
    gw.stop().await;
}

#[tokio::test]
async fn key_rotation_keeps_sessions_and_reseals_them_with_the_new_key() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let k1 = key_file(keys.path(), "k1.key");
    let k2 = key_file(keys.path(), "k2.key");
    let mut raw = redis.raw();
    let sealed_with = |raw: &mut redis::Connection, cookie: &str| -> [u8; 4] {
        let v: Vec<u8> = redis::cmd("GET")
            .arg(redis_key(cookie))
            .query(raw)
            .expect("GET");
        v[1..5].try_into().expect("key id")
    };

    let before = Gw::start(redis_session(&redis.url(), &k1, &[], "")).await;
    let cookie = before.login().await;
    assert_eq!(sealed_with(&mut raw, &cookie), key_id(&k1));

    // The rotated replica: new key, old key accepted. The session stays readable and is
    // re-sealed with the new key on its first touch.
    let rotated = Gw::start(redis_session(&redis.url(), &k2, &[&k1], "")).await;
    assert_eq!(rotated.me(&cookie).await, 200);
    assert_eq!(sealed_with(&mut raw, &cookie), key_id(&k2));
    let fresh = rotated.login().await;
    assert_eq!(
        sealed_with(&mut raw, &fresh),
        key_id(&k2),
        "new writes use the new key"
    );

    // Once every session was re-sealed, the old key can go.
    let only_new = Gw::start(redis_session(&redis.url(), &k2, &[], "")).await;
    assert_eq!(only_new.me(&cookie).await, 200);
    assert_eq!(only_new.me(&fresh).await, 200);

    // A replica without the new key cannot read them (and does not delete them).
    assert_eq!(before.me(&cookie).await, 401);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(redis_key(&cookie))
        .query(&mut raw)
        .expect("EXISTS");
    assert_eq!(exists, 1);
    assert_eq!(rotated.me(&cookie).await, 200);
    before.stop().await;
    rotated.stop().await;
    only_new.stop().await;
}

#[tokio::test]
async fn redis_outage_fails_closed_and_the_gateway_recovers_without_restart() {
    let mut redis = RedisServer::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let key = key_file(keys.path(), "session.key");
    let gw = Gw::start(redis_session(
        &redis.url(),
        &key,
        &[],
        "redis_timeout = \"500ms\"",
    ))
    .await;
    let cookie = gw.login().await;
    assert_eq!(gw.me(&cookie).await, 200);
    assert_eq!(gw.readyz().await.0, 200);
    let target = format!("Redis at redis://127.0.0.1:{}/0", redis.port);

    // 0. The connection is cut under the gateway (a restart with persistence, a failover, a
    //    firewall dropping idle connections): the very next request still gets its session.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut redis.raw())
        .expect("CLIENT KILL");
    assert!(killed >= 1, "the gateway's connection was cut");
    assert_eq!(gw.me(&cookie).await, 200, "first request after the cut");

    let expect_503 = |what: &'static str| {
        let target = target.clone();
        move |status: u16, started: Instant| {
            assert_eq!(status, 503, "{what} while Redis is down ({target})");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{what} answered within the Redis timeout, took {:?}",
                started.elapsed()
            );
        }
    };

    // 1. Redis hangs (frozen process: connections open, no answers).
    redis.pause();
    let t = Instant::now();
    let (status, body) = gw.readyz().await;
    expect_503("readyz")(status, t);
    let store = body["store"].as_str().expect("store field");
    assert!(store.contains(&target), "{body}");
    assert!(store.contains("session.redis_timeout"), "{body}");
    let t = Instant::now();
    let me = gw.get("/_gateway/me", &cookie).await;
    expect_503("/_gateway/me")(me.status().as_u16(), t);
    let me: Value = me.json().await.expect("JSON");
    assert_eq!(me["error"], "session_store", "{me}");
    let t = Instant::now();
    let qlik = gw.get("/mashup/qrs/about", &cookie).await;
    expect_503("a Qlik request")(qlik.status().as_u16(), t);
    redis.resume();
    // Back without a restart, and the session survived.
    let t = Instant::now();
    loop {
        let s = gw.me(&cookie).await;
        if s == 200 {
            break;
        }
        assert_eq!(s, 503, "never 401 while Redis recovers");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no recovery after resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 2. Redis is gone (connection refused).
    redis.stop();
    let t = Instant::now();
    let (status, body) = gw.readyz().await;
    expect_503("readyz")(status, t);
    assert!(
        body["store"].as_str().expect("store").contains(&target),
        "{body}"
    );
    let t = Instant::now();
    expect_503("/_gateway/me")(gw.me(&cookie).await, t);
    let t = Instant::now();
    let login = http_client()
        .get(format!("{}/_gateway/login", gw.url))
        .send()
        .await
        .expect("login");
    expect_503("login")(login.status().as_u16(), t);
    let t = Instant::now();
    match gw.engine_ws(&cookie).await {
        Err(tungstenite::Error::Http(r)) => {
            expect_503("a websocket handshake")(r.status().as_u16(), t)
        }
        Err(e) => panic!("expected an HTTP answer to the handshake, got {e}"),
        Ok(_) => panic!("the handshake should fail closed"),
    }

    // Started again on the same port (empty: these tests keep no data): the same gateway
    // becomes ready and logs users in again.
    redis.restart();
    let t = Instant::now();
    while gw.readyz().await.0 != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "not ready again after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        gw.me(&cookie).await,
        401,
        "the old session died with Redis's data"
    );
    let again = gw.login().await;
    assert_eq!(gw.me(&again).await, 200);
    gw.stop().await;
}

#[tokio::test]
async fn rediss_with_a_password_file_and_a_private_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("cert");
    let (cert_pem, key_pem) = (
        dir.path().join("redis.pem"),
        dir.path().join("redis-key.pem"),
    );
    std::fs::write(&cert_pem, cert.cert.pem()).expect("write");
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).expect("write");
    let password = "s3cret-Pa55word-for-redis";
    let redis = RedisServer::start_with(
        vec![
            "--tls-cert-file".into(),
            cert_pem.display().to_string(),
            "--tls-key-file".into(),
            key_pem.display().to_string(),
            "--tls-ca-cert-file".into(),
            cert_pem.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
            "--requirepass".into(),
            password.into(),
        ],
        true,
    );
    let pw_file = dir.path().join("redis.password");
    std::fs::write(&pw_file, format!("{password}\n")).expect("write");
    let key = key_file(dir.path(), "session.key");
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);
    let extra = format!(
        "redis_password_file = {}\nredis_ca_cert = {}",
        toml_path(&pw_file),
        toml_path(&cert_pem)
    );
    let gw = Gw::start(redis_session(&url, &key, &[], &extra)).await;
    assert_eq!(gw.readyz().await.0, 200, "{:?}", gw.readyz().await.1);
    let cookie = gw.login().await;
    assert_eq!(gw.me(&cookie).await, 200);
    let debug = format!("{:?} {:?}", gw.state.cfg, gw.state.cfg.session);
    assert!(!debug.contains(password), "{debug}");

    // A wrong password: not ready, and the message names the server, not the password.
    let wrong_file = dir.path().join("wrong.password");
    let wrong = "not-the-Right-one-42";
    std::fs::write(&wrong_file, wrong).expect("write");
    let extra = format!(
        "redis_password_file = {}\nredis_ca_cert = {}",
        toml_path(&wrong_file),
        toml_path(&cert_pem)
    );
    let bad = Gw::start(redis_session(&url, &key, &[], &extra)).await;
    let (status, body) = bad.readyz().await;
    assert_eq!(status, 503);
    let store = body["store"].as_str().expect("store");
    assert!(
        store.contains(&format!("rediss://127.0.0.1:{}/0", redis.port)),
        "{body}"
    );
    assert!(
        !store.contains(wrong) && !store.contains(password),
        "{body}"
    );
    assert_eq!(bad.me(&cookie).await, 503);

    // A password in the URL works too (and is not echoed either).
    let url_pw = format!("rediss://:{password}@127.0.0.1:{}/0", redis.port);
    let extra = format!("redis_ca_cert = {}", toml_path(&cert_pem));
    let in_url = Gw::start(redis_session(&url_pw, &key, &[], &extra)).await;
    assert_eq!(in_url.me(&cookie).await, 200);
    assert!(!format!("{:?}", in_url.state.cfg).contains(password));
    gw.stop().await;
    bad.stop().await;
    in_url.stop().await;
}

#[tokio::test]
async fn check_config_validates_redis_settings_without_connecting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(SimOptions::default(), &dir.path().join("pki"))
        .await
        .expect("sim");
    let addr: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    let key = key_file(dir.path(), "session.key");
    let closed = format!("redis://127.0.0.1:{}/0", free_port());
    let load = |session: String| config::load_str(&config_toml_for(&sim, &session, addr));
    let err = |session: String| {
        let e = load(session).expect_err("should be refused");
        (e.key_name().unwrap_or("").to_string(), e.to_string())
    };

    // Valid, with nothing listening: the configuration and the state are fine (no connection).
    let cfg = load(redis_session(&closed, &key, &[], "")).expect("valid config");
    AppState::new(cfg).expect("state without connecting");

    let (k, m) = err(format!("store = \"redis\"\nredis_url = \"{closed}\"\n"));
    assert_eq!(k, "session.encryption_key_file", "{m}");
    assert!(m.contains("openssl rand -base64 32"), "{m}");

    let (k, m) = err("store = \"redis\"\n".into());
    assert_eq!(k, "session.redis_url", "{m}");

    let short = dir.path().join("short.key");
    std::fs::write(
        &short,
        base64::engine::general_purpose::STANDARD.encode([7u8; 16]),
    )
    .expect("write");
    let (k, m) = err(redis_session(&closed, &short, &[], ""));
    assert_eq!(k, "session.encryption_key_file", "{m}");
    assert!(m.contains("16 bytes, not 32"), "{m}");

    let binary = dir.path().join("binary.key");
    std::fs::write(&binary, [0xffu8; 32]).expect("write");
    let (k, m) = err(redis_session(&closed, &key, &[&binary], ""));
    assert_eq!(k, "session.old_encryption_key_files", "{m}");
    assert!(m.contains("not base64"), "{m}");

    let missing = dir.path().join("missing.key");
    let (k, _) = err(redis_session(&closed, &missing, &[], ""));
    assert_eq!(k, "session.encryption_key_file");

    let (k, m) = err(redis_session("http://127.0.0.1:6379", &key, &[], ""));
    assert_eq!(k, "session.redis_url", "{m}");
    assert!(m.contains("rediss://"), "{m}");

    let (k, m) = err(redis_session("redis://:hunter2@[oops/0", &key, &[], ""));
    assert_eq!(k, "session.redis_url", "{m}");
    assert!(!m.contains("hunter2"), "the password is never echoed: {m}");

    let pw = dir.path().join("pw");
    std::fs::write(&pw, "x\n").expect("write");
    let (k, _) = err(redis_session(
        "redis://:y@127.0.0.1:6379/0",
        &key,
        &[],
        &format!("redis_password_file = {}", toml_path(&pw)),
    ));
    assert_eq!(k, "session.redis_password_file");

    let (k, _) = err(redis_session(
        &closed,
        &key,
        &[],
        "redis_key_prefix = \"a*\"",
    ));
    assert_eq!(k, "session.redis_key_prefix");

    // The real binary's check-config agrees, and does not try to reach Redis.
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        config_toml_for(&sim, &redis_session(&closed, &key, &[], ""), addr),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_qlik-gateway"))
        .args(["check-config", "--config"])
        .arg(&file)
        .env_remove("QLIK_GATEWAY__SESSION__STORE")
        .output()
        .expect("check-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// replicas of one site: one Qlik (qlik-sim), one Redis, one key

/// `[session]` of replicas sharing `redis` and `key`. The sweep runs once an hour, so whatever
/// closes a socket promptly here is the pub/sub event, not the sweep.
fn replica_session(redis: &RedisServer, key: &Path) -> String {
    redis_session(&redis.url(), key, &[], "sweep_interval = \"1h\"")
}

/// Two replicas, each with its own qlik-sim: a Qlik session deleted at logout by one replica is
/// unknown to the other's Qlik, so only the gateway's own event can close a socket on the other.
async fn replicas(redis: &RedisServer, key: &Path) -> (Gw, Gw) {
    let session = replica_session(redis, key);
    (Gw::start(session.clone()).await, Gw::start(session).await)
}

/// Waits until `n` gateways are subscribed to the session events (`PUBSUB NUMSUB`).
async fn subscribed(redis: &RedisServer, n: i64) {
    within("the replicas subscribing to session events", async {
        loop {
            if let Ok(mut raw) = redis::Client::open(redis.url()).and_then(|c| c.get_connection()) {
                let r: redis::RedisResult<(String, i64)> = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg("qlik-gateway:events")
                    .query(&mut raw);
                if matches!(r, Ok((_, m)) if m >= n) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Reads until the gateway closes the socket: whether `OnSessionLoggedOut` came first, and the
/// close frame's code and reason.
async fn logout_close(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> (bool, Option<(u16, String)>) {
    let mut logged_out = false;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                if v["method"] == "OnSessionLoggedOut" {
                    logged_out = true;
                }
            }
            Some(Ok(Message::Close(f))) => {
                while let Some(Ok(_)) = ws.next().await {}
                return (
                    logged_out,
                    f.map(|f| (u16::from(f.code), f.reason.to_string())),
                );
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (logged_out, None),
        }
    }
}

/// Logout on B closes A's socket of that session at once (well within the hour-long sweep
/// interval), as a logout: `OnSessionLoggedOut`, then close 1000.
async fn logout_on_b_closes_socket_on_a(a: &Gw, b: &Gw) {
    let cookie = a.login().await;
    let bystander = a.login().await;
    let mut ws = a.engine_ws(&cookie).await.expect("websocket on A");
    let mut other = a
        .engine_ws(&bystander)
        .await
        .expect("bystander websocket on A");
    expect_authenticated(&mut ws).await;
    expect_authenticated(&mut other).await;
    assert_eq!(b.logout(&cookie).await, 200);
    let started = Instant::now();
    let (notified, frame) = within("A closing the logged-out socket", logout_close(&mut ws)).await;
    let took = started.elapsed();
    assert!(notified, "OnSessionLoggedOut before the close");
    assert_eq!(frame, Some((1000, "logged out".to_string())));
    assert!(
        took < Duration::from_secs(2),
        "closed by the logout event, not a sweep: took {took:?}"
    );
    engine_version(&mut other).await;
    close(other).await;
}

#[tokio::test]
async fn replicas_share_logins_and_close_each_others_sockets_at_logout() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let key = key_file(keys.path(), "session.key");
    let (a, b) = replicas(&redis, &key).await;
    subscribed(&redis, 2).await;

    // Login on A, websocket through B.
    let cookie = a.login().await;
    let mut ws = b.engine_ws(&cookie).await.expect("websocket on B");
    expect_authenticated(&mut ws).await;
    engine_version(&mut ws).await;
    close(ws).await;

    logout_on_b_closes_socket_on_a(&a, &b).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn first_requests_split_across_replicas_create_one_qlik_session() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let key = key_file(keys.path(), "session.key");
    let sim_dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(SimOptions::default(), &sim_dir.path().join("pki"))
        .await
        .expect("qlik-sim starts");
    let a = Gw::start_on(&sim, replica_session(&redis, &key)).await;
    let b = Gw::start_on(&sim, replica_session(&redis, &key)).await;
    // A slow QPS: every replica's first requests arrive while the creation is under way.
    sim.control()
        .set_fault(Some(qlik_sim::QpsFault::Delay(Duration::from_millis(300))));
    let c = http_client();
    for round in 0..3 {
        let before = sim.control().counters().sessions_created;
        let cookie = a.login().await;
        let requests = (0..24).map(|i| {
            let gw = if i % 2 == 0 { &a } else { &b };
            c.get(format!("{}/mashup/sim/echo", gw.url))
                .header("cookie", &cookie)
                .header("accept", "application/json")
                .send()
        });
        let responses = within(
            "parallel first requests on both replicas",
            futures_util::future::join_all(requests),
        )
        .await;
        for r in responses {
            let r = r.expect("request");
            assert_eq!(r.status(), 200, "round {round}");
            let v: Value = r.json().await.expect("JSON");
            assert_eq!(v["user"]["userId"], "alice");
        }
        assert_eq!(
            sim.control().counters().sessions_created - before,
            1,
            "round {round}: one Qlik session for one gateway session, whichever replica asked"
        );
    }
    a.stop().await;
    b.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn logout_events_resume_after_a_redis_restart() {
    let mut redis = RedisServer::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let key = key_file(keys.path(), "session.key");
    let (a, b) = replicas(&redis, &key).await;
    subscribed(&redis, 2).await;
    logout_on_b_closes_socket_on_a(&a, &b).await;

    // Restarted (sessions gone: no persistence here): both replicas subscribe again by
    // themselves, and a logout on B still closes A's socket at once.
    redis.restart();
    subscribed(&redis, 2).await;
    logout_on_b_closes_socket_on_a(&a, &b).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_session_limit_per_user_holds_across_replicas() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let key = key_file(keys.path(), "session.key");
    let session = redis_session(&redis.url(), &key, &[], "max_sessions_per_user = 2");
    let a = Gw::start(session.clone()).await;
    let b = Gw::start(session).await;

    let first = a.login().await;
    let _second = b.login().await;
    let refused = http_client()
        .get(format!("{}/_gateway/login", a.url))
        .header("accept", "application/json")
        .send()
        .await
        .expect("login");
    assert_eq!(refused.status(), 429, "the third login, on either replica");
    assert!(cookie_from(&refused).is_none(), "no session was made");
    let body: Value = refused.json().await.expect("JSON");
    assert_eq!(body["error"], "too_many_sessions", "{body}");

    // A logout on one replica frees a place for a login on the other.
    assert_eq!(a.logout(&first).await, 200);
    let third = b.login().await;
    assert_eq!(a.me(&third).await, 200);
    a.stop().await;
    b.stop().await;
}

/// Behind a load balancer without sticky sessions, the IdP's callback may reach another replica
/// than the one that sent the browser to the IdP: the login completes there all the same.
#[tokio::test]
async fn an_oidc_login_started_on_one_replica_completes_on_another() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let key = key_file(keys.path(), "session.key");
    let session = redis_session(&redis.url(), &key, &[], "");
    let idp = FakeIdp::start().await;
    let auth = format!(
        "[auth]\nprovider = \"oidc\"\n[auth.oidc]\nissuer = \"{}\"\nclient_id = \"qlik-gateway\"\nuser_directory = \"CORP\"\n",
        idp.issuer
    );
    let sim_dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(SimOptions::default(), &sim_dir.path().join("pki"))
        .await
        .expect("qlik-sim starts");
    let a = Gw::start_as(&sim, session.clone(), Some(auth.clone()), None).await;
    let b = Gw::start_as(&sim, session, Some(auth), Some(&a)).await;

    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let location = |r: &reqwest::Response| {
        r.headers()["location"]
            .to_str()
            .expect("location")
            .to_string()
    };
    let r = c
        .get(format!("{}/_gateway/login?return_to=/mashup/hub/", a.url))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 302);
    let login_cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("qlik-gateway-oidc="))
        .and_then(|v| v.split(';').next())
        .expect("login cookie")
        .to_string();
    let at_idp = c.get(location(&r)).send().await.expect("authorize");
    let back = location(&at_idp);
    let back = back
        .strip_prefix(&a.url)
        .unwrap_or_else(|| panic!("callback on the public URL: {back}"));
    let done = c
        .get(format!("{}{back}", b.url))
        .header("cookie", &login_cookie)
        .header("accept", "application/json")
        .send()
        .await
        .expect("callback");
    let status = done.status();
    let cookie = cookie_from(&done);
    assert_eq!(status, 302, "{:?}", done.text().await);
    assert_eq!(location(&done), "/mashup/hub/");
    let cookie = cookie.expect("the other replica set the gateway cookie");
    assert_eq!(a.me(&cookie).await, 200);
    assert_eq!(b.me(&cookie).await, 200);
    a.stop().await;
    b.stop().await;
}
