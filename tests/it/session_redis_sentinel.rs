//! `session.store = "redis"` behind Redis Sentinel: a master, one replica (`--replicaof`) and one
//! sentinel (quorum 1, short `down-after-milliseconds`), all on free loopback ports in temp dirs,
//! killed on drop. The gateway finds the master through the sentinel; when the master dies and
//! the sentinel promotes the replica, the gateway follows without a restart.
//!
//! A login is answered only once the replicas the master has connected hold the new session
//! (`WAIT`), so a failover loses no session a user was given; `redis_fails_over_under_load`
//! checks that under load, with a replica that stops receiving the master's writes first.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::redis_server::key_file;
use crate::common::{config_toml, cookie_from, http_client, Setup};
use qlik_gateway::config;
use qlik_gateway::server::Server;
use qlik_gateway::state::AppState;
use qlik_sim::{Sim, SimOptions};
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
            // A readiness poll of a child process (sync code, bounded by the loop's deadline).
            #[allow(clippy::disallowed_methods)]
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

/// A replica of the master at `master_port` (its own, or a [`Link`] to it) and a sentinel
/// watching it there, once the sentinel knows the replica (a failover needs one).
async fn replica_and_sentinel(master_port: u16) -> (Proc, Proc) {
    let replica = Proc::server(
        "redis replica",
        &[
            "--replicaof".into(),
            "127.0.0.1".into(),
            master_port.to_string(),
        ],
    );
    let sentinel = Proc::sentinel(master_port);
    until("the sentinel to see the replica", || {
        let r: redis::RedisResult<Vec<redis::Value>> = redis::cmd("SENTINEL")
            .arg("replicas")
            .arg(MASTER)
            .query(&mut sentinel.conn());
        r.is_ok_and(|v| !v.is_empty())
    })
    .await;
    (replica, sentinel)
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
    let (replica, sentinel) = replica_and_sentinel(master.port).await;
    assert_eq!(master_port(&sentinel), Some(master.port));

    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(SimOptions::default(), &dir.path().join("pki"))
        .await
        .expect("qlik-sim starts");
    let key = key_file(dir.path(), "session.key");
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
    // The old session survives when the replica was in sync at the login (the login waited for
    // it); this test does not wait for the sync, so it may also be gone.
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
    let key = key_file(dir.path(), "session.key");
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

/// The network in front of the master: a TCP relay that the replica, the sentinel and through it
/// the gateways reach the master by (the sentinel would "fix" a replica replicating from an
/// address other than the one it monitors). After [`Link::cut`] it drops what the master sends
/// on the replication stream (a partition, or a replica lagging far behind, that neither side
/// notices yet): the master's writes from then on never reach the replica, and the replica
/// never acknowledges them. Everything else passes.
struct Link {
    port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    async fn start(master_port: u16) -> Link {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let dropping = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(master) = tokio::net::TcpStream::connect(("127.0.0.1", master_port)).await
                else {
                    continue;
                };
                let dropping = dropping.clone();
                tokio::spawn(async move {
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_master, mut to_master) = master.into_split();
                    // A replica asks for the stream with PSYNC.
                    let replication = AtomicBool::new(false);
                    let up = async {
                        let mut buf = vec![0u8; 64 << 10];
                        while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                            if buf[..n].windows(5).any(|w| w == b"PSYNC") {
                                replication.store(true, Ordering::SeqCst);
                            }
                            if to_master.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down = async {
                        let mut buf = vec![0u8; 64 << 10];
                        while let Ok(n @ 1..) = from_master.read(&mut buf).await {
                            let drop = dropping.load(Ordering::SeqCst)
                                && replication.load(Ordering::SeqCst);
                            if !drop && to_client.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        Link { port, cut, task }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the failover stands when a request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd)]
enum Phase {
    /// Master and replica in sync.
    Healthy,
    /// The replica no longer receives the master's writes.
    Cut,
    /// The master was killed (the sentinel promotes the replica meanwhile).
    Killed,
}

/// One answer a user got during the load: what was asked, of which gateway replica, and how it
/// went.
#[derive(Debug, Clone)]
struct Answer {
    what: &'static str,
    gateway: usize,
    phase: Phase,
    status: u16,
    retry_after: Option<String>,
    body: String,
}

impl Answer {
    /// Success, or the documented "try again": 503 `session_store` with `Retry-After`. Never a
    /// 500, never a 401 (which sends a logged-in user back to the login).
    fn acceptable(&self) -> bool {
        let ok = if self.what == "login" { 302 } else { 200 };
        self.status == ok
            || (self.status == 503
                && self.retry_after.is_some()
                && self.body.contains(r#""error":"session_store""#))
    }
}

/// Sends `req` and notes the answer; also returns the gateway cookie it set.
async fn answer(
    what: &'static str,
    gateway: usize,
    phase: Phase,
    req: reqwest::RequestBuilder,
) -> (Answer, Option<String>) {
    let resp = req.send().await.expect("the gateway answers");
    let cookie = cookie_from(&resp);
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.text().await.unwrap_or_default();
    let a = Answer {
        what,
        gateway,
        phase,
        status,
        retry_after,
        body,
    };
    (a, cookie)
}

/// What the clients share with the test: the phase they are in, and what they got.
#[derive(Default)]
struct Load {
    phase: std::sync::Mutex<Option<Phase>>,
    stop: std::sync::atomic::AtomicBool,
    /// Every cookie a login set, with the phase its login was sent in.
    issued: std::sync::Mutex<Vec<(String, Phase)>>,
    answers: std::sync::Mutex<Vec<Answer>>,
}

impl Load {
    fn phase(&self) -> Phase {
        self.phase.lock().unwrap().unwrap_or(Phase::Healthy)
    }

    fn enter(&self, p: Phase) {
        *self.phase.lock().unwrap() = Some(p);
    }

    fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }

    /// One client: log in at one gateway replica, then use the session at both (the gateway's
    /// own `me`, and a proxied Qlik request, which also stores the Qlik session), round after
    /// round, alternating the replica it logs in at.
    async fn client(self: Arc<Self>, n: usize, gws: Arc<[Gw; 2]>) {
        use std::sync::atomic::Ordering;
        let client = http_client();
        let mut cookie: Option<String> = None;
        let started = Instant::now();
        let mut round = 0usize;
        while !self.stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
            round += 1;
            let at = (n + round) % 2;
            let phase = self.phase();
            let (a, set) = answer(
                "login",
                at,
                phase,
                client.get(format!("{}/_gateway/login", gws[at].url)),
            )
            .await;
            if a.status == 302 {
                let set = set.expect("a login's 302 sets the cookie");
                self.issued.lock().unwrap().push((set.clone(), phase));
                cookie = Some(set);
            }
            self.answers.lock().unwrap().push(a);
            let Some(cookie) = cookie.as_deref() else {
                continue;
            };
            for (i, gw) in gws.iter().enumerate() {
                for (what, path) in [("me", "/_gateway/me"), ("qlik", "/mashup/sim/echo")] {
                    let (a, _) = answer(
                        what,
                        i,
                        self.phase(),
                        client
                            .get(format!("{}{path}", gw.url))
                            .header("cookie", cookie)
                            .header("accept", "application/json"),
                    )
                    .await;
                    self.answers.lock().unwrap().push(a);
                }
            }
        }
    }
}

/// Several clients log in and use their sessions in a loop against two gateway replicas that
/// share Redis through Sentinel. The replica first stops receiving the master's writes, then the
/// master is killed and the sentinel promotes the replica. No session a user was given is lost,
/// every answer meanwhile is a success or a 503 with `Retry-After`, and afterwards everything
/// works on both gateway replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fails_over_under_load() {
    const CLIENTS: usize = 4;

    let mut master = Proc::server("redis master", &[]);
    let link = Link::start(master.port).await;
    let (replica, sentinel) = replica_and_sentinel(link.port).await;
    // The sentinel knowing the replica does not mean it replicates yet: until its link is up,
    // the master has no replica to wait for.
    until("the replica to be in sync", || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica.conn())
            .unwrap_or_default();
        info.contains("master_link_status:up")
    })
    .await;

    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(SimOptions::default(), &dir.path().join("pki"))
        .await
        .expect("qlik-sim starts");
    let key = key_file(dir.path(), "session.key");
    // Every login is alice's: room for all the sessions the loop makes.
    let session = format!(
        "{}max_sessions_per_user = 100000\n",
        sentinel_session(sentinel.port, &key, "1s")
    );
    let gws = Arc::new([Gw::start(&sim, &session), Gw::start(&sim, &session)]);
    let load = Arc::new(Load::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(load.clone().client(n, gws.clone())))
        .collect();
    let logins_in = |p: Phase| {
        load.answers()
            .iter()
            .filter(|a| a.what == "login" && a.phase == p)
            .count()
    };

    // In sync, under load: every client has logged in a few times.
    until("logins before the failover", || {
        load.issued.lock().unwrap().len() >= 5 * CLIENTS
    })
    .await;
    // The replica falls behind: what the master stores now would die with it.
    link.cut();
    load.enter(Phase::Cut);
    until("logins while the replica receives nothing", || {
        logins_in(Phase::Cut) >= 2 * CLIENTS
    })
    .await;
    load.enter(Phase::Killed);
    master.kill();
    until("the sentinel to promote the replica", || {
        master_port(&sentinel) == Some(replica.port)
    })
    .await;
    // Load goes on until both gateway replicas have served logins and sessions again.
    let mark = load.answers().len();
    until("both gateways to succeed after the promotion", || {
        let a = load.answers();
        (0..2).all(|g| {
            ["login", "me", "qlik"].iter().all(|what| {
                a[mark..]
                    .iter()
                    .any(|x| x.gateway == g && x.what == *what && matches!(x.status, 200 | 302))
            })
        })
    })
    .await;
    load.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }

    let answers = load.answers();
    let issued = load.issued.lock().unwrap().clone();
    let count = |p: Phase, f: &dyn Fn(&Answer) -> bool| {
        answers.iter().filter(|a| a.phase == p && f(a)).count()
    };
    eprintln!(
        "{} answers ({} while cut, {} after the kill, {} of those 503); {} sessions issued ({} before the kill)",
        answers.len(),
        count(Phase::Cut, &|_| true),
        count(Phase::Killed, &|_| true),
        count(Phase::Killed, &|a| a.status == 503),
        issued.len(),
        issued.iter().filter(|(_, p)| *p < Phase::Killed).count(),
    );
    for a in &answers {
        assert!(
            a.acceptable(),
            "{} at gateway {} ({:?}): {} (Retry-After {:?}) {}",
            a.what,
            a.gateway,
            a.phase,
            a.status,
            a.retry_after,
            a.body
        );
    }
    // What the gateway does about a session the replica does not have: it gives no cookie for
    // it. Logins sent while the replica received nothing were asked to try again.
    assert!(
        answers
            .iter()
            .filter(|a| a.what == "login" && a.phase == Phase::Cut)
            .all(|a| a.status == 503),
        "a login was confirmed that the replica never received"
    );
    assert!(
        issued.iter().all(|(_, p)| *p != Phase::Cut),
        "a cookie was issued while the replica received nothing"
    );

    // No session was lost: every cookie issued, before the kill or during the failover, still
    // works on both gateway replicas; and new logins work on both.
    for (cookie, phase) in &issued {
        for gw in gws.iter() {
            assert_eq!(
                gw.me(cookie).await,
                200,
                "a session issued in phase {phase:?} was lost"
            );
        }
    }
    for gw in gws.iter() {
        let fresh = gw.try_login().await.expect("a login after the failover");
        assert_eq!(gws[0].me(&fresh).await, 200);
        assert_eq!(gws[1].me(&fresh).await, 200);
    }
}
