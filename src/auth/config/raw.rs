//! `[auth]` as written: serde structs that mirror the TOML keys one to one.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// auth.provider: which provider authenticates users ("static", "trusted_header", "negotiate" or "oidc").
    pub provider: String,
    /// `[auth.static]`: the one user of provider = "static".
    #[serde(rename = "static")]
    pub static_user: Option<RawStaticUser>,
    /// `[auth.trusted_header]`: the settings of provider = "trusted_header".
    pub trusted_header: Option<RawTrustedHeader>,
    /// `[auth.negotiate]`: the settings of provider = "negotiate".
    pub negotiate: Option<RawNegotiate>,
    /// `[auth.oidc]`: the settings of provider = "oidc".
    pub oidc: Option<RawOidc>,
}

/// `[auth.static]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaticUser {
    /// auth.static.user_directory: the Qlik user directory of the static user.
    pub user_directory: String,
    /// auth.static.user_id: the Qlik user id of the static user.
    pub user_id: String,
    /// auth.static.attributes: Qlik session attributes of the static user, one single-entry table each.
    #[serde(default)]
    pub attributes: Vec<std::collections::BTreeMap<String, String>>,
}

/// `[auth.trusted_header]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrustedHeader {
    /// auth.trusted_header.header: the request header naming the authenticated user.
    pub header: String,
    /// auth.trusted_header.trusted_proxies: the peers (CIDR) whose header is believed.
    pub trusted_proxies: Vec<String>,
    /// auth.trusted_header.user_directory: the directory for bare user names (and the one domain accepted without domain_map).
    pub user_directory: Option<String>,
    /// auth.trusted_header.domain_map: full domain name -> Qlik user directory, for DOMAIN\user and user@domain values.
    pub domain_map: Option<std::collections::BTreeMap<String, String>>,
}

/// `[auth.negotiate]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNegotiate {
    /// auth.negotiate.keytab: the service account's keytab file.
    pub keytab: Option<PathBuf>,
    /// auth.negotiate.service_principal: the one principal tickets must be for (default: `HTTP/<host>`).
    pub service_principal: Option<String>,
    /// auth.negotiate.user_directory: the Qlik user directory for every user.
    pub user_directory: Option<String>,
    /// auth.negotiate.realm_map: Kerberos realm -> Qlik user directory.
    pub realm_map: Option<std::collections::BTreeMap<String, String>>,
    /// auth.negotiate.user_id_case: spelling of the Qlik user id ("lower", "upper" or "preserve").
    pub user_id_case: Option<String>,
    /// auth.negotiate.keytab_poll_interval: how often the keytab is checked for replacement ("0s": only on SIGHUP).
    #[serde(default, with = "humantime_serde")]
    pub keytab_poll_interval: Option<Duration>,
    /// auth.negotiate.replay_cache: the GSSAPI replay cache (default: MIT's).
    pub replay_cache: Option<String>,
}

/// `[auth.oidc]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    /// auth.oidc.issuer: the IdP's issuer, as in its discovery document.
    pub issuer: Option<String>,
    /// auth.oidc.client_id: the client id registered at the IdP.
    pub client_id: Option<String>,
    /// auth.oidc.client_secret_file: the file holding the client secret.
    pub client_secret_file: Option<PathBuf>,
    /// auth.oidc.client_auth: how the gateway authenticates at the token endpoint.
    pub client_auth: Option<String>,
    /// auth.oidc.private_key_file: the private key (PEM) signing private_key_jwt assertions.
    pub private_key_file: Option<PathBuf>,
    /// auth.oidc.private_key_id: the "kid" header of the signed assertion.
    pub private_key_id: Option<String>,
    /// auth.oidc.client_certificate_file: the certificate (PEM) of that key, for the x5t headers.
    pub client_certificate_file: Option<PathBuf>,
    /// auth.oidc.scopes: the scopes requested ("openid" is always added).
    pub scopes: Option<Vec<String>>,
    /// auth.oidc.redirect_path: the path on public_url's origin the IdP sends the browser back to.
    pub redirect_path: Option<String>,
    /// auth.oidc.user_id_claim: the ID token claim holding the Qlik user id.
    pub user_id_claim: Option<String>,
    /// auth.oidc.split_user_id: split the user id claim into directory and user id.
    #[serde(default)]
    pub split_user_id: bool,
    /// auth.oidc.domain_map: with split_user_id, full domain name -> Qlik user directory.
    pub domain_map: Option<std::collections::BTreeMap<String, String>>,
    /// auth.oidc.user_directory: a fixed Qlik user directory.
    pub user_directory: Option<String>,
    /// auth.oidc.user_directory_claim: the ID token claim holding the Qlik user directory.
    pub user_directory_claim: Option<String>,
    /// auth.oidc.attributes: ID token claim -> Qlik session attribute name.
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
    /// auth.oidc.ca_cert: CA certificate(s) (PEM) trusted for the IdP, besides the system's roots.
    pub ca_cert: Option<PathBuf>,
    /// auth.oidc.timeout: time allowed for each request to the IdP.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}
