//! Qlik's cross-site request forgery key: 16 characters `[0-9a-zA-Z]`, sent identically as the
//! `xrfkey` query parameter and the `X-Qlik-Xrfkey` header, fresh for every call.

use rand::distr::{Alphanumeric, SampleString};

/// A new random xrfkey.
pub fn generate() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 16)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sixteen_alphanumerics_and_fresh() {
        let a = super::generate();
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, super::generate());
    }
}
