//! `static`: every login is the one configured user. For development and demos only.

use async_trait::async_trait;

use super::{AuthError, Identity, IdentityProvider, LoginOutcome, LoginRequest};

/// Logs everyone in as the configured user.
pub(crate) struct StaticUser {
    identity: Identity,
}

impl StaticUser {
    /// A provider that always answers `identity`.
    pub(crate) fn new(identity: Identity) -> Self {
        Self { identity }
    }
}

#[async_trait]
impl IdentityProvider for StaticUser {
    fn name(&self) -> &'static str {
        "static"
    }

    async fn login(&self, _req: &LoginRequest<'_>) -> Result<LoginOutcome, AuthError> {
        Ok(LoginOutcome::Authenticated {
            identity: self.identity.clone(),
            headers: http::HeaderMap::new(),
            return_to: None,
            id_token: None,
        })
    }
}
