//! Configuration: a TOML file, every key overridable by `QLIK_GATEWAY__SECTION__KEY`, validated into
//! [`Config`] before anything starts.
//!
//! Two layers, like rpxy: [`raw`] mirrors the file; [`Config`] holds checked, resolved values so the
//! request path never re-parses or re-validates configuration.

mod negotiate;
mod oidc;
pub mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;

pub use raw::RawConfig;
pub use validate::validate;

/// Environment variables with this prefix override file keys: `QLIK_GATEWAY__QLIK__PROXY_URL`.
pub const ENV_PREFIX: &str = "QLIK_GATEWAY__";

/// A configuration problem, always naming the key and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key}: {message}")]
    Key { key: String, message: String },
}

impl ConfigError {
    pub(crate) fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Key {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The offending key, when the problem is one key's value.
    pub fn key_name(&self) -> Option<&str> {
        match self {
            Self::Key { key, .. } => Some(key),
            Self::Read { .. } => None,
        }
    }
}

/// The checked configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub session: SessionConfig,
    pub auth: AuthConfig,
    pub qlik: QlikConfig,
    pub mashup: MashupConfig,
    pub security: SecurityConfig,
    pub log: LogConfig,
    /// Non-fatal findings worth an operator's attention (printed by `check-config` and at start).
    pub warnings: Vec<String>,
}

/// Listener settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Scheme + authority users see, without a trailing slash (`https://bi.example.com`).
    pub public_origin: String,
    pub public_https: bool,
    pub admin_listen: Option<SocketAddr>,
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
    pub drain_timeout: Duration,
}

/// PEM files for the HTTPS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Gateway session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub store: StoreKind,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
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

/// Which identity provider logs users in.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    Static {
        user_directory: String,
        user_id: String,
        attributes: Vec<(String, String)>,
    },
    TrustedHeader {
        header: http::HeaderName,
        trusted_proxies: Vec<ipnet::IpNet>,
        /// For bare user names, and the one domain accepted without `domain_map`.
        user_directory: Option<String>,
        /// `auth.trusted_header.domain_map`: full domain name → user directory.
        domain_map: Option<crate::auth::domain_map::DomainMap>,
    },
    Negotiate(NegotiateConfig),
    /// Boxed: by far the largest variant.
    Oidc(Box<OidcConfig>),
}

/// `[auth.oidc]`, checked: the gateway as an OpenID Connect relying party.
#[derive(Clone)]
pub struct OidcConfig {
    pub issuer: reqwest::Url,
    pub client_id: String,
    /// Read from `client_secret_file`.
    pub client_secret: Option<String>,
    /// How the gateway proves itself at the token endpoint.
    pub client_auth: crate::auth::oidc::client_auth::ClientAuth,
    /// Always includes `openid`.
    pub scopes: Vec<String>,
    /// Where the IdP sends the browser back (a path on the public origin).
    pub redirect_path: String,
    /// `public_url` + `redirect_path`.
    pub redirect_url: String,
    /// Where the IdP's logout sends the browser back to.
    pub post_logout_url: String,
    pub claims: crate::auth::oidc::claims::ClaimMap,
    pub ca_cert: Option<PathBuf>,
    /// Per request to the IdP (discovery, JWKS, token).
    pub timeout: Duration,
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("scopes", &self.scopes)
            .field("redirect_url", &self.redirect_url)
            .field("claims", &self.claims)
            .finish()
    }
}

/// `[auth.negotiate]`, checked: Kerberos/SPNEGO against a keytab.
#[derive(Debug, Clone)]
pub struct NegotiateConfig {
    pub keytab: PathBuf,
    /// The one principal tickets must be for; `None` accepts any `HTTP/<host>` key in the keytab
    /// whose host is the one the browser asked for (or `server.public_url`'s).
    pub service_principal: Option<String>,
    pub map: crate::auth::negotiate::mapping::PrincipalMap,
    /// How often the keytab file is checked for replacement (`None`: only on SIGHUP).
    pub keytab_poll_interval: Option<Duration>,
    /// GSSAPI replay cache (`rcache` credential store value), e.g. `file2:/var/lib/qlik-gateway/rcache`.
    pub replay_cache: Option<String>,
    /// `server.public_url`'s host: the default service principal is `HTTP/<this>`.
    pub public_host: String,
    /// The keys found in the keytab when the configuration was checked.
    pub keys: Vec<crate::auth::negotiate::keytab::KeytabEntry>,
}

/// How the gateway reaches Qlik.
#[derive(Debug, Clone)]
pub struct QlikConfig {
    /// The first node's proxy (the only one on a single-node site).
    pub proxy_url: reqwest::Url,
    /// The first node's QPS API.
    pub qps_api_url: reqwest::Url,
    /// Every proxy node with its QPS API, in configuration order.
    pub nodes: Vec<QlikNodeConfig>,
    /// How often each node's QPS API is checked; failing nodes get no new sessions.
    pub health_interval: Duration,
    pub virtual_proxy: String,
    pub mode: QlikMode,
    pub session_cookie: String,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub ca_cert: PathBuf,
    pub header_name: Option<http::HeaderName>,
    /// Engine websockets go here directly (`wss://engine:4747`) instead of through the proxy.
    pub engine_url: Option<reqwest::Url>,
    /// Path prefix on the gateway's origin under which Qlik appears (`/mashup`), never ending in `/`.
    pub mount: String,
    pub connect_timeout: Duration,
    pub qps_timeout: Duration,
    pub response_timeout: Duration,
}

impl QlikConfig {
    /// The virtual proxy's path prefix on the Qlik proxy (`/mashup`, or `` for the default proxy).
    pub fn upstream_prefix(&self) -> String {
        if self.virtual_proxy.is_empty() {
            String::new()
        } else {
            format!("/{}", self.virtual_proxy)
        }
    }
}

/// One Qlik proxy node: its proxy (where browsers' requests go) and its QPS API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QlikNodeConfig {
    pub proxy_url: reqwest::Url,
    pub qps_api_url: reqwest::Url,
}

/// `qlik.mode`: how the gateway gives Qlik the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QlikMode {
    /// `POST /qps/{vp}/session` with a session id the gateway makes.
    Session,
    /// `POST /qps/{vp}/ticket`, redeemed by the gateway itself.
    Ticket,
    /// A header-authentication virtual proxy: the user in a header on every request.
    Header(HeaderAuth),
}

/// The header of a header-authentication virtual proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderAuth {
    pub name: http::HeaderName,
    /// `None`: the static form `UserDirectory=<dir>; UserId=<id>`; else a dynamic pattern with
    /// `$ud` and `$id` (e.g. `$ud\\$id`), as configured on the virtual proxy.
    pub pattern: Option<String>,
}

impl HeaderAuth {
    /// The header value for a user; `None` when it cannot be sent (empty, control characters).
    ///
    /// Both values are percent-encoded, as the direct-engine path does: Qlik URL-decodes the
    /// header, so a raw `adm%69n` would be served as `admin` and a `;` or `=` would add fields.
    /// The pattern is substituted in one pass, so a directory containing `$id` stays literal.
    pub fn value(&self, user_directory: &str, user_id: &str) -> Option<http::HeaderValue> {
        let ok = |s: &str| !s.is_empty() && !s.chars().any(char::is_control);
        if !ok(user_directory) || !ok(user_id) {
            return None;
        }
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let (ud, id) = (enc(user_directory), enc(user_id));
        let v = match &self.pattern {
            None => format!("UserDirectory={ud}; UserId={id}"),
            // Qlik documents the pattern as `$ud\\$id`, the doubled backslash meaning one.
            Some(p) => substitute(&p.replace("\\\\", "\\"), &ud, &id),
        };
        http::HeaderValue::from_str(&v).ok()
    }
}

/// Replaces `$ud` and `$id` in one left-to-right pass over `pattern`.
fn substitute(pattern: &str, ud: &str, id: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + ud.len() + id.len());
    let mut rest = pattern;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$ud") {
            out.push_str(ud);
            rest = t;
        } else if let Some(t) = tail.strip_prefix("$id") {
            out.push_str(id);
            rest = t;
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Where the mashup comes from.
#[derive(Debug, Clone)]
pub struct MashupConfig {
    pub source: MashupSource,
    pub public_paths: Vec<String>,
}

/// `mashup.dir`, `mashup.upstream`, or neither (the built-in page).
#[derive(Debug, Clone)]
pub enum MashupSource {
    Dir(PathBuf),
    Upstream(reqwest::Url),
    Builtin,
}

/// Browser-facing security settings.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// Origins (scheme://host[:port]) besides the public one that may open websockets.
    pub allowed_origins: Vec<String>,
    pub max_websocket_message: usize,
    /// Open engine websockets one gateway session may hold; one more is refused with 429.
    pub max_websockets_per_session: usize,
}

/// Logging.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub json: bool,
    pub level: String,
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

#[cfg(test)]
mod header_auth_tests {
    use super::HeaderAuth;

    fn auth(pattern: Option<&str>) -> HeaderAuth {
        HeaderAuth {
            name: http::HeaderName::from_static("hdr-usr"),
            pattern: pattern.map(str::to_string),
        }
    }

    #[test]
    fn values_in_every_form() {
        let v = |p: Option<&str>, d: &str, u: &str| {
            auth(p).value(d, u).map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            v(None, "DEV", "alice").as_deref(),
            Some("UserDirectory=DEV; UserId=alice")
        );
        assert_eq!(
            v(Some("$ud\\\\$id"), "DEV", "alice").as_deref(),
            Some("DEV\\alice"),
            "Qlik's documented form"
        );
        assert_eq!(
            v(Some("$ud\\$id"), "DEV", "alice").as_deref(),
            Some("DEV\\alice")
        );
        assert_eq!(
            v(Some("$id"), "DEV", "alice").as_deref(),
            Some("alice"),
            "static user directory"
        );
        assert_eq!(
            v(None, "DEV", "ålice").as_deref(),
            Some("UserDirectory=DEV; UserId=%C3%A5lice"),
            "non-ASCII is percent-encoded"
        );
        assert_eq!(
            v(None, "DEV", "a;UserId=admin").as_deref(),
            Some("UserDirectory=DEV; UserId=a%3BUserId%3Dadmin"),
            "no smuggling in the static form"
        );
        assert_eq!(
            v(None, "CORP", "adm%69n").as_deref(),
            Some("UserDirectory=CORP; UserId=adm%2569n"),
            "a percent-escape in a name is not decoded into another user by Qlik"
        );
        assert_eq!(
            v(None, "CORP", " admin").as_deref(),
            Some("UserDirectory=CORP; UserId=%20admin")
        );
        assert_eq!(
            v(Some("$ud\\\\$id"), "X$idY", "bob").as_deref(),
            Some("X%24idY\\bob"),
            "one pass over the pattern: a directory containing $id is not substituted again"
        );
        assert_eq!(super::substitute("$ud/$id/$x", "D", "U"), "D/U/$x");
        assert_eq!(v(Some("$id"), "DEV", "a\nb"), None);
    }
}
