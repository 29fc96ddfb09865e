//! Configuration: a TOML file, every key overridable by `QLIK_GATEWAY__SECTION__KEY`, validated into
//! [`Config`] before anything starts.
//!
//! Two layers, like rpxy: [`raw`] mirrors the file; [`Config`] holds checked, resolved values so the
//! request path never re-parses or re-validates configuration.
//!
//! Each section's typed config, raw struct and checks live in the module that owns it (`auth`,
//! `qlik`, `session`, `mashup`, `logging`); this module loads the file, hands each section to its
//! owner, checks `[server]` and `[security]` and what spans sections, and assembles [`Config`].

pub mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;

pub use crate::auth::config::{AuthConfig, NegotiateConfig, OidcConfig};
pub use crate::config_checks::ConfigError;
pub use crate::logging::LogConfig;
pub use crate::mashup::config::{MashupConfig, MashupSource};
pub use crate::qlik::config::{HeaderAuth, QlikConfig, QlikMode, QlikNodeConfig};
pub use crate::session::config::{RedisStoreConfig, SentinelConfig, SessionConfig, StoreKind};

pub use raw::RawConfig;
pub use validate::validate;

/// Environment variables with this prefix override file keys: `QLIK_GATEWAY__QLIK__PROXY_URL`.
pub const ENV_PREFIX: &str = "QLIK_GATEWAY__";

/// The checked configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`, checked.
    pub server: ServerConfig,
    /// `[session]`, checked.
    pub session: SessionConfig,
    /// `[auth]`, checked: the provider and its settings.
    pub auth: AuthConfig,
    /// `[qlik]`, checked: the proxy nodes and the hand-over mode.
    pub qlik: QlikConfig,
    /// `[mashup]`, checked: what is served beside Qlik.
    pub mashup: MashupConfig,
    /// `[security]`, checked.
    pub security: SecurityConfig,
    /// `[log]`, checked.
    pub log: LogConfig,
    /// Non-fatal findings worth an operator's attention (printed by `check-config` and at start).
    pub warnings: Vec<String>,
}

/// Listener settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address the public listener binds.
    pub listen: SocketAddr,
    /// Scheme + authority users see, without a trailing slash (`https://bi.example.com`).
    pub public_origin: String,
    /// Whether `server.public_url` is https (the cookie is then Secure and, by default, `__Host-` prefixed).
    pub public_https: bool,
    /// The plain-HTTP admin listener (metrics, healthz, readyz), when configured.
    pub admin_listen: Option<SocketAddr>,
    /// The listener's certificate and key; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The first request head of a connection (from accept, or the end of the TLS handshake)
    /// and every later head must arrive within this.
    pub header_read_timeout: Duration,
    /// The request head: request line + `name: value\r\n` per header + `\r\n`, as parsed.
    pub max_header_bytes: usize,
    /// Header lines per request.
    pub max_headers: usize,
    /// `METHOD SP target SP HTTP/1.1\r\n`; above it: 414.
    pub max_request_line_bytes: usize,
    /// Longest wait for the next piece of a request body.
    pub body_timeout: Duration,
    /// Request bodies to `/_gateway/` endpoints (and the login callback); above it: 413.
    pub max_gateway_body_bytes: usize,
    /// Response heads from Qlik and the mashup dev server; above it: 502.
    pub max_upstream_header_bytes: usize,
    /// On SIGTERM/SIGINT, the time requests and websockets get to finish.
    pub drain_timeout: Duration,
    /// Threads that accept and serve connections (`server.threads`, else one per CPU the
    /// process may use: `available_parallelism`, which follows `taskset`, CPU affinity and a
    /// container's CPU quota).
    pub threads: usize,
}

/// PEM files for the HTTPS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
}

/// Browser-facing security settings.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// Origins (`scheme://host[:port]`) besides the public one that may open websockets.
    pub allowed_origins: Vec<String>,
    /// The largest websocket message relayed in either direction (bytes).
    pub max_websocket_message: usize,
    /// Open engine websockets one gateway session may hold; one more is refused with 429.
    pub max_websockets_per_session: usize,
}

/// Reads `path`, applies environment overrides and validates.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    if let Err(source) = std::fs::metadata(path) {
        return Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        });
    }
    let figment = Figment::new()
        .merge(Toml::file_exact(path))
        .merge(Env::prefixed(ENV_PREFIX).split("__"));
    load_figment(figment)
}

/// Parses a TOML string (with environment overrides), as `load` does for a file.
pub fn load_str(toml: &str) -> Result<Config, ConfigError> {
    let figment = Figment::new()
        .merge(Toml::string(toml))
        .merge(Env::prefixed(ENV_PREFIX).split("__"));
    load_figment(figment)
}

fn load_figment(figment: Figment) -> Result<Config, ConfigError> {
    let raw: RawConfig = figment.extract().map_err(from_figment)?;
    validate(raw)
}

/// Turns figment's error into one naming the full key (`server.listen`), not only its section.
fn from_figment(err: figment::Error) -> ConfigError {
    use figment::error::Kind;
    let err = err
        .into_iter()
        .next()
        .unwrap_or_else(|| figment::Error::from("invalid configuration".to_string()));
    let mut path = err.path.clone();
    let mut push = |field: &str| {
        if path.last().map(String::as_str) != Some(field) {
            path.push(field.to_string());
        }
    };
    let message = match &err.kind {
        Kind::UnknownField(field, expected) => {
            push(field);
            format!("unknown key; expected one of: {}", expected.join(", "))
        }
        Kind::MissingField(field) => {
            push(field);
            "missing; this key is required".to_string()
        }
        other => {
            let text = other.to_string();
            if text.contains("duration") {
                format!("{text}; write durations like \"500ms\", \"30s\", \"30m\", \"12h\"")
            } else {
                text
            }
        }
    };
    let key = if path.is_empty() {
        "(file)".to_string()
    } else {
        path.join(".")
    };
    ConfigError::key(key, message)
}
