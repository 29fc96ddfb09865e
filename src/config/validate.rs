//! Checks a [`RawConfig`] and resolves it into a [`Config`]: `[server]` and `[security]` here,
//! every other section in the module that owns it, then what spans sections.

use super::raw::{RawConfig, RawSecurity, RawServer};
use super::*;
use crate::config_checks::{parse_url, readable};

/// Validates every key, reading the files the gateway will need so that a bad path fails here and
/// not at the first user's login.
pub fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    let (server, public_url) = validate_server(raw.server, &mut warnings)?;
    let session =
        match crate::session::config::validate(raw.session, server.public_https, &mut warnings) {
            // The websocket limit was always checked between the session limits and the cookie
            // name: with both wrong, it is the one reported.
            Err(e) if e.key_name() == Some("session.cookie_name") => {
                check_websockets_per_session(&raw.security)?;
                return Err(e);
            }
            session => session?,
        };
    check_websockets_per_session(&raw.security)?;
    let auth = crate::auth::config::validate(raw.auth, &public_url)?;
    let qlik = crate::qlik::config::validate(raw.qlik, &mut warnings)?;
    if let AuthConfig::Oidc(o) = &auth {
        check_redirect_path(&o.redirect_path, &qlik.mount)?;
    }
    let mashup = crate::mashup::config::validate(raw.mashup, &qlik.mount)?;
    let security = validate_security(raw.security)?;
    let log = crate::logging::validate(raw.log)?;
    Ok(Config {
        server,
        session,
        auth,
        qlik,
        mashup,
        security,
        log,
        warnings,
    })
}

/// `[server]`, with `server.public_url` parsed (the sections that build URLs on it take it).
fn validate_server(
    raw: RawServer,
    warnings: &mut Vec<String>,
) -> Result<(ServerConfig, reqwest::Url), ConfigError> {
    let public_url = parse_url("server.public_url", &raw.public_url)?;
    if !matches!(public_url.scheme(), "http" | "https") {
        return Err(ConfigError::key(
            "server.public_url",
            "must start with http:// or https://",
        ));
    }
    if public_url.path() != "/" || public_url.query().is_some() {
        return Err(ConfigError::key(
            "server.public_url",
            "must be an origin only (scheme, host, optional port), without a path: the gateway owns the whole origin",
        ));
    }
    let public_https = public_url.scheme() == "https";
    let public_origin = origin_of(&public_url);

    let tls = match raw.tls.clone() {
        Some(t) => {
            readable("server.tls.cert", &t.cert)?;
            readable("server.tls.key", &t.key)?;
            Some(TlsFiles {
                cert: t.cert,
                key: t.key,
            })
        }
        None => None,
    };
    if public_https && tls.is_none() {
        warnings.push(
            "server.public_url is https but server.tls is not set: make sure a TLS-terminating proxy is in front"
                .into(),
        );
    }
    check_server_limits(&raw)?;
    if let Some(admin) = raw.admin_listen {
        check_admin_listen(admin, raw.listen)?;
    }
    let server = ServerConfig {
        listen: raw.listen,
        public_origin,
        public_https,
        admin_listen: raw.admin_listen,
        tls,
        header_read_timeout: raw.header_read_timeout,
        max_header_bytes: raw.max_header_bytes,
        max_headers: raw.max_headers,
        max_request_line_bytes: raw.max_request_line_bytes,
        body_timeout: raw.body_timeout,
        max_gateway_body_bytes: raw.max_gateway_body_bytes,
        max_upstream_header_bytes: raw.max_upstream_header_bytes,
        drain_timeout: raw.drain_timeout,
        threads: raw
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    Ok((server, public_url))
}

/// The request and response size and time limits of `[server]`.
fn check_server_limits(raw: &RawServer) -> Result<(), ConfigError> {
    if raw.max_header_bytes < 64 * 1024 {
        return Err(ConfigError::key(
            "server.max_header_bytes",
            "must be at least 65536: Kerberos tickets with a large PAC need it",
        ));
    }
    // hyper refuses request targets above 64 KiB itself, with a bare 414.
    if raw.max_request_line_bytes < 1024
        || raw.max_request_line_bytes > 65536
        || raw.max_request_line_bytes > raw.max_header_bytes
    {
        return Err(ConfigError::key(
            "server.max_request_line_bytes",
            "must be between 1024 and 65536, and not above server.max_header_bytes",
        ));
    }
    if raw.threads.is_some_and(|n| n == 0 || n > 1024) {
        return Err(ConfigError::key(
            "server.threads",
            "must be between 1 and 1024; leave it out for one per CPU",
        ));
    }
    if raw.max_headers < 16 || raw.max_headers > 1000 {
        return Err(ConfigError::key(
            "server.max_headers",
            "must be between 16 and 1000 (browsers send about 20 headers)",
        ));
    }
    if raw.header_read_timeout.is_zero() || raw.body_timeout.is_zero() {
        return Err(ConfigError::key(
            if raw.body_timeout.is_zero() {
                "server.body_timeout"
            } else {
                "server.header_read_timeout"
            },
            "must be greater than zero: a client that stops sending would hold its connection for ever",
        ));
    }
    if raw.max_gateway_body_bytes > 1024 * 1024 {
        return Err(ConfigError::key(
            "server.max_gateway_body_bytes",
            "must be at most 1048576: gateway endpoints take small forms only",
        ));
    }
    // hyper's response read buffer holds at most 400 KiB by default.
    if raw.max_upstream_header_bytes < 8192 || raw.max_upstream_header_bytes > 256 * 1024 {
        return Err(ConfigError::key(
            "server.max_upstream_header_bytes",
            "must be between 8192 and 262144",
        ));
    }
    Ok(())
}

fn check_websockets_per_session(raw: &RawSecurity) -> Result<(), ConfigError> {
    if raw.max_websockets_per_session == 0 {
        return Err(ConfigError::key(
            "security.max_websockets_per_session",
            "must be at least 1 (0 would refuse every websocket)",
        ));
    }
    Ok(())
}

/// `[security]` (its websocket limit is checked earlier, see [`validate`]).
fn validate_security(raw: RawSecurity) -> Result<SecurityConfig, ConfigError> {
    let mut allowed_origins = Vec::new();
    for o in raw.allowed_origins {
        let url = parse_url("security.allowed_origins", &o)?;
        allowed_origins.push(origin_of(&url));
    }
    Ok(SecurityConfig {
        allowed_origins,
        max_websocket_message: raw.max_websocket_message,
        max_websockets_per_session: raw.max_websockets_per_session,
    })
}

/// `auth.oidc.redirect_path` must be free: not a gateway endpoint and not under `qlik.mount`.
fn check_redirect_path(redirect_path: &str, mount: &str) -> Result<(), ConfigError> {
    let p = redirect_path.trim_end_matches('/');
    let taken = [
        "/_gateway/login",
        "/_gateway/logout",
        "/_gateway/logged-out",
        "/_gateway/me",
        "/_gateway/healthz",
        "/_gateway/readyz",
        "/_gateway/metrics",
    ];
    let under_mount = p == mount || p.starts_with(&format!("{mount}/"));
    if p.is_empty() || taken.contains(&p) || under_mount {
        return Err(ConfigError::key(
            "auth.oidc.redirect_path",
            format!("{redirect_path:?} is taken by the gateway or by Qlik under {mount}; use the default /_gateway/callback or another free path"),
        ));
    }
    Ok(())
}

/// `scheme://host[:port]` with default ports omitted, as browsers send it in `Origin`.
fn origin_of(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

/// `server.admin_listen` must be a port of its own: the same address as `server.listen` would
/// fail to bind, and would put the metrics back on the public origin.
fn check_admin_listen(
    admin: std::net::SocketAddr,
    listen: std::net::SocketAddr,
) -> Result<(), ConfigError> {
    let overlaps =
        admin.ip() == listen.ip() || admin.ip().is_unspecified() || listen.ip().is_unspecified();
    if admin.port() != 0 && admin.port() == listen.port() && overlaps {
        return Err(ConfigError::key(
            "server.admin_listen",
            format!("{admin} is the public listener's address (server.listen = {listen}); give the admin listener a port of its own, e.g. 127.0.0.1:9090"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_admin_listen;
    use crate::config::{load_str, ConfigError};

    /// A valid configuration: `server` lines appended to `[server]`, `qlik` to `[qlik]` (`{dir}`
    /// is the directory holding the certificate files), `rest` after everything.
    fn toml(dir: &std::path::Path, server: &str, qlik: &str, rest: &str) -> String {
        for f in ["client.pem", "client_key.pem", "root.pem"] {
            std::fs::write(dir.join(f), "not checked here").unwrap();
        }
        let d = dir.display();
        let qlik = qlik.replace("{dir}", &d.to_string());
        format!(
            r#"
[server]
listen = "127.0.0.1:8443"
public_url = "https://bi.example.com"
{server}

[auth]
provider = "static"
[auth.static]
user_directory = "DEV"
user_id = "alice"

[qlik]
proxy_url = "https://qlik.example.com"
qps_api_url = "https://qlik.example.com:4243"
virtual_proxy = "mashup"
{qlik}

{rest}
"#
        )
    }

    fn certs() -> &'static str {
        "client_cert = \"{dir}/client.pem\"\nclient_key = \"{dir}/client_key.pem\"\nca_cert = \"{dir}/root.pem\""
    }

    fn refused_key(r: Result<crate::config::Config, ConfigError>) -> (String, String) {
        match r {
            Err(e @ ConfigError::Key { .. }) => {
                (e.key_name().unwrap_or_default().to_string(), e.to_string())
            }
            Err(e) => panic!("expected a key error, got {e}"),
            Ok(_) => panic!("the configuration should have been refused"),
        }
    }

    #[test]
    fn a_minimal_configuration_gets_its_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = load_str(&toml(dir.path(), "", certs(), "")).unwrap();
        assert_eq!(cfg.server.public_origin, "https://bi.example.com");
        assert_eq!(cfg.qlik.mount, "/mashup");
        assert!(cfg.server.admin_listen.is_none());
    }

    #[test]
    fn serving_threads_default_to_the_cpus_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cfg = load_str(&toml(dir.path(), "", certs(), "")).unwrap();
        assert_eq!(cfg.server.threads, cpus);
        let with = |n: &str| {
            toml(dir.path(), "", certs(), "").replace(
                "public_url = \"https://bi.example.com\"",
                &format!("public_url = \"https://bi.example.com\"\nthreads = {n}"),
            )
        };
        assert_eq!(load_str(&with("3")).unwrap().server.threads, 3);
        for bad in ["0", "1025"] {
            let (key, msg) = refused_key(load_str(&with(bad)));
            assert_eq!(key, "server.threads", "{bad}");
            assert!(msg.contains("one per CPU"), "{msg}");
        }
    }

    #[test]
    fn public_url_must_be_an_origin() {
        let dir = tempfile::tempdir().unwrap();
        let t = toml(dir.path(), "", certs(), "").replace(
            "public_url = \"https://bi.example.com\"",
            "public_url = \"https://bi.example.com/bi\"",
        );
        let (key, msg) = refused_key(load_str(&t));
        assert_eq!(key, "server.public_url");
        assert!(msg.contains("origin only"), "{msg}");
    }

    #[test]
    fn the_admin_listener_needs_a_port_of_its_own() {
        let at = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let listen = at("127.0.0.1:8443");
        for clash in ["127.0.0.1:8443", "0.0.0.0:8443"] {
            let e = check_admin_listen(at(clash), listen).unwrap_err();
            assert_eq!(e.key_name(), Some("server.admin_listen"), "{clash}");
        }
        for fine in ["127.0.0.1:9090", "10.0.0.1:9090", "127.0.0.1:0"] {
            assert!(check_admin_listen(at(fine), listen).is_ok(), "{fine}");
        }
        assert!(check_admin_listen(at("127.0.0.1:8443"), at("0.0.0.0:8443")).is_err());
        // Through the whole configuration, too.
        let dir = tempfile::tempdir().unwrap();
        let t = toml(dir.path(), "admin_listen = \"127.0.0.1:8443\"", certs(), "");
        assert_eq!(refused_key(load_str(&t)).0, "server.admin_listen");
    }
}
