//! A redis-server per test (its own free loopback port, directory and log; killed on drop) and
//! the session encryption key files the Redis store needs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A redis-server of this test: its own port, directory and log; killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    /// Its loopback port.
    pub port: u16,
    dir: tempfile::TempDir,
    /// Extra arguments (TLS, password).
    extra: Vec<String>,
    tls: bool,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(Vec::new(), false)
    }

    pub fn start_with(extra: Vec<String>, tls: bool) -> Self {
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            extra,
            tls,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut args: Vec<String> = vec!["--bind".into(), "127.0.0.1".into()];
        if self.tls {
            args.extend(["--port".into(), "0".into(), "--tls-port".into(), port]);
        } else {
            args.extend(["--port".into(), port]);
        }
        args.extend(
            [
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
            ]
            .map(String::from),
        );
        args.extend(["--dir".into(), self.dir.path().display().to_string()]);
        args.extend(self.extra.iter().cloned());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .expect("redis log");
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): these tests need a local Redis server. \
                     Run ./scripts/test.sh, which installs it, or `apt-get install redis-server`"
                )
            });
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                panic!(
                    "redis-server did not listen on {}:\n{}",
                    self.port,
                    self.log()
                );
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("redis-server exited with {status}:\n{}", self.log());
            }
            // A readiness poll of a child process (sync code, bounded by the loop's deadline).
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {sig} {pid}");
    }

    /// Freezes the server: connections stay open, nothing answers (a hung or overloaded Redis).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the server (its data is gone: no persistence in these tests).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// A plain client for looking at what the gateway stored (not through the gateway).
    pub fn raw(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection()
            .expect("raw connection")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // A paused server must be woken to die promptly on some kernels; harmless otherwise.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.stop();
    }
}

/// A fresh random key file (32 bytes, base64) in `dir`.
pub fn key_file(dir: &Path, name: &str) -> PathBuf {
    let mut k = [0u8; 32];
    rand::rng().fill_bytes(&mut k);
    let p = dir.join(name);
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
