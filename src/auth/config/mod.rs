//! `[auth]`: which identity provider logs users in, with its settings. [`raw`] mirrors the file;
//! [`check`], [`negotiate`] and [`oidc`] turn it into [`AuthConfig`].

mod check;
mod negotiate;
mod oidc;
pub(crate) mod raw;

use std::path::PathBuf;
use std::time::Duration;

pub(crate) use check::validate;

/// Which identity provider logs users in.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    /// `auth.provider = "static"`: everyone is this one user.
    Static {
        /// The Qlik user directory of that user.
        user_directory: String,
        /// The Qlik user id of that user.
        user_id: String,
        /// Qlik session attributes (name, value), in file order.
        attributes: Vec<(String, String)>,
    },
    /// `auth.provider = "trusted_header"`: a front proxy names the user in a header.
    TrustedHeader {
        /// The header naming the user.
        header: http::HeaderName,
        /// The peers whose header is believed; from anyone else it is refused.
        trusted_proxies: Vec<ipnet::IpNet>,
        /// For bare user names, and the one domain accepted without `domain_map`.
        user_directory: Option<String>,
        /// `auth.trusted_header.domain_map`: full domain name → user directory.
        domain_map: Option<crate::auth::domain_map::DomainMap>,
    },
    /// `auth.provider = "negotiate"`: Kerberos/SPNEGO against a keytab.
    Negotiate(NegotiateConfig),
    /// Boxed: by far the largest variant.
    Oidc(Box<OidcConfig>),
}

/// `[auth.oidc]`, checked: the gateway as an OpenID Connect relying party.
#[derive(Clone)]
pub struct OidcConfig {
    /// The IdP's issuer (`auth.oidc.issuer`): discovery starts from it and ID tokens must name it.
    pub issuer: reqwest::Url,
    /// The client id registered at the IdP.
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
    /// How ID token claims become the Qlik user id, directory and session attributes.
    pub claims: crate::auth::oidc::claims::ClaimMap,
    /// CA certificate(s) trusted for the IdP, besides the system's roots.
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
    /// The service account's keytab file.
    pub keytab: PathBuf,
    /// The one principal tickets must be for; `None` accepts any `HTTP/<host>` key in the keytab
    /// whose host is the one the browser asked for (or `server.public_url`'s).
    pub service_principal: Option<String>,
    /// How a Kerberos principal becomes the Qlik user directory and user id.
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
