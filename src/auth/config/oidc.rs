//! Checks `[auth.oidc]`. The IdP itself is not contacted here: it may be down while the gateway
//! starts, and the gateway then keeps trying (readyz says so).

use std::time::Duration;

use super::check::{check_qlik_name, domain_map};
use super::raw::RawOidc;
use super::OidcConfig;
use crate::auth::oidc::claims::{ClaimMap, DirectorySource};
use crate::auth::oidc::client_auth::{AssertionSigner, ClientAuth};
use crate::config_checks::ConfigError;

/// Checks `[auth.oidc]`; `public_url` is `server.public_url`, the origin of the redirect and
/// post-logout URLs.
pub(super) fn validate(raw: RawOidc, public_url: &reqwest::Url) -> Result<OidcConfig, ConfigError> {
    let issuer = issuer(raw.issuer)?;
    let client_id = raw
        .client_id
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| {
            ConfigError::key(
                "auth.oidc.client_id",
                "missing: the client (application) id registered at the IdP",
            )
        })?;
    let client_secret = match raw.client_secret_file {
        Some(path) => Some(client_secret(&path)?),
        None => None,
    };
    let client_auth = client_auth(
        raw.client_auth.as_deref(),
        client_secret.is_some(),
        raw.private_key_file.as_deref(),
        raw.client_certificate_file.as_deref(),
        raw.private_key_id,
    )?;
    let mut scopes = raw
        .scopes
        .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".into());
    }
    let redirect_path = redirect_path(raw.redirect_path)?;
    let origin = public_url.origin().ascii_serialization();
    let directory = directory(
        raw.user_directory,
        raw.user_directory_claim,
        raw.split_user_id,
    )?;
    let domain_map = match raw.domain_map {
        None => None,
        Some(_) if directory != DirectorySource::FromUserId => {
            return Err(ConfigError::key(
                "auth.oidc.domain_map",
                "maps the domain of a split user id: it needs split_user_id = true and neither user_directory nor user_directory_claim",
            ))
        }
        Some(m) => Some(domain_map("auth.oidc.domain_map", m)?),
    };
    for (claim, attr) in &raw.attributes {
        if attr.trim().is_empty() || claim.trim().is_empty() {
            return Err(ConfigError::key(
                "auth.oidc.attributes",
                "maps claim names to Qlik attribute names, e.g. { groups = \"Group\", email = \"Email\" }",
            ));
        }
    }
    if let Some(ca) = &raw.ca_cert {
        crate::net::tls::root_store(ca, false)
            .map_err(|e| ConfigError::key("auth.oidc.ca_cert", e.to_string()))?;
    }
    Ok(OidcConfig {
        issuer,
        client_id,
        client_secret,
        client_auth,
        scopes,
        redirect_url: format!("{origin}{redirect_path}"),
        redirect_path,
        post_logout_url: format!("{origin}/_gateway/logged-out"),
        claims: ClaimMap {
            user_id_claim: raw
                .user_id_claim
                .unwrap_or_else(|| "preferred_username".into()),
            split_user_id: raw.split_user_id,
            directory,
            domain_map,
            attributes: raw.attributes.into_iter().collect(),
        },
        ca_cert: raw.ca_cert,
        timeout: raw.timeout.unwrap_or(Duration::from_secs(10)),
    })
}

/// `auth.oidc.issuer`: an http(s) URL.
fn issuer(configured: Option<String>) -> Result<reqwest::Url, ConfigError> {
    let issuer_s = configured.ok_or_else(|| {
        ConfigError::key(
            "auth.oidc.issuer",
            "missing: the IdP's issuer URL (its /.well-known/openid-configuration lives under it)",
        )
    })?;
    let issuer = reqwest::Url::parse(&issuer_s).map_err(|e| {
        ConfigError::key(
            "auth.oidc.issuer",
            format!("{issuer_s:?} is not a URL: {e}"),
        )
    })?;
    if !matches!(issuer.scheme(), "https" | "http") {
        return Err(ConfigError::key(
            "auth.oidc.issuer",
            "must be an https:// URL (http:// is accepted for a test IdP on a private network)",
        ));
    }
    Ok(issuer)
}

/// The client secret from `auth.oidc.client_secret_file`, trimmed.
fn client_secret(path: &std::path::Path) -> Result<String, ConfigError> {
    let s = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::key(
            "auth.oidc.client_secret_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let s = s.trim().to_string();
    if s.is_empty() {
        return Err(ConfigError::key(
            "auth.oidc.client_secret_file",
            format!("{} is empty", path.display()),
        ));
    }
    Ok(s)
}

/// `auth.oidc.redirect_path`, by default `/_gateway/callback`.
fn redirect_path(configured: Option<String>) -> Result<String, ConfigError> {
    let redirect_path = configured.unwrap_or_else(|| "/_gateway/callback".into());
    if !redirect_path.starts_with('/')
        || redirect_path.starts_with("//")
        || redirect_path.contains('?')
    {
        return Err(ConfigError::key(
            "auth.oidc.redirect_path",
            "must be a path like /_gateway/callback",
        ));
    }
    Ok(redirect_path)
}

/// Where a user's directory comes from: fixed, a claim, or the split user id.
fn directory(
    user_directory: Option<String>,
    user_directory_claim: Option<String>,
    split_user_id: bool,
) -> Result<DirectorySource, ConfigError> {
    match (user_directory, user_directory_claim) {
        (Some(_), Some(_)) => Err(ConfigError::key(
            "auth.oidc.user_directory_claim",
            "set either user_directory (fixed) or user_directory_claim, not both",
        )),
        (Some(d), None) => {
            check_qlik_name("auth.oidc.user_directory", &d)?;
            Ok(DirectorySource::Fixed(d))
        }
        (None, Some(c)) => Ok(DirectorySource::Claim(c)),
        (None, None) if split_user_id => Ok(DirectorySource::FromUserId),
        (None, None) => Err(ConfigError::key(
            "auth.oidc.user_directory",
            "missing: set user_directory (e.g. \"CORP\"), user_directory_claim, or split_user_id = true to take it from DOMAIN\\user or user@domain",
        )),
    }
}

/// The token endpoint authentication, from `client_auth` or what the other keys imply.
fn client_auth(
    method: Option<&str>,
    has_secret: bool,
    key: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    kid: Option<String>,
) -> Result<ClientAuth, ConfigError> {
    let k = "auth.oidc.client_auth";
    let method = method.unwrap_or(match (key.is_some(), has_secret) {
        (true, _) => "private_key_jwt",
        (false, true) => "client_secret_basic",
        (false, false) => "none",
    });
    let need_secret = |m: &str| {
        if has_secret {
            Ok(())
        } else {
            Err(ConfigError::key(
                "auth.oidc.client_secret_file",
                format!("missing: client_auth = \"{m}\" needs the client secret"),
            ))
        }
    };
    match method {
        "client_secret_basic" => need_secret(method).map(|_| ClientAuth::SecretBasic),
        "client_secret_post" => need_secret(method).map(|_| ClientAuth::SecretPost),
        "private_key_jwt" => {
            let key = key.ok_or_else(|| {
                ConfigError::key(
                    "auth.oidc.private_key_file",
                    "missing: client_auth = \"private_key_jwt\" needs the private key (PEM) whose certificate or public key is registered at the IdP",
                )
            })?;
            AssertionSigner::load(key, cert, kid)
                .map(|s| ClientAuth::PrivateKeyJwt(std::sync::Arc::new(s)))
                .map_err(|e| ConfigError::key("auth.oidc.private_key_file", e))
        }
        "none" => Ok(ClientAuth::None),
        other => Err(ConfigError::key(
            k,
            format!("{other:?} is not one of \"client_secret_basic\", \"client_secret_post\", \"private_key_jwt\", \"none\""),
        )),
    }
}
