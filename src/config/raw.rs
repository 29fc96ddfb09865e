//! The configuration file as written: serde structs that mirror the TOML keys one to one.
//!
//! Every struct denies unknown keys, so a typo is reported instead of silently ignored. Each
//! section's struct lives beside its typed config in the module that owns it (re-exported here);
//! `[server]` and `[security]` are the gateway's own. Validation that needs more than the type
//! system (files, URLs, combinations) lives beside each section, and in [`super::validate`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use crate::auth::config::raw::{
    RawAuth, RawNegotiate, RawOidc, RawStaticUser, RawTrustedHeader,
};
pub use crate::logging::RawLog;
pub use crate::mashup::config::RawMashup;
pub use crate::qlik::config::raw::{OneOrMany, RawQlik};
pub use crate::session::config::RawSession;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`: listeners, public URL and request limits.
    pub server: RawServer,
    /// `[session]`: where gateway sessions live and when they end.
    #[serde(default)]
    pub session: RawSession,
    /// `[auth]`: who logs users in.
    pub auth: RawAuth,
    /// `[qlik]`: the Qlik proxy and how users are handed to it.
    pub qlik: RawQlik,
    /// `[mashup]`: the mashup served beside Qlik.
    #[serde(default)]
    pub mashup: RawMashup,
    /// `[security]`: websocket origins and limits.
    #[serde(default)]
    pub security: RawSecurity,
    /// `[log]`: log format and level.
    #[serde(default)]
    pub log: RawLog,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// server.listen: the address the gateway listens on.
    pub listen: SocketAddr,
    /// server.public_url: the one origin users see; cookies, redirects and the websocket Origin check derive from it.
    pub public_url: String,
    /// server.admin_listen: the optional plain-HTTP admin listener for metrics, healthz and readyz.
    pub admin_listen: Option<SocketAddr>,
    /// `[server.tls]`: HTTPS on the listener itself; absent, the gateway serves plain HTTP.
    pub tls: Option<RawTls>,
    /// server.header_read_timeout: the time allowed for a client to send a request head.
    #[serde(default = "defaults::header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// server.max_header_bytes: the largest request head accepted (431 above it).
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// server.max_headers: the most header lines per request (431 above it).
    #[serde(default = "defaults::max_headers")]
    pub max_headers: usize,
    /// server.max_request_line_bytes: the longest request line (414 above it).
    #[serde(default = "defaults::max_request_line_bytes")]
    pub max_request_line_bytes: usize,
    /// server.body_timeout: the longest wait for the next piece of a request body.
    #[serde(default = "defaults::body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
    /// server.max_gateway_body_bytes: the largest request body to the gateway's own endpoints (413 above it).
    #[serde(default = "defaults::max_gateway_body_bytes")]
    pub max_gateway_body_bytes: usize,
    /// server.max_upstream_header_bytes: the largest response head from Qlik or the mashup dev server (502 above it).
    #[serde(default = "defaults::max_upstream_header_bytes")]
    pub max_upstream_header_bytes: usize,
    /// server.drain_timeout: on SIGTERM/SIGINT, the time requests and websockets get to finish.
    #[serde(default = "defaults::drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// server.threads: threads that accept and serve connections, each with its own scheduler;
    /// absent: one per CPU the process may use.
    #[serde(default)]
    pub threads: Option<usize>,
}

/// `[server.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// server.tls.cert: the certificate chain (PEM).
    pub cert: PathBuf,
    /// server.tls.key: the private key (PEM).
    pub key: PathBuf,
}

/// `[security]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurity {
    /// security.allowed_origins: origins besides public_url whose pages may open the engine websocket.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// security.max_websocket_message: the largest websocket message relayed in either direction (bytes).
    #[serde(default = "defaults::max_websocket_message")]
    pub max_websocket_message: usize,
    /// security.max_websockets_per_session: the open websockets one gateway session may hold at once.
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

mod defaults {
    use std::time::Duration;

    pub(super) fn header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    /// Kerberos tokens with a large PAC exceed 8 KiB; 64 KiB is the documented floor.
    pub(super) fn max_header_bytes() -> usize {
        96 * 1024
    }
    /// hyper's default header count, which it parses into a stack array.
    pub(super) fn max_headers() -> usize {
        100
    }
    /// Twice nginx's 8 KiB buffer: Qlik's single-integration URLs carry selections in the query.
    pub(super) fn max_request_line_bytes() -> usize {
        16 * 1024
    }
    /// nginx's `client_body_timeout`.
    pub(super) fn body_timeout() -> Duration {
        Duration::from_secs(60)
    }
    /// Gateway endpoints take forms at most (an OIDC form_post carries an ID token).
    pub(super) fn max_gateway_body_bytes() -> usize {
        64 * 1024
    }
    /// Envoy's default for response headers is 60 KiB; Qlik's are a few KiB.
    pub(super) fn max_upstream_header_bytes() -> usize {
        64 * 1024
    }
    pub(super) fn drain_timeout() -> Duration {
        Duration::from_secs(20)
    }
    pub(super) fn max_websocket_message() -> usize {
        64 * 1024 * 1024
    }
    /// A mashup opens one engine socket per app; a user with a dozen tabs of several apps stays
    /// well below this, a script opening sockets in a loop does not.
    pub(super) fn max_websockets_per_session() -> usize {
        64
    }
}
