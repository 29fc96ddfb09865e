//! `[session]` as written: a serde struct that mirrors the TOML keys one to one.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[session]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    /// session.store: where gateway sessions live ("memory" or "redis").
    #[serde(default = "defaults::store")]
    pub store: String,
    /// `redis://[user:password@]host[:port][/db]` or `rediss://…` (TLS).
    pub redis_url: Option<String>,
    /// Redis Sentinel instead of `redis_url`: the sentinels' addresses
    /// (`redis+sentinel://host:26379`, or `redis://` / `rediss://` for TLS to the sentinels). The
    /// store asks them for the current master of `redis_sentinel_master` and follows failovers.
    #[serde(default)]
    pub redis_sentinels: Vec<String>,
    /// The master name the sentinels monitor (`sentinel monitor <name> …`); with `redis_sentinels`.
    pub redis_sentinel_master: Option<String>,
    /// A file holding the Redis password (instead of one in `redis_url`).
    pub redis_password_file: Option<PathBuf>,
    /// PEM CA certificate(s) that sign the Redis server's certificate (`rediss://`); default: the
    /// system's roots.
    pub redis_ca_cert: Option<PathBuf>,
    /// Prefix of every key the gateway writes in Redis (default `qlik-gateway:`).
    pub redis_key_prefix: Option<String>,
    /// Time limit of one Redis call, connecting included (default 2s).
    #[serde(default, with = "humantime_serde")]
    pub redis_timeout: Option<Duration>,
    /// 32 random bytes, base64 (`openssl rand -base64 32`): seals sessions at rest in Redis.
    pub encryption_key_file: Option<PathBuf>,
    /// Previous keys, still accepted for reading sessions sealed before a rotation.
    #[serde(default)]
    pub old_encryption_key_files: Vec<PathBuf>,
    /// session.idle_timeout: a session ends after this long without a request.
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// session.absolute_timeout: a session ends after this long in any case.
    #[serde(default = "defaults::absolute_timeout", with = "humantime_serde")]
    pub absolute_timeout: Duration,
    /// session.sweep_interval: how often expired sessions are removed (their websockets closed).
    #[serde(default = "defaults::sweep_interval", with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// session.cookie_name: the gateway's cookie name (default "__Host-qlik-gateway" on https, "qlik-gateway" on http).
    pub cookie_name: Option<String>,
    /// session.max_sessions_per_user: the live sessions one user may hold, all replicas together.
    #[serde(default = "defaults::max_sessions_per_user")]
    pub max_sessions_per_user: usize,
}

impl Default for RawSession {
    fn default() -> Self {
        Self {
            store: defaults::store(),
            redis_url: None,
            redis_sentinels: Vec::new(),
            redis_sentinel_master: None,
            redis_password_file: None,
            redis_ca_cert: None,
            redis_key_prefix: None,
            redis_timeout: None,
            encryption_key_file: None,
            old_encryption_key_files: Vec::new(),
            idle_timeout: defaults::idle_timeout(),
            absolute_timeout: defaults::absolute_timeout(),
            sweep_interval: defaults::sweep_interval(),
            cookie_name: None,
            max_sessions_per_user: defaults::max_sessions_per_user(),
        }
    }
}

mod defaults {
    use std::time::Duration;

    pub(super) fn store() -> String {
        "memory".into()
    }
    pub(super) fn idle_timeout() -> Duration {
        Duration::from_secs(30 * 60)
    }
    pub(super) fn absolute_timeout() -> Duration {
        Duration::from_secs(12 * 3600)
    }
    pub(super) fn sweep_interval() -> Duration {
        Duration::from_secs(60)
    }
    /// Browsers, devices and a lost cookie now and then stay well below this; a script logging
    /// in without keeping the cookie does not.
    pub(super) fn max_sessions_per_user() -> usize {
        100
    }
}
