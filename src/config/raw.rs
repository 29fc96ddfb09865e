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
