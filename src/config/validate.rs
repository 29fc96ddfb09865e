//! Checks a [`RawConfig`] and resolves it into a [`Config`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawConfig;
use super::*;

/// Validates every key, reading the files the gateway will need so that a bad path fails here and
/// not at the first user's login.
pub fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();

    let public_url = parse_url("server.public_url", &raw.server.public_url)?;
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

    let tls = match raw.server.tls {
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
    if raw.server.max_header_bytes < 64 * 1024 {
        return Err(ConfigError::key(
            "server.max_header_bytes",
            "must be at least 65536: Kerberos tickets with a large PAC need it",
        ));
    }
    // hyper refuses request targets above 64 KiB itself, with a bare 414.
    if raw.server.max_request_line_bytes < 1024
        || raw.server.max_request_line_bytes > 65536
        || raw.server.max_request_line_bytes > raw.server.max_header_bytes
    {
        return Err(ConfigError::key(
            "server.max_request_line_bytes",
            "must be between 1024 and 65536, and not above server.max_header_bytes",
        ));
    }
    if raw.server.max_headers < 16 || raw.server.max_headers > 1000 {
        return Err(ConfigError::key(
            "server.max_headers",
            "must be between 16 and 1000 (browsers send about 20 headers)",
        ));
    }
    if raw.server.header_read_timeout.is_zero() || raw.server.body_timeout.is_zero() {
        return Err(ConfigError::key(
            if raw.server.body_timeout.is_zero() {
                "server.body_timeout"
            } else {
                "server.header_read_timeout"
            },
            "must be greater than zero: a client that stops sending would hold its connection for ever",
        ));
    }
    if raw.server.max_gateway_body_bytes > 1024 * 1024 {
        return Err(ConfigError::key(
            "server.max_gateway_body_bytes",
            "must be at most 1048576: gateway endpoints take small forms only",
        ));
    }
    // hyper's response read buffer holds at most 400 KiB by default.
    if raw.server.max_upstream_header_bytes < 8192
        || raw.server.max_upstream_header_bytes > 256 * 1024
    {
        return Err(ConfigError::key(
            "server.max_upstream_header_bytes",
            "must be between 8192 and 262144",
        ));
    }
    if let Some(admin) = raw.server.admin_listen {
        check_admin_listen(admin, raw.server.listen)?;
    }

    let store = match raw.session.store.as_str() {
        "memory" => {
            let s = &raw.session;
            if s.redis_url.is_some()
                || !s.redis_sentinels.is_empty()
                || s.encryption_key_file.is_some()
                || s.redis_password_file.is_some()
                || !s.old_encryption_key_files.is_empty()
            {
                warnings.push(
                    "session.redis_url / encryption_key_file are set but session.store is \"memory\": they are ignored".into(),
                );
            }
            StoreKind::Memory
        }
        "redis" => StoreKind::Redis(validate_redis(&raw.session, &mut warnings)?),
        other => {
            return Err(ConfigError::key(
                "session.store",
                format!("unknown store {other:?}; expected \"memory\" or \"redis\""),
            ))
        }
    };
    if raw.session.idle_timeout.is_zero() || raw.session.absolute_timeout.is_zero() {
        return Err(ConfigError::key(
            "session.idle_timeout",
            "timeouts must be greater than zero",
        ));
    }
    if raw.session.max_sessions_per_user == 0 {
        return Err(ConfigError::key(
            "session.max_sessions_per_user",
            "must be at least 1 (0 would refuse every login)",
        ));
    }
    if raw.security.max_websockets_per_session == 0 {
        return Err(ConfigError::key(
            "security.max_websockets_per_session",
            "must be at least 1 (0 would refuse every websocket)",
        ));
    }
    if raw.session.absolute_timeout < raw.session.idle_timeout {
        warnings.push("session.absolute_timeout is shorter than session.idle_timeout: sessions end at the absolute timeout".into());
    }
    let cookie_name = match raw.session.cookie_name {
        Some(name) => {
            if name.is_empty() || !name.bytes().all(is_token_char) {
                return Err(ConfigError::key(
                    "session.cookie_name",
                    "must be a non-empty cookie token (letters, digits, - _ .)",
                ));
            }
            if public_https && !name.starts_with("__Host-") {
                warnings.push(
                    "session.cookie_name has no __Host- prefix although public_url is https".into(),
                );
            }
            name
        }
        None if public_https => "__Host-qlik-gateway".into(),
        None => "qlik-gateway".into(),
    };

    let auth = validate_auth(raw.auth, &public_url)?;
    let qlik = validate_qlik(raw.qlik, &mut warnings)?;
    if let AuthConfig::Oidc(o) = &auth {
        let p = o.redirect_path.trim_end_matches('/');
        let taken = [
            "/_gateway/login",
            "/_gateway/logout",
            "/_gateway/logged-out",
            "/_gateway/me",
            "/_gateway/healthz",
            "/_gateway/readyz",
            "/_gateway/metrics",
        ];
        let under_mount = p == qlik.mount || p.starts_with(&format!("{}/", qlik.mount));
        if p.is_empty() || taken.contains(&p) || under_mount {
            return Err(ConfigError::key(
                "auth.oidc.redirect_path",
                format!("{:?} is taken by the gateway or by Qlik under {}; use the default /_gateway/callback or another free path", o.redirect_path, qlik.mount),
            ));
        }
    }

    let source = match (raw.mashup.dir, raw.mashup.upstream) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::key(
                "mashup.upstream",
                "set either mashup.dir or mashup.upstream, not both",
            ))
        }
        (Some(dir), None) => {
            if !dir.is_dir() {
                return Err(ConfigError::key(
                    "mashup.dir",
                    format!("{} is not a readable directory", dir.display()),
                ));
            }
            if !dir.join("index.html").is_file() {
                return Err(ConfigError::key(
                    "mashup.dir",
                    format!("{} has no index.html", dir.display()),
                ));
            }
            MashupSource::Dir(dir)
        }
        (None, Some(up)) => {
            let url = parse_url("mashup.upstream", &up)?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::key(
                    "mashup.upstream",
                    "must be an http:// or https:// URL",
                ));
            }
            MashupSource::Upstream(url)
        }
        (None, None) => MashupSource::Builtin,
    };
    for p in &raw.mashup.public_paths {
        if !p.starts_with('/') || p.starts_with("/_gateway") {
            return Err(ConfigError::key(
                "mashup.public_paths",
                format!("{p:?} must start with / and must not be under /_gateway"),
            ));
        }
        if p.starts_with(&format!("{}/", qlik.mount)) || p == &qlik.mount {
            return Err(ConfigError::key(
                "mashup.public_paths",
                format!("{p:?} is under qlik.mount: Qlik paths always need a session"),
            ));
        }
    }

    let mut allowed_origins = Vec::new();
    for o in raw.security.allowed_origins {
        let url = parse_url("security.allowed_origins", &o)?;
        allowed_origins.push(origin_of(&url));
    }

    let json = match raw.log.format.as_str() {
        "json" => true,
        "text" => false,
        other => {
            return Err(ConfigError::key(
                "log.format",
                format!("unknown format {other:?}; expected \"text\" or \"json\""),
            ))
        }
    };

    Ok(Config {
        server: ServerConfig {
            listen: raw.server.listen,
            public_origin,
            public_https,
            admin_listen: raw.server.admin_listen,
            tls,
            header_read_timeout: raw.server.header_read_timeout,
            max_header_bytes: raw.server.max_header_bytes,
            max_headers: raw.server.max_headers,
            max_request_line_bytes: raw.server.max_request_line_bytes,
            body_timeout: raw.server.body_timeout,
            max_gateway_body_bytes: raw.server.max_gateway_body_bytes,
            max_upstream_header_bytes: raw.server.max_upstream_header_bytes,
            drain_timeout: raw.server.drain_timeout,
        },
        session: SessionConfig {
            store,
            idle_timeout: raw.session.idle_timeout,
            absolute_timeout: raw.session.absolute_timeout,
            sweep_interval: raw.session.sweep_interval,
            cookie_name,
            max_sessions_per_user: raw.session.max_sessions_per_user,
        },
        auth,
        qlik,
        mashup: MashupConfig {
            source,
            public_paths: raw.mashup.public_paths,
        },
        security: SecurityConfig {
            allowed_origins,
            max_websocket_message: raw.security.max_websocket_message,
            max_websockets_per_session: raw.security.max_websockets_per_session,
        },
        log: LogConfig {
            json,
            level: raw.log.level,
        },
        warnings,
    })
}

/// `session.store = "redis"`: the URL parses, the password and key files are readable and the
/// keys are the right size. Nothing connects here (check-config must work without Redis).
fn validate_redis(
    s: &super::raw::RawSession,
    warnings: &mut Vec<String>,
) -> Result<RedisStoreConfig, ConfigError> {
    use crate::session::crypto::read_key_file;
    use redis::IntoConnectionInfo;

    if (!s.redis_sentinels.is_empty() || s.redis_sentinel_master.is_some()) && s.redis_url.is_some()
    {
        return Err(ConfigError::key(
            "session.redis_sentinels",
            "session.redis_url is set too; use one: redis_url for a single server, redis_sentinels + redis_sentinel_master for a Sentinel-managed one",
        ));
    }
    let (url, sentinel, tls, target, url_password, local) = if !s.redis_sentinels.is_empty()
        || s.redis_sentinel_master.is_some()
    {
        let sentinel = validate_sentinels(s)?;
        let local = sentinel.nodes.iter().all(|n| {
            reqwest::Url::parse(n)
                .is_ok_and(|u| matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")))
        });
        let target = sentinel_target(&sentinel);
        let tls = sentinel.tls;
        (
            String::new(),
            Some(Box::new(sentinel)),
            tls,
            target,
            false,
            local,
        )
    } else {
        let url = s.redis_url.clone().ok_or_else(|| {
            ConfigError::key(
                "session.redis_url",
                "missing: session.store = \"redis\" needs the server's URL, e.g. \"redis://127.0.0.1:6379/0\" or \"rediss://redis.example.com:6380/0\" for TLS",
            )
        })?;
        // Never echo the URL itself back: it may hold a password.
        let parsed = reqwest::Url::parse(&url).map_err(|e| {
            ConfigError::key(
                "session.redis_url",
                format!(
                    "not a valid URL ({e}); expected redis://host:port/db or rediss://host:port/db"
                ),
            )
        })?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err(ConfigError::key(
                "session.redis_url",
                format!(
                    "scheme {:?} is not supported; use redis:// (plain) or rediss:// (TLS)",
                    parsed.scheme()
                ),
            ));
        }
        if parsed.host_str().unwrap_or("").is_empty() {
            return Err(ConfigError::key(
                "session.redis_url",
                "has no host; expected redis://host:port/db",
            ));
        }
        if parsed.fragment().is_some() {
            return Err(ConfigError::key(
                "session.redis_url",
                "fragments such as #insecure are not supported: certificate checks stay on (use session.redis_ca_cert for a private CA)",
            ));
        }
        let info = url.as_str().into_connection_info().map_err(|e| {
            ConfigError::key(
                "session.redis_url",
                format!(
                    "not a usable Redis URL ({}); expected redis://[user:password@]host[:port][/db]",
                    e.category()
                ),
            )
        })?;
        let tls = parsed.scheme() == "rediss";
        let target = format!(
            "{}://{}/{}",
            parsed.scheme(),
            info.addr(),
            info.redis_settings().db()
        );
        let url_password = info.redis_settings().password().is_some();
        let local = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        (url, None, tls, target, url_password, local)
    };
    let password = match &s.redis_password_file {
        Some(p) => {
            if url_password {
                return Err(ConfigError::key(
                    "session.redis_password_file",
                    "session.redis_url has a password too; keep it in one place (the file)",
                ));
            }
            let text = std::fs::read_to_string(p).map_err(|e| {
                ConfigError::key(
                    "session.redis_password_file",
                    format!("cannot read {}: {e}", p.display()),
                )
            })?;
            let pw = text.trim_end_matches(['\r', '\n']).to_string();
            if pw.is_empty() {
                return Err(ConfigError::key(
                    "session.redis_password_file",
                    format!("{} is empty", p.display()),
                ));
            }
            Some(pw)
        }
        None => {
            if url_password {
                warnings.push("session.redis_url holds a password: prefer session.redis_password_file, since config files and environments are often readable by more people than a secret file".into());
            }
            None
        }
    };
    if let Some(ca) = &s.redis_ca_cert {
        readable("session.redis_ca_cert", ca)?;
        if !tls {
            warnings.push(
                "session.redis_ca_cert is set but session.redis_url (or redis_sentinels) is not rediss://: it is ignored"
                    .into(),
            );
        }
    }
    if !tls && !local {
        warnings.push(format!(
            "session.redis_url is plain redis:// to {target}: the password (if any) and the (encrypted) sessions travel unprotected; use rediss:// across a network"
        ));
    }
    let key_prefix = s
        .redis_key_prefix
        .clone()
        .unwrap_or_else(|| "qlik-gateway:".into());
    if key_prefix.is_empty() || key_prefix.contains(['*', '?', '[', ']', '\\']) {
        return Err(ConfigError::key(
            "session.redis_key_prefix",
            "must be non-empty and without glob characters (* ? [ ] \\), e.g. \"qlik-gateway:\" or \"qlik-gateway:prod:\"",
        ));
    }
    let timeout = s.redis_timeout.unwrap_or(Duration::from_secs(2));
    if timeout.is_zero() {
        return Err(ConfigError::key(
            "session.redis_timeout",
            "must be greater than zero, e.g. \"2s\"",
        ));
    }
    let key_file = s.encryption_key_file.as_ref().ok_or_else(|| {
        ConfigError::key(
            "session.encryption_key_file",
            "missing: session.store = \"redis\" keeps sessions encrypted at rest; create a key with `openssl rand -base64 32 > /etc/qlik-gateway/session.key` (the same file on every replica)",
        )
    })?;
    let encryption_key =
        read_key_file(key_file).map_err(|m| ConfigError::key("session.encryption_key_file", m))?;
    key_file_permissions(key_file, "session.encryption_key_file", warnings);
    let mut old_encryption_keys = Vec::new();
    for p in &s.old_encryption_key_files {
        let k = read_key_file(p)
            .map_err(|m| ConfigError::key("session.old_encryption_key_files", m))?;
        key_file_permissions(p, "session.old_encryption_key_files", warnings);
        old_encryption_keys.push(k);
    }
    Ok(RedisStoreConfig {
        url,
        sentinel,
        password,
        ca_cert: s.redis_ca_cert.clone(),
        key_prefix,
        timeout,
        encryption_key,
        old_encryption_keys,
        target,
    })
}

/// `session.redis_sentinels` + `redis_sentinel_master`: every address parses (to
/// `redis://host:port`, port 26379 by default), without credentials or a path, all with TLS or
/// all without. Nothing connects.
fn validate_sentinels(s: &super::raw::RawSession) -> Result<SentinelConfig, ConfigError> {
    const KEY: &str = "session.redis_sentinels";
    let master = s
        .redis_sentinel_master
        .clone()
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| {
            ConfigError::key(
                "session.redis_sentinel_master",
                "missing: with session.redis_sentinels, name the master the sentinels monitor (the <name> of `sentinel monitor <name> host port quorum`), e.g. \"mymaster\"",
            )
        })?;
    if master.contains(char::is_whitespace) {
        return Err(ConfigError::key(
            "session.redis_sentinel_master",
            "must not contain whitespace",
        ));
    }
    if s.redis_sentinels.is_empty() {
        return Err(ConfigError::key(
            KEY,
            "missing: with session.redis_sentinel_master, list the sentinels, e.g. [\"redis+sentinel://10.0.0.1:26379\", \"redis+sentinel://10.0.0.2:26379\"]",
        ));
    }
    let mut nodes = Vec::new();
    let mut tls_seen = None;
    for (i, raw) in s.redis_sentinels.iter().enumerate() {
        let bad = |why: String| ConfigError::key(KEY, format!("entry {}: {why}", i + 1));
        let parsed = reqwest::Url::parse(raw).map_err(|e| {
            bad(format!(
                "not a valid URL ({e}); expected redis+sentinel://host:26379"
            ))
        })?;
        let tls = match parsed.scheme() {
            "redis+sentinel" | "redis" => false,
            "rediss+sentinel" | "rediss" => true,
            other => {
                return Err(bad(format!(
                    "scheme {other:?} is not supported; use redis+sentinel:// (or rediss+sentinel:// for TLS)"
                )))
            }
        };
        if *tls_seen.get_or_insert(tls) != tls {
            return Err(bad(
                "mixes TLS and plain sentinels; use rediss+sentinel:// for all or none".into(),
            ));
        }
        let host = parsed.host_str().unwrap_or("");
        if host.is_empty() {
            return Err(bad(
                "has no host; expected redis+sentinel://host:26379".into()
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(
                "credentials for the sentinels are not supported; the master's password goes in session.redis_password_file".into(),
            ));
        }
        if !matches!(parsed.path(), "" | "/")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(bad(
                "only host and port are allowed (the master's name goes in session.redis_sentinel_master)".into(),
            ));
        }
        let port = parsed.port().unwrap_or(26379);
        nodes.push(format!(
            "{}://{host}:{port}",
            if tls { "rediss" } else { "redis" }
        ));
    }
    Ok(SentinelConfig {
        nodes,
        master,
        tls: tls_seen.unwrap_or(false),
    })
}

/// `redis+sentinel://h1:26379,h2:26379/mymaster`: what messages name.
fn sentinel_target(s: &SentinelConfig) -> String {
    let hosts: Vec<&str> = s
        .nodes
        .iter()
        .map(|n| n.split_once("://").map_or(n.as_str(), |(_, h)| h))
        .collect();
    format!(
        "{}+sentinel://{}/{}",
        if s.tls { "rediss" } else { "redis" },
        hosts.join(","),
        s.master
    )
}

/// A key file that other local users can read is worth a warning (not an error: containers often
/// mount secrets world-readable inside a private filesystem).
fn key_file_permissions(p: &Path, key: &str, warnings: &mut Vec<String>) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(p) {
            if m.permissions().mode() & 0o004 != 0 {
                warnings.push(format!(
                    "{key}: {} is readable by every local user; chmod 600 (or 640 with the gateway's group)",
                    p.display()
                ));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (p, key, warnings);
}

fn validate_auth(
    raw: super::raw::RawAuth,
    public_url: &reqwest::Url,
) -> Result<AuthConfig, ConfigError> {
    match raw.provider.as_str() {
        "static" => {
            let s = raw.static_user.ok_or_else(|| {
                ConfigError::key(
                    "auth.static",
                    "missing: provider \"static\" needs [auth.static] with user_directory and user_id",
                )
            })?;
            check_qlik_name("auth.static.user_directory", &s.user_directory)?;
            check_qlik_name("auth.static.user_id", &s.user_id)?;
            let attributes = s
                .attributes
                .into_iter()
                .flat_map(|m| m.into_iter())
                .collect();
            Ok(AuthConfig::Static {
                user_directory: s.user_directory,
                user_id: s.user_id,
                attributes,
            })
        }
        "trusted_header" => {
            let t = raw.trusted_header.ok_or_else(|| {
                ConfigError::key(
                    "auth.trusted_header",
                    "missing: provider \"trusted_header\" needs [auth.trusted_header] with header and trusted_proxies",
                )
            })?;
            let header = http::HeaderName::from_bytes(t.header.as_bytes()).map_err(|_| {
                ConfigError::key("auth.trusted_header.header", "not a valid HTTP header name")
            })?;
            if t.trusted_proxies.is_empty() {
                return Err(ConfigError::key(
                    "auth.trusted_header.trusted_proxies",
                    "must list at least one CIDR (e.g. \"10.0.0.5/32\"): the header is only believed from these peers",
                ));
            }
            let mut trusted = Vec::new();
            for c in &t.trusted_proxies {
                let net = c
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError::key(
                            "auth.trusted_header.trusted_proxies",
                            format!("{c:?} is not a CIDR like \"127.0.0.1/32\""),
                        )
                    })?;
                trusted.push(net);
            }
            if let Some(d) = &t.user_directory {
                check_qlik_name("auth.trusted_header.user_directory", d)?;
            }
            let domain_map = t
                .domain_map
                .map(|m| domain_map("auth.trusted_header.domain_map", m))
                .transpose()?;
            if t.user_directory.is_none() && domain_map.is_none() {
                return Err(ConfigError::key(
                    "auth.trusted_header.user_directory",
                    "missing: set user_directory (the directory of bare names and the one domain accepted, e.g. \"CORP\"), domain_map (full domain name to directory, e.g. { \"CORP.EXAMPLE.COM\" = \"CORP\" }), or both; without them no user could log in",
                ));
            }
            Ok(AuthConfig::TrustedHeader {
                header,
                trusted_proxies: trusted,
                user_directory: t.user_directory,
                domain_map,
            })
        }
        "negotiate" => {
            let n = raw.negotiate.ok_or_else(|| {
                ConfigError::key(
                    "auth.negotiate",
                    "missing: provider \"negotiate\" needs [auth.negotiate] with at least keytab",
                )
            })?;
            super::negotiate::validate(n, public_url).map(AuthConfig::Negotiate)
        }
        "oidc" => {
            let o = raw.oidc.ok_or_else(|| {
                ConfigError::key(
                    "auth.oidc",
                    "missing: provider \"oidc\" needs [auth.oidc] with issuer and client_id",
                )
            })?;
            super::oidc::validate(o, public_url).map(|o| AuthConfig::Oidc(Box::new(o)))
        }
        other => Err(ConfigError::key(
            "auth.provider",
            format!("unknown provider {other:?}; expected \"negotiate\", \"oidc\", \"trusted_header\" or \"static\""),
        )),
    }
}

fn validate_qlik(
    raw: super::raw::RawQlik,
    warnings: &mut Vec<String>,
) -> Result<QlikConfig, ConfigError> {
    let proxies = raw.proxy_url.clone().into_vec();
    let qpses = raw.qps_api_url.clone().into_vec();
    if proxies.is_empty() {
        return Err(ConfigError::key(
            "qlik.proxy_url",
            "missing: the Qlik proxy's URL (or a list of the proxy nodes' URLs)",
        ));
    }
    if proxies.len() != qpses.len() {
        return Err(ConfigError::key(
            "qlik.qps_api_url",
            format!(
                "lists {} QPS API URLs for {} proxy nodes; give one per qlik.proxy_url, in the same order (each node's sessions live in its own proxy service)",
                qpses.len(),
                proxies.len()
            ),
        ));
    }
    let mut nodes = Vec::new();
    for (p, q) in proxies.iter().zip(&qpses) {
        let proxy_url = parse_url("qlik.proxy_url", p)?;
        if !matches!(proxy_url.scheme(), "http" | "https") {
            return Err(ConfigError::key(
                "qlik.proxy_url",
                "must be an https:// (or http://) URL",
            ));
        }
        if proxy_url.path() != "/" {
            return Err(ConfigError::key(
                "qlik.proxy_url",
                "must not contain a path; put the virtual proxy prefix in qlik.virtual_proxy",
            ));
        }
        let qps_api_url = parse_url("qlik.qps_api_url", q)?;
        if qps_api_url.scheme() != "https" {
            return Err(ConfigError::key(
                "qlik.qps_api_url",
                "must be https:// (the QPS API on port 4243 requires mutual TLS)",
            ));
        }
        nodes.push(crate::config::QlikNodeConfig {
            proxy_url,
            qps_api_url,
        });
    }
    let proxy_url = nodes[0].proxy_url.clone();
    let qps_api_url = nodes[0].qps_api_url.clone();
    let vp = raw.virtual_proxy.trim_matches('/').to_string();
    if !vp
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._~".contains(&b))
    {
        return Err(ConfigError::key(
            "qlik.virtual_proxy",
            "a virtual proxy prefix is lowercase a-z, 0-9 and - . _ ~ only",
        ));
    }
    let header_name =
        match &raw.header_name {
            Some(h) => Some(http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                ConfigError::key("qlik.header_name", "not a valid HTTP header name")
            })?),
            None => None,
        };
    let mode = match raw.mode.as_str() {
        "session" => QlikMode::Session,
        "ticket" => QlikMode::Ticket,
        "header" => {
            let name = header_name.clone().ok_or_else(|| {
                ConfigError::key(
                    "qlik.header_name",
                    "missing: qlik.mode = \"header\" needs the virtual proxy's authentication header name (e.g. \"hdr-usr\")",
                )
            })?;
            let lower = name.as_str();
            if lower.starts_with("x-qlik-") {
                return Err(ConfigError::key(
                    "qlik.header_name",
                    "Qlik reserves X-Qlik-* headers; the virtual proxy's header has another name (e.g. hdr-usr)",
                ));
            }
            if let Some(p) = &raw.header_pattern {
                if !(p.contains("$id") && p.is_ascii()) {
                    return Err(ConfigError::key(
                        "qlik.header_pattern",
                        "must be US-ASCII and contain $id (and $ud for a dynamic user directory), like the virtual proxy's pattern (e.g. \"$ud\\\\$id\")",
                    ));
                }
            }
            if proxy_url.scheme() != "https" {
                warnings.push(format!(
                    "SECURITY: qlik.mode = \"header\" over plain http ({proxy_url}): the user header travels unencrypted and anyone who can reach the Qlik proxy can claim to be any user. Use an https:// qlik.proxy_url and restrict the header virtual proxy to the gateway's address."
                ));
            }
            QlikMode::Header(crate::config::HeaderAuth {
                name,
                pattern: raw.header_pattern.clone(),
            })
        }
        other => {
            return Err(ConfigError::key(
                "qlik.mode",
                format!("unknown mode {other:?}; expected \"session\", \"ticket\" or \"header\""),
            ))
        }
    };
    let session_cookie = raw.session_cookie.unwrap_or_else(|| {
        if vp.is_empty() {
            "X-Qlik-Session".into()
        } else {
            format!("X-Qlik-Session-{vp}")
        }
    });
    if session_cookie.is_empty() || !session_cookie.bytes().all(is_token_char) {
        return Err(ConfigError::key(
            "qlik.session_cookie",
            "must be the virtual proxy's session cookie header name, e.g. X-Qlik-Session-mashup",
        ));
    }
    if proxy_url.scheme() == "http" && !session_cookie.ends_with("-HTTP") {
        warnings.push(format!(
            "qlik.proxy_url is plain http: Qlik (since Feb 2019) names the session cookie {session_cookie}-HTTP over http; set qlik.session_cookie accordingly"
        ));
    }
    let client_cert = required_file("qlik.client_cert", raw.client_cert)?;
    let client_key = required_file("qlik.client_key", raw.client_key)?;
    let ca_cert = required_file("qlik.ca_cert", raw.ca_cert)?;
    let engine_url = match &raw.engine_url {
        Some(u) => {
            let url = parse_url("qlik.engine_url", u)?;
            if url.scheme() != "wss" || url.path() != "/" {
                return Err(ConfigError::key(
                    "qlik.engine_url",
                    "must be the engine's wss:// address without a path, e.g. \"wss://qlik-engine.example.com:4747\"",
                ));
            }
            Some(url)
        }
        None => None,
    };
    let mount = match raw.mount {
        Some(m) => {
            let m = m.trim_end_matches('/').to_string();
            if !m.starts_with('/') || m.len() < 2 || m.contains("//") || m.starts_with("/_gateway")
            {
                return Err(ConfigError::key(
                    "qlik.mount",
                    "must be a path like \"/qlik\" (not \"/\", not under /_gateway)",
                ));
            }
            m
        }
        None if vp.is_empty() => "/qlik".into(),
        None => format!("/{vp}"),
    };
    Ok(QlikConfig {
        proxy_url,
        qps_api_url,
        nodes,
        health_interval: raw
            .health_interval
            .unwrap_or(std::time::Duration::from_secs(10)),
        virtual_proxy: vp,
        mode,
        session_cookie,
        client_cert,
        client_key,
        ca_cert,
        header_name,
        engine_url,
        mount,
        connect_timeout: raw.connect_timeout,
        qps_timeout: raw.qps_timeout,
        response_timeout: raw.response_timeout,
    })
}

fn parse_url(key: &str, s: &str) -> Result<reqwest::Url, ConfigError> {
    reqwest::Url::parse(s)
        .map_err(|e| ConfigError::key(key, format!("{s:?} is not a valid URL: {e}")))
}

/// `scheme://host[:port]` with default ports omitted, as browsers send it in `Origin`.
pub(crate) fn origin_of(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

fn required_file(key: &str, p: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    let p = p.ok_or_else(|| {
        ConfigError::key(
            key,
            "missing: the QPS API needs the certificates exported from the QMC (client.pem, client_key.pem, root.pem)",
        )
    })?;
    readable(key, &p)?;
    Ok(p)
}

fn readable(key: &str, p: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(p)
        .map(drop)
        .map_err(|e| ConfigError::key(key, format!("cannot read {}: {e}", p.display())))
}

/// Qlik rejects user directories and ids that are empty, whitespace-only or contain a backslash.
pub(super) fn check_qlik_name(key: &str, v: &str) -> Result<(), ConfigError> {
    if v.trim().is_empty() || v.contains('\\') || v.trim() != v {
        return Err(ConfigError::key(
            key,
            "must be non-empty, without surrounding spaces and without a backslash (Qlik rejects those)",
        ));
    }
    Ok(())
}

/// A `{ "FULL.DOMAIN" = "DIRECTORY" }` table (`realm_map`, `domain_map`) under `key`.
pub(super) fn domain_map(
    key: &str,
    raw: std::collections::BTreeMap<String, String>,
) -> Result<crate::auth::domain_map::DomainMap, ConfigError> {
    for (domain, dir) in &raw {
        check_qlik_name(&format!("{key}.{domain}"), dir)?;
    }
    crate::auth::domain_map::DomainMap::new(raw).map_err(|(domain, why)| {
        let at = if domain.is_empty() {
            key.to_string()
        } else {
            format!("{key}.{domain}")
        };
        ConfigError::key(&at, why)
    })
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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
    fn missing_qlik_certificates_name_where_they_come_from() {
        let dir = tempfile::tempdir().unwrap();
        let (key, msg) = refused_key(load_str(&toml(dir.path(), "", "", "")));
        assert!(key.starts_with("qlik."), "{key}");
        assert!(msg.contains("QMC"), "{msg}");
    }

    #[test]
    fn a_mashup_is_a_directory_or_an_upstream_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let rest = "[mashup]\ndir = \"/srv/mashup\"\nupstream = \"http://127.0.0.1:5173\"";
        let (key, msg) = refused_key(load_str(&toml(dir.path(), "", certs(), rest)));
        assert_eq!(key, "mashup.upstream");
        assert!(msg.contains("not both"), "{msg}");
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
