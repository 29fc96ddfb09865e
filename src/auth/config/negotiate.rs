//! Checks `[auth.negotiate]`: reads the keytab and makes sure it can serve the site, so a wrong
//! keytab fails `check-config` and start-up instead of every user's login.

use std::time::Duration;

use super::check::{check_qlik_name, domain_map};
use super::raw::RawNegotiate;
use super::NegotiateConfig;
use crate::auth::negotiate::keytab::{self, KeytabEntry};
use crate::auth::negotiate::mapping::{DirectoryRule, PrincipalMap, UserIdCase};
use crate::config_checks::ConfigError;

const DEFAULT_POLL: Duration = Duration::from_secs(10);

pub(super) fn validate(
    raw: RawNegotiate,
    public_url: &reqwest::Url,
) -> Result<NegotiateConfig, ConfigError> {
    let path = raw.keytab.ok_or_else(|| {
        ConfigError::key(
            "auth.negotiate.keytab",
            "missing: the path of the service account's keytab",
        )
    })?;
    let keys = keytab::read(&path)
        .map_err(|e| ConfigError::key("auth.negotiate.keytab", e.to_string()))?;
    let public_host = public_url
        .host_str()
        .unwrap_or_default()
        .to_ascii_lowercase();

    let service_principal = match raw.service_principal {
        Some(sp) => Some(find_configured(&sp, &keys, &path)?),
        None => {
            if !keys.iter().any(|k| is_http_key_for(k, &public_host)) {
                let ip_hint = if public_host.parse::<std::net::IpAddr>().is_ok() {
                    " Browsers never use Kerberos for an IP address: set server.public_url to the DNS name users type."
                } else {
                    ""
                };
                return Err(ConfigError::key(
                    "auth.negotiate.keytab",
                    format!(
                        "keytab {} has no key for HTTP/{public_host} (the host of server.public_url); it has keys for {}. Register the SPN (setspn -S HTTP/{public_host} <service account>) and export its key with ktpass, or set auth.negotiate.service_principal.{ip_hint}",
                        path.display(),
                        keytab::principal_list(&keys)
                    ),
                ));
            }
            None
        }
    };

    let directory = match (raw.user_directory, raw.realm_map) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::key(
                "auth.negotiate.realm_map",
                "set either user_directory (one directory for everyone) or realm_map (one per realm), not both",
            ))
        }
        (Some(d), None) => {
            check_qlik_name("auth.negotiate.user_directory", &d)?;
            DirectoryRule::Fixed(d)
        }
        (None, Some(map)) => DirectoryRule::PerRealm(domain_map("auth.negotiate.realm_map", map)?),
        (None, None) => own_realms(&keys, service_principal.as_deref(), &public_host)?,
    };
    let case = match raw.user_id_case.as_deref() {
        None | Some("lower") => UserIdCase::Lower,
        Some("upper") => UserIdCase::Upper,
        Some("preserve") => UserIdCase::Preserve,
        Some(other) => {
            return Err(ConfigError::key(
                "auth.negotiate.user_id_case",
                format!("{other:?} is not one of \"lower\", \"upper\", \"preserve\""),
            ))
        }
    };
    let keytab_poll_interval = match raw.keytab_poll_interval {
        None => Some(DEFAULT_POLL),
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
    };
    if let Some(rc) = &raw.replay_cache {
        check_replay_cache(rc)?;
    }
    if !cfg!(feature = "kerberos") {
        return Err(ConfigError::key(
            "auth.provider",
            "\"negotiate\" needs a qlik-gateway built with Kerberos support: cargo build --release --features kerberos (with libkrb5-dev and libclang-dev installed)",
        ));
    }
    Ok(NegotiateConfig {
        keytab: path,
        service_principal,
        map: PrincipalMap { directory, case },
        keytab_poll_interval,
        replay_cache: raw.replay_cache,
        public_host,
        keys,
    })
}

/// The default directory rule: the realms of the gateway's own service principal, each by its
/// full name, to its first label upper-cased (`CORP.EXAMPLE.COM` → `CORP`, as Windows shows
/// it). Principals of any other realm, even one with the same first label, are refused.
fn own_realms(
    keys: &[KeytabEntry],
    service_principal: Option<&str>,
    public_host: &str,
) -> Result<DirectoryRule, ConfigError> {
    let mut realms: Vec<String> = match service_principal {
        Some(sp) => sp
            .rsplit_once('@')
            .map(|(_, r)| r.to_string())
            .into_iter()
            .collect(),
        None => keys
            .iter()
            .filter(|k| is_http_key_for(k, public_host))
            .filter_map(|k| k.service_host_realm().map(|(_, _, r)| r.to_uppercase()))
            .collect(),
    };
    realms.sort();
    realms.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    let mut dirs = std::collections::BTreeMap::<String, String>::new();
    let mut entries = Vec::new();
    for realm in realms {
        let dir = realm.split('.').next().unwrap_or(&realm).to_uppercase();
        if let Some(other) = dirs.insert(dir.clone(), realm.clone()) {
            return Err(ConfigError::key(
                "auth.negotiate.realm_map",
                format!("the keytab's realms {other} and {realm} would both be directory {dir}; set realm_map to say which directory each realm's users get"),
            ));
        }
        entries.push((realm, dir));
    }
    let map = crate::auth::domain_map::DomainMap::new(entries).map_err(|(realm, why)| {
        ConfigError::key(
            "auth.negotiate.realm_map",
            format!("the service principal's realm {realm:?} {why}; set realm_map"),
        )
    })?;
    Ok(DirectoryRule::OwnRealms(map))
}

/// An `HTTP/<host>@…` key (service and host compared without case, as AD does).
pub(super) fn is_http_key_for(k: &KeytabEntry, host: &str) -> bool {
    k.service_host_realm()
        .is_some_and(|(s, h, _)| s.eq_ignore_ascii_case("HTTP") && h.eq_ignore_ascii_case(host))
}

/// The keytab's spelling of the configured principal (`HTTP/host` matches any realm).
fn find_configured(
    sp: &str,
    keys: &[KeytabEntry],
    path: &std::path::Path,
) -> Result<String, ConfigError> {
    let key = "auth.negotiate.service_principal";
    let (name, realm) = match sp.rsplit_once('@') {
        Some((n, r)) => (n, Some(r)),
        None => (sp, None),
    };
    if !name.contains('/') {
        return Err(ConfigError::key(
            key,
            format!("{sp:?} is not a service principal like \"HTTP/bi.example.com@EXAMPLE.COM\""),
        ));
    }
    keys.iter()
        .find(|k| match k.principal.rsplit_once('@') {
            Some((n, r)) => {
                n.eq_ignore_ascii_case(name)
                    && realm.is_none_or(|want| want.eq_ignore_ascii_case(r))
            }
            None => false,
        })
        .map(|k| k.principal.clone())
        .ok_or_else(|| {
            ConfigError::key(
                key,
                format!(
                    "keytab {} has no key for {sp}; it has keys for {}",
                    path.display(),
                    keytab::principal_list(keys)
                ),
            )
        })
}

/// A replay cache the Kerberos library will fail on fails here, not at every login.
fn check_replay_cache(spec: &str) -> Result<(), ConfigError> {
    let key = "auth.negotiate.replay_cache";
    let (kind, residual) = spec.split_once(':').unwrap_or((spec, ""));
    match kind {
        "none" | "dfl" => Ok(()),
        "file2" | "file" => {
            if residual.is_empty() {
                return Err(ConfigError::key(key, format!("{spec:?} names no file; use e.g. \"file2:/var/lib/qlik-gateway/rcache\"")));
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(residual)
                .map(|_| ())
                .map_err(|e| {
                    ConfigError::key(
                        key,
                        format!("cannot open {residual} for writing: {e}; the replay cache must be in a directory the gateway's user can write"),
                    )
                })
        }
        other => Err(ConfigError::key(
            key,
            format!("unknown replay cache type {other:?}; use \"file2:/path\", \"dfl:\" or \"none\" (no replay detection)"),
        )),
    }
}
