//! `[session]`: timeouts, the cookie name and where sessions are stored. [`raw`] mirrors the
//! file, `check` (with `redis` for the Redis store) turns it into [`SessionConfig`].

mod check;
pub mod raw;
mod redis;

use std::path::PathBuf;
use std::time::Duration;

pub use check::validate;
pub use raw::RawSession;

/// Gateway session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Where sessions live: in this process or in Redis.
    pub store: StoreKind,
    /// A session ends after this long without a request.
    pub idle_timeout: Duration,
    /// A session ends after this long in any case.
    pub absolute_timeout: Duration,
    /// How often expired sessions are removed (their websockets closed).
    pub sweep_interval: Duration,
    /// `__Host-qlik-gateway` on https, `qlik-gateway` on http, unless configured.
    pub cookie_name: String,
    /// Live sessions one user (directory and id, any case) may hold; one more login is refused
    /// with 429.
    pub max_sessions_per_user: usize,
}

/// Where gateway sessions live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// In this process: one replica only, sessions lost on restart.
    Memory,
    /// Redis, shared by several replicas; sessions sealed with [`RedisStoreConfig::encryption_key`].
    Redis(RedisStoreConfig),
}

/// `session.store = "redis"`, checked (the files read, the URL parsed; nothing connected).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisStoreConfig {
    /// `session.redis_url` as written. May hold a password: never logged (see [`Self::target`]).
    /// Empty with [`Self::sentinel`].
    pub url: String,
    /// `session.redis_sentinels` / `redis_sentinel_master`: the master is found through these.
    pub sentinel: Option<Box<SentinelConfig>>,
    /// From `session.redis_password_file`, trailing newline removed.
    pub password: Option<String>,
    /// `session.redis_ca_cert`.
    pub ca_cert: Option<PathBuf>,
    /// Prefix of every key the gateway writes (`session.redis_key_prefix`, default `qlik-gateway:`).
    pub key_prefix: String,
    /// Per Redis call, connecting included.
    pub timeout: Duration,
    /// Seals every session written.
    pub encryption_key: crate::session::crypto::KeyMaterial,
    /// Open sessions sealed before a key rotation.
    pub old_encryption_keys: Vec<crate::session::crypto::KeyMaterial>,
    /// `redis://host:port/db` (or `rediss://`) without credentials: what messages name.
    pub target: String,
}

/// Redis behind Sentinel: where the sentinels are and which master they are asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    /// `redis://host:port` or `rediss://host:port` per sentinel (no credentials).
    pub nodes: Vec<String>,
    /// The monitored master's name.
    pub master: String,
    /// The master (and its replicas) speak TLS: `rediss+sentinel://` / `rediss://` sentinels.
    pub tls: bool,
}

impl std::fmt::Debug for RedisStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreConfig")
            .field("target", &self.target)
            .field("sentinel", &self.sentinel)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("encryption_key", &self.encryption_key)
            .field("old_encryption_keys", &self.old_encryption_keys)
            .finish()
    }
}
