//! Session ids: 256 random bits, base64url, compared in constant time by the store's hashing.

use std::fmt;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// An opaque gateway session id, as carried by the browser's cookie. A credential: Debug redacts it.
///
/// Both strings are fixed-size ASCII, held inline: reading the cookie of every request then
/// allocates nothing.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId {
    id: [u8; ID_LEN],
    /// [`Self::storage_key`], computed once: every request needs it, some several times.
    key: [u8; 64],
}

/// 32 random bytes in unpadded base64url.
const ID_LEN: usize = 43;

impl SessionId {
    /// `id` is ASCII of [`ID_LEN`] bytes (both callers make sure).
    fn new(id: [u8; ID_LEN]) -> Self {
        let mut key = [0u8; 64];
        // A digest is 32 bytes whatever the id, and 32 bytes are 64 hex digits: this cannot fail,
        // and a key left zeroed would be every session's key.
        let encoded = hex::encode_to_slice(Sha256::digest(id), &mut key);
        assert!(encoded.is_ok(), "a SHA-256 digest is 64 hex digits");
        Self { id, key }
    }

    /// A fresh id from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let mut id = [0u8; ID_LEN];
        // 32 bytes are always 43 characters: this cannot fail, and an id left zeroed would be
        // guessable.
        let written = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(bytes, &mut id);
        assert_eq!(
            written.ok(),
            Some(ID_LEN),
            "32 bytes are 43 base64url characters"
        );
        Self::new(id)
    }

    /// Accepts a cookie value only if it has the shape of an id we issue, so junk never reaches a store.
    pub fn parse(s: &str) -> Option<Self> {
        let id: [u8; ID_LEN] = s.as_bytes().try_into().ok()?;
        id.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            .then(|| Self::new(id))
    }

    /// The value for the cookie.
    pub fn as_cookie_value(&self) -> &str {
        ascii(&self.id)
    }

    /// A stable, non-secret key for storage and logs (SHA-256 of the id, hex, first 16 chars for logs).
    pub fn storage_key(&self) -> &str {
        ascii(&self.key)
    }

    /// A short non-secret tag that lets operators correlate log lines of one session.
    pub fn log_tag(&self) -> String {
        self.storage_key()[..12].to_string()
    }
}

/// Both fields only ever hold ASCII (base64url, hex): never the empty fallback.
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
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
        assert_eq!(a.as_cookie_value().len(), 43);
        assert_eq!(a.storage_key().len(), 64);
        assert!(a.storage_key().bytes().all(|b| b.is_ascii_hexdigit()));
        // One byte more or less, or a character outside base64url, is not an id.
        let v = a.as_cookie_value();
        assert!(SessionId::parse(&v[1..]).is_none());
        assert!(SessionId::parse(&format!("{v}A")).is_none());
        assert!(SessionId::parse(&format!("{}é", &v[2..])).is_none());
        assert!(SessionId::parse(&format!("+{}", &v[1..])).is_none());
    }
}
