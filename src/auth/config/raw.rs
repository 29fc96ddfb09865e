//! `[auth]` as written: serde structs that mirror the TOML keys one to one.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub provider: String,
    #[serde(rename = "static")]
    pub static_user: Option<RawStaticUser>,
    pub trusted_header: Option<RawTrustedHeader>,
    pub negotiate: Option<RawNegotiate>,
    pub oidc: Option<RawOidc>,
}

/// `[auth.static]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaticUser {
    pub user_directory: String,
    pub user_id: String,
    #[serde(default)]
    pub attributes: Vec<std::collections::BTreeMap<String, String>>,
}

/// `[auth.trusted_header]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrustedHeader {
    pub header: String,
    pub trusted_proxies: Vec<String>,
    pub user_directory: Option<String>,
    pub domain_map: Option<std::collections::BTreeMap<String, String>>,
}

/// `[auth.negotiate]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNegotiate {
    pub keytab: Option<PathBuf>,
    pub service_principal: Option<String>,
    pub user_directory: Option<String>,
    pub realm_map: Option<std::collections::BTreeMap<String, String>>,
    pub user_id_case: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub keytab_poll_interval: Option<Duration>,
    pub replay_cache: Option<String>,
}

/// `[auth.oidc]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub client_auth: Option<String>,
    pub private_key_file: Option<PathBuf>,
    pub private_key_id: Option<String>,
    pub client_certificate_file: Option<PathBuf>,
    pub scopes: Option<Vec<String>>,
    pub redirect_path: Option<String>,
    pub user_id_claim: Option<String>,
    #[serde(default)]
    pub split_user_id: bool,
    pub domain_map: Option<std::collections::BTreeMap<String, String>>,
    pub user_directory: Option<String>,
    pub user_directory_claim: Option<String>,
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
    pub ca_cert: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}
