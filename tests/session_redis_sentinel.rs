//! `session.store = "redis"` behind Redis Sentinel: a master, one replica (`--replicaof`) and one
//! sentinel (quorum 1, short `down-after-milliseconds`), all on free loopback ports in temp dirs,
//! killed on drop. The gateway finds the master through the sentinel; when the master dies and
//! the sentinel promotes the replica, the gateway follows without a restart.
//!
//! Sessions written just before the failover may be lost (replication is asynchronous and the
//! gateway does not `WAIT`): the test only requires that new logins work on the new master.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{config_toml, cookie_from, http_client, Setup};
use qlik_gateway::config;
use qlik_gateway::server::Server;
use qlik_gateway::state::AppState;
use qlik_sim::{Sim, SimOptions};
use rand::RngCore;
use tokio::sync::oneshot;

const MASTER: &str = "gwmaster";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One redis-server (or sentinel) process: its own port, directory and log; killed on drop.
struct Proc {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    name: &'static str,
}

impl Proc {
    /// `redis-server` with `args` after the common ones; `sentinel`: run as a sentinel with the
    /// config file `args[0]` (written by the caller).
    fn start(name: &'static str, port: u16, dir: tempfile::TempDir, args: Vec<String>) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("redis.log"))
            .expect("log");
        let child = Command::new("redis-server")
            .args(&args)
            .current_dir(dir.path())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): these tests need a local Redis server with \
                     Sentinel. Run ./scripts/test.sh, or `apt-get install redis-server redis-sentinel`"
                )
            });
        let mut p = Proc {
            child: Some(child),
            port,
            dir,
            name,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{name} did not listen on {port}:\n{}",
                p.log()
            );
            if let Some(Ok(Some(status))) = p.child.as_mut().map(|c| c.try_wait()) {
                panic!("{name} exited with {status}:\n{}", p.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    fn server(name: &'static str, extra: &[String]) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            &dir.path().display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().cloned());
        Self::start(name, port, dir, args)
    }

    fn sentinel(master_port: u16) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {dir}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {MASTER} 500\n\
                 sentinel failover-timeout {MASTER} 2000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                dir = dir.path().display()
            ),
        )
        .expect("sentinel.conf");
        let args = vec![conf.display().to_string(), "--sentinel".into()];
        Self::start("redis-sentinel", port, dir, args)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .expect("client")
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("{} on {}: {e}", self.name, self.port))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` every 50 ms until it holds (readiness, not a sleep), failing after 30 s.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The master's port as the sentinel names it now.
fn master_port(sentinel: &Proc) -> Option<u16> {
    let r: redis::RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(MASTER)
        .query(&mut sentinel.conn());
    r.ok().flatten().map(|(_, p)| p)
}

fn key_file(dir: &Path) -> PathBuf {
    let mut k = [0u8; 32];
    rand::rng().fill_bytes(&mut k);
    let p = dir.join("session.key");
    std::fs::write(
        &p,
        format!("{}\n", base64::engine::general_purpose::STANDARD.encode(k)),
    )
    .expect("write key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    p
}

fn sentinel_session(sentinel_port: u16, key: &Path, redis_timeout: &str) -> String {
    format!(
        "store = \"redis\"\nredis_sentinels = [\"redis+sentinel://127.0.0.1:{sentinel_port}\"]\n\
         redis_sentinel_master = \"{MASTER}\"\nredis_timeout = \"{redis_timeout}\"\n\
         encryption_key_file = \"{}\"\n",
        key.display()
    )
}

fn config_toml_for(sim: &Sim, session: &str, addr: SocketAddr) -> String {
    let setup = Setup {
        session: session.to_string(),
        ..Setup::default()
    };
    config_toml(sim, &setup, addr).replace("store = \"memory\"\n", "")
}

struct Gw {
    url: String,
    _state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Gw {
    fn start(sim: &Sim, session: &str) -> Gw {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let toml = config_toml_for(sim, session, addr);
        let cfg = config::load_str(&toml).unwrap_or_else(|e| panic!("config invalid: {e}\n{toml}"));
        let state = AppState::new(cfg).expect("state");
        let server = Server::with_listener(state.clone(), listener).expect("server");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Gw {
            url: format!("http://{addr}"),
            _state: state,
            shutdown: Some(tx),
        }
    }

    /// A login: `Some(cookie)` when the gateway stored the session, `None` when it answered
    /// otherwise (503 while Redis is unreachable).
    async fn try_login(&self) -> Option<String> {
        let resp = http_client()
            .get(format!("{}/_gateway/login", self.url))
            .send()
            .await
            .ok()?;
        if resp.status() != 302 {
            return None;
        }
        cookie_from(&resp)
    }

    async fn me(&self, cookie: &str) -> u16 {
        http_client()
            .get(format!("{}/_gateway/me", self.url))
            .header("cookie", cookie)
            .header("accept", "application/json")
            .send()
            .await
            .expect("request")
            .status()
            .as_u16()
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_follows_a_sentinel_failover_without_restart() {
    let mut master = Proc::server("redis master", &[]);
    let replica = Proc::server(
        "redis replica",
        &[
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.port.to_string(),
        ],
    );
    let sentinel = Proc::sentinel(master.port);
    // The sentinel knows the master, and the replica through it (a failover needs one).
    until("the sentinel to see the replica", || {
        let r: redis::RedisResult<Vec<redis::Value>> = redis::cmd("SENTINEL")
            .arg("replicas")
            .arg(MASTER)
            .query(&mut sentinel.conn());
        r.is_ok_and(|v| !v.is_empty())
    })
    .await;
    assert_eq!(master_port(&sentinel), Some(master.port));

    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(SimOptions::default(), &dir.path().join("pki"))
        .await
        .expect("qlik-sim starts");
    let key = key_file(dir.path());
    let gw = Gw::start(&sim, &sentinel_session(sentinel.port, &key, "1s"));

    // Through the sentinel: the session lands on the master (and replicates).
    let cookie = gw.try_login().await.expect("login through the sentinel");
    assert_eq!(gw.me(&cookie).await, 200);
    let on_master: i64 = redis::cmd("DBSIZE")
        .query(&mut master.conn())
        .expect("DBSIZE");
    assert!(on_master >= 1, "the session is on the master");

    // The master dies; the sentinel promotes the replica.
    master.kill();
    until("the sentinel to promote the replica", || {
        master_port(&sentinel) == Some(replica.port)
    })
    .await;

    // Without a restart, the gateway reaches the new master: logins work again. (It may answer
    // 503 for a moment, while its old connection fails and it asks the sentinel again.)
    let started = Instant::now();
    let mut attempts = 0u32;
    let fresh = loop {
        attempts += 1;
        if let Some(c) = gw.try_login().await {
            if gw.me(&c).await == 200 {
                break c;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the gateway did not recover after the failover:\nsentinel log:\n{}",
            sentinel.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "recovered {:?} after the promotion ({attempts} attempts)",
        started.elapsed()
    );
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut replica.conn()).expect("ROLE");
    assert_eq!(
        role.first(),
        Some(&redis::Value::BulkString(b"master".to_vec())),
        "the replica is master now"
    );
    let on_new: i64 = redis::cmd("DBSIZE")
        .query(&mut replica.conn())
        .expect("DBSIZE");
    assert!(on_new >= 1, "the new session is on the new master");
    assert_eq!(gw.me(&fresh).await, 200);
    // The old session was replicated before the failover (nothing was written meanwhile), so it
    // usually survives; it is not required to (asynchronous replication, no WAIT).
    let old = gw.me(&cookie).await;
    assert!(old == 200 || old == 401, "old session: {old}");
}

#[tokio::test]
async fn check_config_validates_sentinel_settings_without_connecting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(SimOptions::default(), &dir.path().join("pki"))
        .await
        .expect("sim");
    let addr: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    let key = key_file(dir.path());
    let load = |session: String| config::load_str(&config_toml_for(&sim, &session, addr));
    let err = |session: String| {
        let e = load(session).expect_err("should be refused");
        (e.key_name().unwrap_or("").to_string(), e.to_string())
    };

    // Valid with nothing listening: no connection at check time or at start.
    let cfg = load(sentinel_session(free_port(), &key, "2s")).expect("valid config");
    AppState::new(cfg).expect("state without connecting");

    let keyline = format!("encryption_key_file = \"{}\"\n", key.display());
    let (k, m) = err(format!(
        "store = \"redis\"\nredis_sentinels = [\"redis+sentinel://127.0.0.1:26379\"]\n{keyline}"
    ));
    assert_eq!(k, "session.redis_sentinel_master", "{m}");
    let (k, m) = err(format!(
        "store = \"redis\"\nredis_sentinel_master = \"m\"\n{keyline}"
    ));
    assert_eq!(k, "session.redis_sentinels", "{m}");
    let (k, m) = err(format!(
        "store = \"redis\"\nredis_sentinels = [\"http://h:26379\"]\nredis_sentinel_master = \"m\"\n{keyline}"
    ));
    assert_eq!(k, "session.redis_sentinels", "{m}");
    assert!(m.contains("redis+sentinel://"), "{m}");
    let (k, m) = err(format!(
        "store = \"redis\"\nredis_sentinels = [\"redis+sentinel://u:secret@h:26379\"]\nredis_sentinel_master = \"m\"\n{keyline}"
    ));
    assert_eq!(k, "session.redis_sentinels", "{m}");
    assert!(!m.contains("secret"), "{m}");
    let (k, m) = err(format!(
        "store = \"redis\"\nredis_sentinels = [\"redis+sentinel://a:1\", \"rediss+sentinel://b:2\"]\nredis_sentinel_master = \"m\"\n{keyline}"
    ));
    assert_eq!(k, "session.redis_sentinels", "{m}");
    assert!(m.contains("mixes TLS"), "{m}");
    let (k, m) = err(format!(
        "store = \"redis\"\nredis_url = \"redis://127.0.0.1/0\"\nredis_sentinels = [\"redis+sentinel://a:1\"]\nredis_sentinel_master = \"m\"\n{keyline}"
    ));
    assert_eq!(k, "session.redis_sentinels", "{m}");
    // Default port, plain to a remote host: a warning, not an error.
    let cfg = load(format!(
        "store = \"redis\"\nredis_sentinels = [\"redis+sentinel://10.0.0.9\"]\nredis_sentinel_master = \"m\"\n{keyline}"
    ))
    .expect("valid");
    assert!(
        cfg.warnings
            .iter()
            .any(|w| w.contains("redis+sentinel://10.0.0.9:26379/m")),
        "{:?}",
        cfg.warnings
    );
}
