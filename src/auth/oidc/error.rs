//! Why an OIDC login failed, one kind per cause, with status, code, words for the user and the
//! operator's fix.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OidcFailure {
    /// Discovery, JWKS or the token endpoint did not answer.
    Unreachable,
    /// The IdP said `error=access_denied` (the user cancelled, or is not assigned the app).
    AccessDenied,
    /// Another `error=` from the IdP.
    IdpError,
    /// No login in progress for this browser, or `state` does not match it.
    State,
    /// The ID token's nonce is not the one this login sent.
    Nonce,
    /// The token endpoint refused the code (expired, replayed, wrong client secret).
    TokenRejected,
    /// The ID token failed validation (signature, issuer, audience, azp, expiry, issue time).
    IdToken,
    /// The ID token lacks the claims that make a Qlik user.
    Claims,
}

/// A failed OIDC login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcError {
    pub kind: OidcFailure,
    pub detail: String,
}

impl OidcError {
    pub fn new(kind: OidcFailure, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self.kind {
            OidcFailure::Unreachable => S::SERVICE_UNAVAILABLE,
            OidcFailure::AccessDenied => S::FORBIDDEN,
            OidcFailure::State | OidcFailure::Nonce => S::BAD_REQUEST,
            OidcFailure::IdpError
            | OidcFailure::TokenRejected
            | OidcFailure::IdToken
            | OidcFailure::Claims => S::UNAUTHORIZED,
        }
    }

    pub fn code(&self) -> &'static str {
        match self.kind {
            OidcFailure::Unreachable => "oidc_unreachable",
            OidcFailure::AccessDenied => "oidc_access_denied",
            OidcFailure::IdpError => "oidc_idp_error",
            OidcFailure::State => "oidc_state",
            OidcFailure::Nonce => "oidc_nonce",
            OidcFailure::TokenRejected => "oidc_token_rejected",
            OidcFailure::IdToken => "oidc_id_token",
            OidcFailure::Claims => "oidc_claims",
        }
    }

    pub fn public_message(&self) -> &'static str {
        match self.kind {
            OidcFailure::Unreachable => "The sign-in service is not reachable right now. Please try again in a moment.",
            OidcFailure::AccessDenied => "The sign-in service did not grant access to this site. If you cancelled, start again; otherwise ask your administrator to assign you to the application.",
            OidcFailure::IdpError => "The sign-in service reported an error. Your administrator can find the cause in the gateway log.",
            OidcFailure::State => "This sign-in does not belong to a login started in this browser (it may have expired or been started in another tab). Please start again.",
            OidcFailure::Nonce => "This sign-in answer does not belong to the login this browser started. Please start again.",
            OidcFailure::TokenRejected | OidcFailure::IdToken => "The sign-in could not be verified. Your administrator can find the cause in the gateway log.",
            OidcFailure::Claims => "Your account does not carry the information this site needs to sign you in. Your administrator can find the cause in the gateway log.",
        }
    }

    fn fix(&self) -> &'static str {
        match self.kind {
            OidcFailure::Unreachable => "check auth.oidc.issuer, DNS, the network path and the IdP's TLS certificate (auth.oidc.ca_cert)",
            OidcFailure::AccessDenied => "the user cancelled or is not assigned to the application at the IdP",
            OidcFailure::IdpError => "see the IdP's error and error_description",
            OidcFailure::State => "the browser came back without the login cookie or with another login's state (expired after 10 minutes, another tab, a bookmarked callback URL)",
            OidcFailure::Nonce => "the ID token was issued for another login (replayed or mixed-up response)",
            OidcFailure::TokenRejected => "the token endpoint refused the code: check auth.oidc.client_id/client_secret_file and the redirect URI registered at the IdP",
            OidcFailure::IdToken => "the ID token failed the named check: compare the IdP's issuer and the client id with auth.oidc, and the clocks",
            OidcFailure::Claims => "configure the IdP to send the claim, or point auth.oidc.user_id_claim / user_directory_claim at one it sends",
        }
    }
}

impl fmt::Display for OidcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OIDC login refused ({}): {}; {}",
            self.code(),
            self.detail,
            self.fix()
        )
    }
}

impl std::error::Error for OidcError {}
