//! Qlik's rules for user ids, directories and attributes, applied once to every provider's
//! answer so no provider can hand Qlik a name it would read differently.
//!
//! Auth knows nothing about Qlik: the caller builds [`IdentityRules`] from config (header mode
//! splices names into a header, so it asks for the stricter set).

use async_trait::async_trait;

use super::{AuthError, Identity, IdentityProvider, LoginOutcome, LoginRequest};

/// The longest user id, directory, attribute name or value accepted, in bytes.
pub(crate) const MAX_LEN: usize = 256;

/// Which rules apply beyond the ones Qlik always has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IdentityRules {
    /// The values are spliced into a header: US-ASCII only, no `;` or `=`.
    pub header_safe: bool,
}

impl IdentityRules {
    /// The first rule `identity` breaks, as an error naming the field and the rule.
    pub(crate) fn check(&self, identity: &Identity) -> Result<(), AuthError> {
        self.value("user id", &identity.user_id, true)?;
        self.value("user directory", &identity.user_directory, true)?;
        for (name, value) in &identity.attributes {
            self.value("attribute name", name, false)?;
            // Empty attribute values are legitimate (Qlik's own samples send `{"Email":""}`).
            if !value.is_empty() {
                self.value("attribute value", value, false)?;
            }
        }
        Ok(())
    }

    fn value(&self, field: &'static str, v: &str, is_name: bool) -> Result<(), AuthError> {
        let bad = |rule: &str| {
            Err(AuthError::UnacceptableIdentity {
                field,
                rule: rule.to_string(),
            })
        };
        if v.trim().is_empty() {
            return bad("must not be empty or only spaces");
        }
        if v.len() > MAX_LEN {
            return bad(&format!("must be at most {MAX_LEN} bytes"));
        }
        if v.chars().any(char::is_control) {
            return bad("must not contain control characters");
        }
        if v != v.trim() {
            return bad("must not start or end with a space");
        }
        if is_name && v.contains('\\') {
            return bad("must not contain a backslash");
        }
        if self.header_safe {
            if !v.is_ascii() {
                return bad("must be US-ASCII (qlik.mode = \"header\")");
            }
            if v.contains(';') || v.contains('=') {
                return bad("must not contain ; or = (qlik.mode = \"header\")");
            }
        }
        Ok(())
    }
}

/// A provider whose every successful login is checked against [`IdentityRules`].
pub(crate) struct Checked<P: ?Sized> {
    rules: IdentityRules,
    inner: std::sync::Arc<P>,
}

impl<P: ?Sized> Checked<P> {
    /// Wraps `inner`; its logins and callbacks are refused when the identity breaks a rule.
    pub(crate) fn new(inner: std::sync::Arc<P>, rules: IdentityRules) -> Self {
        Self { rules, inner }
    }

    fn checked(&self, outcome: LoginOutcome) -> Result<LoginOutcome, AuthError> {
        if let LoginOutcome::Authenticated { identity, .. } = &outcome {
            self.rules.check(identity)?;
        }
        Ok(outcome)
    }
}

#[async_trait]
impl<P: IdentityProvider + ?Sized> IdentityProvider for Checked<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn login(&self, req: &LoginRequest<'_>) -> Result<LoginOutcome, AuthError> {
        let outcome = self.inner.login(req).await?;
        self.checked(outcome)
    }
    fn identity_headers(&self) -> Vec<http::HeaderName> {
        self.inner.identity_headers()
    }
    fn callback_path(&self) -> Option<&str> {
        self.inner.callback_path()
    }
    async fn callback(&self, req: &LoginRequest<'_>) -> Result<LoginOutcome, AuthError> {
        let outcome = self.inner.callback(req).await?;
        self.checked(outcome)
    }
    fn logout_url(&self, session: &crate::session::GatewaySession) -> Option<String> {
        self.inner.logout_url(session)
    }
    fn readiness(&self) -> Result<(), String> {
        self.inner.readiness()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(dir: &str, user: &str) -> Identity {
        Identity {
            user_directory: dir.into(),
            user_id: user.into(),
            attributes: Vec::new(),
        }
    }

    #[test]
    fn qlik_rules_apply_in_every_mode() {
        let r = IdentityRules::default();
        assert!(r.check(&id("CORP", "alice")).is_ok());
        assert!(r.check(&id("CORP", "ålice")).is_ok());
        for bad in [
            id("CORP", "a\nb"),
            id("CORP", " alice"),
            id("CORP", "alice "),
            id("CORP", "a\\b"),
            id("CO\\RP", "alice"),
            id("CORP", ""),
            id("CORP", &"a".repeat(MAX_LEN + 1)),
        ] {
            assert!(r.check(&bad).is_err(), "{bad:?}");
        }
        assert!(r.check(&id("CORP", &"a".repeat(MAX_LEN))).is_ok());
    }

    #[test]
    fn header_mode_refuses_separators_and_non_ascii() {
        let r = IdentityRules { header_safe: true };
        for bad in [
            id("CORP", "alice; UserDirectory=ADMIN"),
            id("CORP", "alice=x"),
            id("CORP", "ålice"),
        ] {
            let err = r.check(&bad).expect_err("refused");
            assert!(err.to_string().contains("header"), "{err}");
        }
        let mut with_attr = id("CORP", "alice");
        with_attr.attributes.push(("Group".into(), "a;b".into()));
        assert!(r.check(&with_attr).is_err());
        assert!(IdentityRules::default().check(&with_attr).is_ok());
    }
}
