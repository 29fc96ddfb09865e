//! How the gateway authenticates to the IdP's token endpoint: a client secret (HTTP Basic or in
//! the body), a signed JWT assertion (`private_key_jwt`, RFC 7523: what Entra ID and ADFS call a
//! certificate credential), or nothing (a public client relying on PKCE).

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use rustls_pki_types::PrivateKeyDer;
use serde_json::json;

/// The configured method.
#[derive(Clone)]
pub enum ClientAuth {
    SecretBasic,
    SecretPost,
    PrivateKeyJwt(std::sync::Arc<AssertionSigner>),
    None,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::SecretBasic => "client_secret_basic",
            Self::SecretPost => "client_secret_post",
            Self::PrivateKeyJwt(_) => "private_key_jwt",
            Self::None => "none",
        })
    }
}

enum Key {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// Signs client assertions with the configured private key.
pub struct AssertionSigner {
    key: Key,
    kid: Option<String>,
    /// SHA-1 and SHA-256 thumbprints of the certificate, which Entra ID and ADFS use to find the
    /// registered credential (`x5t`, `x5t#S256`).
    x5t: Option<(String, String)>,
}

impl AssertionSigner {
    /// Loads an RSA (PKCS#1 or PKCS#8) or P-256 (PKCS#8) key, and optionally its certificate.
    pub fn load(key: &Path, cert: Option<&Path>, kid: Option<String>) -> Result<Self, String> {
        let der = crate::net::tls::load_key(key).map_err(|e| e.to_string())?;
        let bad = |what: &str| format!("{}: {what}", key.display());
        let key = match &der {
            PrivateKeyDer::Pkcs1(k) => Key::Rsa(
                RsaKeyPair::from_der(k.secret_pkcs1_der())
                    .map_err(|e| bad(&format!("not a usable RSA key ({e})")))?,
            ),
            PrivateKeyDer::Pkcs8(k) => {
                let bytes = k.secret_pkcs8_der();
                match RsaKeyPair::from_pkcs8(bytes) {
                    Ok(r) => Key::Rsa(r),
                    Err(_) => Key::Ec(
                        EcdsaKeyPair::from_pkcs8(
                            &ECDSA_P256_SHA256_FIXED_SIGNING,
                            bytes,
                            &SystemRandom::new(),
                        )
                        .map_err(|_| bad("neither an RSA key nor a P-256 EC key"))?,
                    ),
                }
            }
            _ => {
                return Err(bad(
                    "an EC key in SEC1 form; convert it: openssl pkcs8 -topk8 -nocrypt -in key.pem -out key-pkcs8.pem",
                ))
            }
        };
        let x5t = match cert {
            Some(c) => {
                let certs = crate::net::tls::load_certs(c).map_err(|e| e.to_string())?;
                let first = certs
                    .first()
                    .ok_or_else(|| format!("{}: no certificate", c.display()))?;
                let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, first);
                let sha256 = ring::digest::digest(&ring::digest::SHA256, first);
                Some((B64.encode(sha1), B64.encode(sha256)))
            }
            None => None,
        };
        Ok(Self { key, kid, x5t })
    }

    /// A fresh assertion for `client_id` at `audience` (the token endpoint), valid for a minute.
    pub fn assertion(&self, client_id: &str, audience: &str) -> Result<String, String> {
        let alg = match self.key {
            Key::Rsa(_) => "RS256",
            Key::Ec(_) => "ES256",
        };
        let mut header = json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = &self.kid {
            header["kid"] = json!(kid);
        }
        if let Some((s1, s256)) = &self.x5t {
            header["x5t"] = json!(s1);
            header["x5t#S256"] = json!(s256);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": crate::session::id::SessionId::generate().as_cookie_value(),
            "iat": now,
            "nbf": now,
            "exp": now + 60,
        });
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let sig = match &self.key {
            Key::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .map_err(|_| "RSA signing failed".to_string())?;
                sig
            }
            Key::Ec(k) => k
                .sign(&rng, input.as_bytes())
                .map_err(|_| "ECDSA signing failed".to_string())?
                .as_ref()
                .to_vec(),
        };
        Ok(format!("{input}.{}", B64.encode(sig)))
    }
}
