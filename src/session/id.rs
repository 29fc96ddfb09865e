//! Session ids: 256 random bits, base64url, compared in constant time by the store's hashing.

use std::fmt;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// An opaque gateway session id, as carried by the browser's cookie. A credential: Debug redacts it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId {
    id: String,
    /// [`Self::storage_key`], computed once: every request needs it, some several times.
    key: String,
}

impl SessionId {
    fn new(id: String) -> Self {
        let mut hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(Sha256::digest(id.as_bytes()), &mut hex);
        // Hex digits are ASCII: never the empty fallback.
        let key = std::str::from_utf8(&hex).unwrap_or_default().to_owned();
        Self { id, key }
    }

    /// A fresh id from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Accepts a cookie value only if it has the shape of an id we issue, so junk never reaches a store.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == 43
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self::new(s.to_string()))
    }

    /// The value for the cookie.
    pub fn as_cookie_value(&self) -> &str {
        &self.id
    }

    /// A stable, non-secret key for storage and logs (SHA-256 of the id, hex, first 16 chars for logs).
    pub fn storage_key(&self) -> &str {
        &self.key
    }

    /// A short non-secret tag that lets operators correlate log lines of one session.
    pub fn log_tag(&self) -> String {
        self.key[..12].to_string()
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.log_tag())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_parse_back() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_eq!(SessionId::parse(a.as_cookie_value()), Some(a.clone()));
        assert!(SessionId::parse("short").is_none());
        assert!(SessionId::parse(&"=".repeat(43)).is_none());
        assert!(!format!("{a:?}").contains(a.as_cookie_value()));
    }
}
