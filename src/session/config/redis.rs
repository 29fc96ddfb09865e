//! `session.store = "redis"`: the URL (or the sentinels) parse, the password and key files are
//! readable and the keys are the right size. Nothing connects here (check-config must work
//! without Redis).

use std::path::Path;
use std::time::Duration;

use ::redis::IntoConnectionInfo;

use super::raw::RawSession;
use super::{RedisStoreConfig, SentinelConfig};
use crate::config_checks::{readable, ConfigError};
use crate::session::crypto::{read_key_file, KeyMaterial};

/// Where the store connects, as far as the other checks need it.
struct Server {
    /// `session.redis_url` as written; empty with `sentinel`.
    url: String,
    sentinel: Option<Box<SentinelConfig>>,
    tls: bool,
    /// What messages name (no credentials).
    target: String,
    /// The URL carries a password.
    url_password: bool,
    /// Every address is the local host.
    local: bool,
}

/// Checks the Redis keys of `[session]`.
pub(super) fn validate(
    s: &RawSession,
    warnings: &mut Vec<String>,
) -> Result<RedisStoreConfig, ConfigError> {
    if (!s.redis_sentinels.is_empty() || s.redis_sentinel_master.is_some()) && s.redis_url.is_some()
    {
        return Err(ConfigError::key(
            "session.redis_sentinels",
            "session.redis_url is set too; use one: redis_url for a single server, redis_sentinels + redis_sentinel_master for a Sentinel-managed one",
        ));
    }
    let server = if !s.redis_sentinels.is_empty() || s.redis_sentinel_master.is_some() {
        sentinel_server(s)?
    } else {
        single_server(s)?
    };
    let password = password(s, server.url_password, warnings)?;
    if let Some(ca) = &s.redis_ca_cert {
        readable("session.redis_ca_cert", ca)?;
        if !server.tls {
            warnings.push(
                "session.redis_ca_cert is set but session.redis_url (or redis_sentinels) is not rediss://: it is ignored"
                    .into(),
            );
        }
    }
    if !server.tls && !server.local {
        warnings.push(format!(
            "session.redis_url is plain redis:// to {}: the password (if any) and the (encrypted) sessions travel unprotected; use rediss:// across a network",
            server.target
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
    let (encryption_key, old_encryption_keys) = encryption_keys(s, warnings)?;
    Ok(RedisStoreConfig {
        url: server.url,
        sentinel: server.sentinel,
        password,
        ca_cert: s.redis_ca_cert.clone(),
        key_prefix,
        timeout,
        encryption_key,
        old_encryption_keys,
        target: server.target,
    })
}

/// `session.redis_url`: one server.
fn single_server(s: &RawSession) -> Result<Server, ConfigError> {
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
    let target = format!(
        "{}://{}/{}",
        parsed.scheme(),
        info.addr(),
        info.redis_settings().db()
    );
    Ok(Server {
        tls: parsed.scheme() == "rediss",
        target,
        url_password: info.redis_settings().password().is_some(),
        local: matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")),
        url,
        sentinel: None,
    })
}

/// `session.redis_sentinels` + `redis_sentinel_master`: a Sentinel-managed server.
fn sentinel_server(s: &RawSession) -> Result<Server, ConfigError> {
    let sentinel = validate_sentinels(s)?;
    let local = sentinel.nodes.iter().all(|n| {
        reqwest::Url::parse(n)
            .is_ok_and(|u| matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")))
    });
    Ok(Server {
        url: String::new(),
        tls: sentinel.tls,
        target: sentinel_target(&sentinel),
        url_password: false,
        local,
        sentinel: Some(Box::new(sentinel)),
    })
}

/// `session.redis_password_file`, trailing newline removed; a password in the URL as well is
/// refused, one only in the URL is worth a warning.
fn password(
    s: &RawSession,
    url_password: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, ConfigError> {
    let Some(p) = &s.redis_password_file else {
        if url_password {
            warnings.push("session.redis_url holds a password: prefer session.redis_password_file, since config files and environments are often readable by more people than a secret file".into());
        }
        return Ok(None);
    };
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
    Ok(Some(pw))
}

/// `session.encryption_key_file` and `old_encryption_key_files`, read and size-checked.
fn encryption_keys(
    s: &RawSession,
    warnings: &mut Vec<String>,
) -> Result<(KeyMaterial, Vec<KeyMaterial>), ConfigError> {
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
    Ok((encryption_key, old_encryption_keys))
}
/// `session.redis_sentinels` + `redis_sentinel_master`: every address parses (to
/// `redis://host:port`, port 26379 by default), without credentials or a path, all with TLS or
/// all without. Nothing connects.
fn validate_sentinels(s: &RawSession) -> Result<SentinelConfig, ConfigError> {
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
