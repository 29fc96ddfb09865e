//! Sessions at rest: XChaCha20-Poly1305 with a key from a file, older keys kept for decryption.
//!
//! A sealed value is `version (1) ‖ key id (4) ‖ nonce (24) ‖ ciphertext ‖ tag (16)`.
//! - The nonce is 192 random bits per value, so nothing has to be counted or coordinated between
//!   replicas, and the birthday bound is out of reach however many times sessions are rewritten.
//! - The key id is the first four bytes of `SHA-256("qlik-gateway session key" ‖ key)`: it lets
//!   a value name the key that sealed it (so rotation works whatever order the old keys are
//!   listed in) and reveals nothing about the key itself.
//! - The associated data is the header plus the caller's context (the session's storage key),
//!   so a value copied onto another session's key does not open.
//!
//! Key files hold 32 random bytes, **base64-encoded** (standard alphabet, padding optional,
//! surrounding whitespace ignored): `openssl rand -base64 32 > session.key`. Every replica needs
//! the same file.
//!
//! Rotation without logging anyone out, on a rolling deployment:
//! 1. make the new key and list it in `old_encryption_key_files` on every replica (each can now
//!    read values sealed with it, none writes with it yet);
//! 2. make it `encryption_key_file` and move the previous key to `old_encryption_key_files`
//!    (sessions are re-sealed with the new key as they are touched);
//! 3. after `absolute_timeout`, drop the previous key: no live session can still need it.
//!
//! A value that no configured key opens counts as no session (the user logs in again; the log
//! names the key id), and is left in place for the replicas that can read it.

use std::fmt;
use std::path::Path;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 1 + KEY_ID_LEN;
const TAG_LEN: usize = 16;

/// 32 bytes of key material. Debug never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial([u8; 32]);

impl KeyMaterial {
    /// Key material from raw bytes, unchecked ([`read_key_file`] refuses keys that are not random).
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's public fingerprint (see the module docs).
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        let d = Sha256::new()
            .chain_update(b"qlik-gateway session key")
            .chain_update(self.0)
            .finalize();
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&d[..KEY_ID_LEN]);
        id
    }

    /// The fingerprint as hex, for logs and operators (which key is in use).
    pub fn id_hex(&self) -> String {
        hex::encode(self.id())
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMaterial(id {}, <redacted>)", self.id_hex())
    }
}

/// Reads a key file: 32 random bytes in base64. The error says what is wrong and how to make one.
pub fn read_key_file(path: &Path) -> Result<KeyMaterial, String> {
    let raw = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_key(&raw).map_err(|why| {
        format!(
            "{}: {why}; the file must hold 32 random bytes in base64, e.g. made with `openssl rand -base64 32 > {}`",
            path.display(),
            path.display()
        )
    })
}

fn parse_key(raw: &[u8]) -> Result<KeyMaterial, String> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| "is not base64 text (it looks like raw binary)".to_string())?
        .trim();
    if text.is_empty() {
        return Err("is empty".into());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
        .map_err(|_| "is not base64".to_string())?;
    let key: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("decodes to {} bytes, not 32", bytes.len()))?;
    if key.iter().all(|&b| b == key[0]) {
        return Err("is not random (every byte is the same)".into());
    }
    Ok(KeyMaterial(key))
}

/// Why a sealed value does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Too short, or an unknown format version.
    #[error("the value is not a sealed session (too short or unknown format version)")]
    Malformed,
    /// Sealed with a key that is neither the current nor an old one; holds that key's fingerprint.
    #[error("the value was sealed with key {0}, which is neither session.encryption_key_file nor in session.old_encryption_key_files")]
    UnknownKey(String),
    /// The authentication tag does not match: tampered with, or moved from another session.
    #[error("the value does not authenticate (tampered with, or moved from another session)")]
    Forged,
}

struct Cipher {
    id: [u8; KEY_ID_LEN],
    aead: XChaCha20Poly1305,
}

/// The current key (seals and opens) and the old ones (open only).
pub struct Keyring {
    current: Cipher,
    old: Vec<Cipher>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = |id: &[u8; KEY_ID_LEN]| hex::encode(id);
        f.debug_struct("Keyring")
            .field("current", &hex(&self.current.id))
            .field(
                "old",
                &self.old.iter().map(|c| hex(&c.id)).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn cipher(k: &KeyMaterial) -> Cipher {
    Cipher {
        id: k.id(),
        aead: XChaCha20Poly1305::new(&k.0.into()),
    }
}

impl Keyring {
    /// Seals with `current`, opens with `current` or any of `old`.
    pub fn new(current: &KeyMaterial, old: &[KeyMaterial]) -> Self {
        Self {
            current: cipher(current),
            old: old.iter().filter(|k| *k != current).map(cipher).collect(),
        }
    }

    /// Encrypts `plaintext` under the current key, bound to `context`.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&self.current.id);
        let aad = aad(&out[..HEADER_LEN], context);
        let sealed = self
            .current
            .aead
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // Only fails for messages beyond ChaCha20's 256 GiB limit.
            .expect("XChaCha20-Poly1305 seals any session-sized message");
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts a value sealed by [`Keyring::seal`] with the same `context`, under the current
    /// key or an old one. Also says whether it was an old key (so the caller may re-seal).
    pub fn open(&self, context: &[u8], value: &[u8]) -> Result<(Vec<u8>, bool), OpenError> {
        if value.len() < HEADER_LEN + NONCE_LEN + TAG_LEN || value[0] != VERSION {
            return Err(OpenError::Malformed);
        }
        let (header, rest) = value.split_at(HEADER_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let id = &header[1..];
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError::Malformed)?;
        let nonce = XNonce::from(nonce);
        let aad = aad(header, context);
        let candidates = std::iter::once((&self.current, false))
            .chain(self.old.iter().map(|c| (c, true)))
            .filter(|(c, _)| c.id == id);
        let mut any = false;
        for (c, old) in candidates {
            any = true;
            if let Ok(p) = c.aead.decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            ) {
                return Ok((p, old));
            }
        }
        if any {
            Err(OpenError::Forged)
        } else {
            Err(OpenError::UnknownKey(hex::encode(id)))
        }
    }
}

fn aad(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(header.len() + context.len());
    a.extend_from_slice(header);
    a.extend_from_slice(context);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> KeyMaterial {
        let mut k = [b; 32];
        k[0] = b.wrapping_add(1);
        KeyMaterial(k)
    }

    #[test]
    fn seals_opens_and_rotates() {
        let (a, b) = (key(1), key(2));
        let ring = Keyring::new(&a, &[]);
        let v = ring.seal(b"ctx", b"hello");
        assert!(!v.windows(5).any(|w| w == b"hello"));
        assert_eq!(ring.open(b"ctx", &v).unwrap(), (b"hello".to_vec(), false));
        assert_ne!(ring.seal(b"ctx", b"hello"), v, "random nonces");
        assert_eq!(ring.open(b"other", &v), Err(OpenError::Forged));

        let rotated = Keyring::new(&b, std::slice::from_ref(&a));
        assert_eq!(rotated.open(b"ctx", &v).unwrap(), (b"hello".to_vec(), true));
        let w = rotated.seal(b"ctx", b"new");
        assert_eq!(&w[1..5], &b.id());
        assert!(matches!(
            ring.open(b"ctx", &w),
            Err(OpenError::UnknownKey(_))
        ));

        let mut t = v.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert_eq!(ring.open(b"ctx", &t), Err(OpenError::Forged));
        assert_eq!(ring.open(b"ctx", &v[..10]), Err(OpenError::Malformed));
    }

    #[test]
    fn key_files_are_base64_of_32_bytes() {
        let k = [
            7u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
            24, 25, 26, 27, 28, 29, 30, 31,
        ];
        let b64 = base64::engine::general_purpose::STANDARD.encode(k);
        assert_eq!(parse_key(format!("{b64}\n").as_bytes()).unwrap().0, k);
        assert_eq!(
            parse_key(b64.trim_end_matches('=').as_bytes()).unwrap().0,
            k
        );
        assert!(parse_key(&k).unwrap_err().contains("not base64"));
        let short = base64::engine::general_purpose::STANDARD.encode(&k[..16]);
        assert!(parse_key(short.as_bytes())
            .unwrap_err()
            .contains("16 bytes"));
        let zeros = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
        assert!(parse_key(zeros.as_bytes())
            .unwrap_err()
            .contains("not random"));
        assert!(!format!("{:?}", KeyMaterial(k)).contains("7, 1"));
    }
}
