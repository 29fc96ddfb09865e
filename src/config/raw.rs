//! The configuration file as written: serde structs that mirror the TOML keys one to one.
//!
//! Every struct denies unknown keys, so a typo is reported instead of silently ignored.
//! Validation that needs more than the type system (files, URLs, combinations) lives in
//! [`super::validate`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    #[serde(default)]
    pub session: RawSession,
    pub auth: RawAuth,
    pub qlik: RawQlik,
    #[serde(default)]
    pub mashup: RawMashup,
    #[serde(default)]
    pub security: RawSecurity,
    #[serde(default)]
    pub log: RawLog,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: SocketAddr,
    pub public_url: String,
    pub admin_listen: Option<SocketAddr>,
    pub tls: Option<RawTls>,
    #[serde(default = "defaults::header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    #[serde(default = "defaults::max_headers")]
    pub max_headers: usize,
    #[serde(default = "defaults::max_request_line_bytes")]
    pub max_request_line_bytes: usize,
    #[serde(default = "defaults::body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
    #[serde(default = "defaults::max_gateway_body_bytes")]
    pub max_gateway_body_bytes: usize,
    #[serde(default = "defaults::max_upstream_header_bytes")]
    pub max_upstream_header_bytes: usize,
    #[serde(default = "defaults::drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

/// `[server.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[session]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
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
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(default = "defaults::absolute_timeout", with = "humantime_serde")]
    pub absolute_timeout: Duration,
    #[serde(default = "defaults::sweep_interval", with = "humantime_serde")]
    pub sweep_interval: Duration,
    pub cookie_name: Option<String>,
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

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub provider: String,
    #[serde(rename = "static")]
    pub static_user: Option<RawStaticUser>,
    pub trusted_header: Option<RawTrustedHeader>,
    pub negotiate: Option<RawNegotiate>,
    pub oidc: Option<RawOidc>,
}

/// `[auth.static]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaticUser {
    pub user_directory: String,
    pub user_id: String,
    #[serde(default)]
    pub attributes: Vec<std::collections::BTreeMap<String, String>>,
}

/// `[auth.trusted_header]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrustedHeader {
    pub header: String,
    pub trusted_proxies: Vec<String>,
    pub user_directory: Option<String>,
    pub domain_map: Option<std::collections::BTreeMap<String, String>>,
}

/// `[auth.negotiate]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNegotiate {
    pub keytab: Option<PathBuf>,
    pub service_principal: Option<String>,
    pub user_directory: Option<String>,
    pub realm_map: Option<std::collections::BTreeMap<String, String>>,
    pub user_id_case: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub keytab_poll_interval: Option<Duration>,
    pub replay_cache: Option<String>,
}

/// `[auth.oidc]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub client_auth: Option<String>,
    pub private_key_file: Option<PathBuf>,
    pub private_key_id: Option<String>,
    pub client_certificate_file: Option<PathBuf>,
    pub scopes: Option<Vec<String>>,
    pub redirect_path: Option<String>,
    pub user_id_claim: Option<String>,
    #[serde(default)]
    pub split_user_id: bool,
    pub domain_map: Option<std::collections::BTreeMap<String, String>>,
    pub user_directory: Option<String>,
    pub user_directory_claim: Option<String>,
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
    pub ca_cert: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// A key that takes one value or a list (`proxy_url` of several Qlik proxy nodes).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// `[qlik]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQlik {
    pub proxy_url: OneOrMany,
    pub qps_api_url: OneOrMany,
    #[serde(default, with = "humantime_serde")]
    pub health_interval: Option<Duration>,
    #[serde(default)]
    pub virtual_proxy: String,
    #[serde(default = "defaults::mode")]
    pub mode: String,
    pub session_cookie: Option<String>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub header_name: Option<String>,
    /// The engine directly (`wss://engine:4747`), bypassing the proxy for websockets.
    pub engine_url: Option<String>,
    /// Header mode: the value's form; `$ud` and `$id` stand for directory and user id.
    pub header_pattern: Option<String>,
    pub mount: Option<String>,
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "defaults::qps_timeout", with = "humantime_serde")]
    pub qps_timeout: Duration,
    #[serde(default = "defaults::response_timeout", with = "humantime_serde")]
    pub response_timeout: Duration,
}

/// `[mashup]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMashup {
    pub dir: Option<PathBuf>,
    pub upstream: Option<String>,
    #[serde(default)]
    pub public_paths: Vec<String>,
}

/// `[security]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurity {
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default = "defaults::max_websocket_message")]
    pub max_websocket_message: usize,
    #[serde(default = "defaults::max_websockets_per_session")]
    pub max_websockets_per_session: usize,
}

impl Default for RawSecurity {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_websocket_message: defaults::max_websocket_message(),
            max_websockets_per_session: defaults::max_websockets_per_session(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    #[serde(default = "defaults::log_format")]
    pub format: String,
    #[serde(default = "defaults::log_level")]
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: defaults::log_format(),
            level: defaults::log_level(),
        }
    }
}

pub(crate) mod defaults {
    use std::time::Duration;

    pub fn header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    /// Kerberos tokens with a large PAC exceed 8 KiB; 64 KiB is the documented floor.
    pub fn max_header_bytes() -> usize {
        96 * 1024
    }
    /// hyper's default header count, which it parses into a stack array.
    pub fn max_headers() -> usize {
        100
    }
    /// Twice nginx's 8 KiB buffer: Qlik's single-integration URLs carry selections in the query.
    pub fn max_request_line_bytes() -> usize {
        16 * 1024
    }
    /// nginx's `client_body_timeout`.
    pub fn body_timeout() -> Duration {
        Duration::from_secs(60)
    }
    /// Gateway endpoints take forms at most (an OIDC form_post carries an ID token).
    pub fn max_gateway_body_bytes() -> usize {
        64 * 1024
    }
    /// Envoy's default for response headers is 60 KiB; Qlik's are a few KiB.
    pub fn max_upstream_header_bytes() -> usize {
        64 * 1024
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(20)
    }
    pub fn store() -> String {
        "memory".into()
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(30 * 60)
    }
    pub fn absolute_timeout() -> Duration {
        Duration::from_secs(12 * 3600)
    }
    pub fn sweep_interval() -> Duration {
        Duration::from_secs(60)
    }
    pub fn mode() -> String {
        "session".into()
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn qps_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn response_timeout() -> Duration {
        Duration::from_secs(120)
    }
    pub fn max_websocket_message() -> usize {
        64 * 1024 * 1024
    }
    /// A mashup opens one engine socket per app; a user with a dozen tabs of several apps stays
    /// well below this, a script opening sockets in a loop does not.
    pub fn max_websockets_per_session() -> usize {
        64
    }
    /// Browsers, devices and a lost cookie now and then stay well below this; a script logging
    /// in without keeping the cookie does not.
    pub fn max_sessions_per_user() -> usize {
        100
    }
    pub fn log_format() -> String {
        "text".into()
    }
    pub fn log_level() -> String {
        "info".into()
    }
}
