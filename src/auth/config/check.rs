//! Checks a [`RawAuth`] and resolves it into an [`AuthConfig`]; Kerberos and OIDC have modules
//! of their own.

use super::raw::{RawAuth, RawStaticUser, RawTrustedHeader};
use super::AuthConfig;
use crate::auth::domain_map::DomainMap;
use crate::config_checks::ConfigError;

/// Checks `[auth]` and the section of the chosen provider; `public_url` is `server.public_url`
/// (the Kerberos service host, the OIDC redirect URL's origin).
pub(crate) fn validate(raw: RawAuth, public_url: &reqwest::Url) -> Result<AuthConfig, ConfigError> {
    match raw.provider.as_str() {
        "static" => {
            let s = raw.static_user.ok_or_else(|| {
                ConfigError::key(
                    "auth.static",
                    "missing: provider \"static\" needs [auth.static] with user_directory and user_id",
                )
            })?;
            static_user(s)
        }
        "trusted_header" => {
            let t = raw.trusted_header.ok_or_else(|| {
                ConfigError::key(
                    "auth.trusted_header",
                    "missing: provider \"trusted_header\" needs [auth.trusted_header] with header and trusted_proxies",
                )
            })?;
            trusted_header(t)
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

/// `[auth.static]`
fn static_user(s: RawStaticUser) -> Result<AuthConfig, ConfigError> {
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

/// `[auth.trusted_header]`
fn trusted_header(t: RawTrustedHeader) -> Result<AuthConfig, ConfigError> {
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
) -> Result<DomainMap, ConfigError> {
    for (domain, dir) in &raw {
        check_qlik_name(&format!("{key}.{domain}"), dir)?;
    }
    DomainMap::new(raw).map_err(|(domain, why)| {
        let at = if domain.is_empty() {
            key.to_string()
        } else {
            format!("{key}.{domain}")
        };
        ConfigError::key(&at, why)
    })
}
