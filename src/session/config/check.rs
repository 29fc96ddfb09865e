//! Checks a [`RawSession`] and resolves it into a [`SessionConfig`].

use super::raw::RawSession;
use super::{SessionConfig, StoreKind};
use crate::config_checks::{is_token_char, ConfigError};

/// Checks `[session]`; `public_https` (is `server.public_url` https?) picks the default cookie
/// name and whether a `__Host-` prefix is expected.
pub fn validate(
    raw: RawSession,
    public_https: bool,
    warnings: &mut Vec<String>,
) -> Result<SessionConfig, ConfigError> {
    let store = store(&raw, warnings)?;
    if raw.idle_timeout.is_zero() || raw.absolute_timeout.is_zero() {
        return Err(ConfigError::key(
            "session.idle_timeout",
            "timeouts must be greater than zero",
        ));
    }
    if raw.max_sessions_per_user == 0 {
        return Err(ConfigError::key(
            "session.max_sessions_per_user",
            "must be at least 1 (0 would refuse every login)",
        ));
    }
    if raw.absolute_timeout < raw.idle_timeout {
        warnings.push("session.absolute_timeout is shorter than session.idle_timeout: sessions end at the absolute timeout".into());
    }
    let cookie_name = cookie_name(raw.cookie_name, public_https, warnings)?;
    Ok(SessionConfig {
        store,
        idle_timeout: raw.idle_timeout,
        absolute_timeout: raw.absolute_timeout,
        sweep_interval: raw.sweep_interval,
        cookie_name,
        max_sessions_per_user: raw.max_sessions_per_user,
    })
}

/// `session.store`, with the Redis settings when it is `"redis"`.
fn store(raw: &RawSession, warnings: &mut Vec<String>) -> Result<StoreKind, ConfigError> {
    match raw.store.as_str() {
        "memory" => {
            if raw.redis_url.is_some()
                || !raw.redis_sentinels.is_empty()
                || raw.encryption_key_file.is_some()
                || raw.redis_password_file.is_some()
                || !raw.old_encryption_key_files.is_empty()
            {
                warnings.push(
                    "session.redis_url / encryption_key_file are set but session.store is \"memory\": they are ignored".into(),
                );
            }
            Ok(StoreKind::Memory)
        }
        "redis" => Ok(StoreKind::Redis(super::redis::validate(raw, warnings)?)),
        other => Err(ConfigError::key(
            "session.store",
            format!("unknown store {other:?}; expected \"memory\" or \"redis\""),
        )),
    }
}

/// `session.cookie_name`, by default `__Host-qlik-gateway` on https and `qlik-gateway` on http.
fn cookie_name(
    configured: Option<String>,
    public_https: bool,
    warnings: &mut Vec<String>,
) -> Result<String, ConfigError> {
    match configured {
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
            Ok(name)
        }
        None if public_https => Ok("__Host-qlik-gateway".into()),
        None => Ok("qlik-gateway".into()),
    }
}
