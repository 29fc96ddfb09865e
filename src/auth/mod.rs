//! Identity: who the user is, established by one of several providers behind [`IdentityProvider`].
//!
//! Nothing here knows about Qlik; providers only answer "who is this" (or ask the browser for more).

pub(crate) mod config;
pub(crate) mod domain_map;
pub(crate) mod identity_rules;
pub(crate) mod negotiate;
pub(crate) mod oidc;
pub(crate) mod static_user;
pub(crate) mod trusted_header;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use axum::response::Response;

use crate::identity::Identity;
use crate::session::crypto::KeyMaterial;
use config::AuthConfig;

/// What the login endpoint hands a provider.
pub struct LoginRequest<'a> {
    pub headers: &'a http::HeaderMap,
    pub peer: SocketAddr,
    /// The host the browser asked for (`Host` or the HTTP/2 authority), without the port.
    pub host: Option<&'a str>,
    /// Where the user goes after logging in (already checked to be a same-origin path).
    pub return_to: &'a str,
    /// The raw query string (the IdP's answer on a callback).
    pub query: Option<&'a str>,
}

/// A provider's answer to a login attempt.
pub enum LoginOutcome {
    /// The user is known; extra headers (e.g. a mutual-auth token) go on the redirect.
    Authenticated {
        identity: Identity,
        headers: http::HeaderMap,
        /// Where to go now, when the provider carried it across a redirect (OIDC).
        return_to: Option<String>,
        /// The IdP's ID token, kept for its logout (`id_token_hint`).
        id_token: Option<String>,
    },
    /// The browser must do something first (a 401 challenge, a redirect to an IdP).
    Challenge(Response),
}

/// Why a login failed, each variant a distinct answer for the user and one log line for operators.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request carries an identity header from a peer that is not allowed to set it.
    #[error("identity header {header} sent by untrusted peer {peer}; only auth.trusted_header.trusted_proxies may set it")]
    UntrustedPeer {
        header: String,
        peer: std::net::IpAddr,
    },
    /// A trusted peer forwarded the request without the identity header.
    #[error("no {header} header on a request from trusted proxy {peer}; check that the front proxy authenticates this path")]
    MissingHeader {
        header: String,
        peer: std::net::IpAddr,
    },
    /// The identity header's value cannot be a Qlik user.
    #[error("identity header {header} has an unusable value: {reason}")]
    BadHeaderValue { header: String, reason: String },
    /// A Kerberos/SPNEGO login failed.
    #[error(transparent)]
    Negotiate(negotiate::NegotiateError),
    /// A callback reached a provider that does not redirect away.
    #[error("this identity provider has no callback")]
    NoCallback,
    /// An OpenID Connect login failed.
    #[error(transparent)]
    Oidc(oidc::OidcError),
    /// The user's domain (or realm) is not one the configuration maps to a user directory.
    #[error("the user's domain {domain:?} is not accepted (accepted: {known}); add it to {key} if its users should get in")]
    UnknownDomain {
        domain: String,
        key: &'static str,
        known: String,
    },
    /// The provider named a user Qlik cannot take as is (see [`identity_rules`]).
    #[error("the {field} from the identity provider breaks Qlik's rules: it {rule}; fix the name at the identity provider or its mapping")]
    UnacceptableIdentity { field: &'static str, rule: String },
}

/// A provider that cannot start (its keytab, its identity provider's metadata).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[cfg(feature = "kerberos")]
    #[error("auth.negotiate.keytab: {0}")]
    Negotiate(#[from] negotiate::acceptor::LoadError),
    #[error("auth.provider: {0}")]
    Unavailable(&'static str),
    #[error("auth.oidc.ca_cert: {0}")]
    Oidc(#[from] crate::net::tls::TlsFileError),
}

/// One way of establishing who the user is.
#[async_trait]
pub trait IdentityProvider: Send + Sync {
    /// Short name for logs and `/_gateway/me`.
    fn name(&self) -> &'static str;
    /// Authenticates the login request, or returns the challenge the browser must answer.
    async fn login(&self, req: &LoginRequest<'_>) -> Result<LoginOutcome, AuthError>;
    /// Headers this provider trusts from the client; the proxy removes them before Qlik sees them.
    fn identity_headers(&self) -> Vec<http::HeaderName> {
        Vec::new()
    }
    /// The path the IdP sends the browser back to, for providers that redirect away.
    fn callback_path(&self) -> Option<&str> {
        None
    }
    /// Completes a login on the callback path.
    async fn callback(&self, _req: &LoginRequest<'_>) -> Result<LoginOutcome, AuthError> {
        Err(AuthError::NoCallback)
    }
    /// Where the browser goes after logout to end the session at the identity provider too.
    fn logout_url(&self, _session: &crate::session::GatewaySession) -> Option<String> {
        None
    }
    /// Whether the provider can log users in now (readyz).
    fn readiness(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Builds the configured provider; `secure` when the public origin is https (cookie flags).
/// Every identity it yields is checked against `rules` before anything else sees it.
/// `shared_keys` (current, old): the key replicas share, for login state that must survive a
/// request landing on another replica; `None` for a key of this process.
pub(crate) fn from_config(
    cfg: &AuthConfig,
    secure: bool,
    rules: identity_rules::IdentityRules,
    shared_keys: Option<(&KeyMaterial, &[KeyMaterial])>,
) -> Result<Arc<dyn IdentityProvider>, SetupError> {
    let inner = provider(cfg, secure, shared_keys)?;
    Ok(Arc::new(identity_rules::Checked::new(inner, rules)))
}

fn provider(
    cfg: &AuthConfig,
    secure: bool,
    shared_keys: Option<(&KeyMaterial, &[KeyMaterial])>,
) -> Result<Arc<dyn IdentityProvider>, SetupError> {
    Ok(match cfg {
        AuthConfig::Static {
            user_directory,
            user_id,
            attributes,
        } => Arc::new(static_user::StaticUser::new(Identity {
            user_directory: user_directory.clone(),
            user_id: user_id.clone(),
            attributes: attributes.clone(),
        })),
        AuthConfig::TrustedHeader {
            header,
            trusted_proxies,
            user_directory,
            domain_map,
        } => Arc::new(trusted_header::TrustedHeader::new(
            header.clone(),
            trusted_proxies.clone(),
            user_directory.clone(),
            domain_map.clone(),
        )),
        #[cfg(feature = "kerberos")]
        AuthConfig::Negotiate(n) => Arc::new(negotiate::Negotiate::new(n, secure)?),
        AuthConfig::Oidc(o) => oidc::Oidc::new(o, secure, shared_keys)?,
        #[cfg(not(feature = "kerberos"))]
        AuthConfig::Negotiate(_) => {
            return Err(SetupError::Unavailable(
                "\"negotiate\" needs a build with the kerberos feature",
            ))
        }
    })
}

#[cfg(test)]
mod trusted_header_proptests;
