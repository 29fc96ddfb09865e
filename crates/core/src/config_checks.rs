//! The error every configuration check returns, and the few checks several sections share.
//!
//! A leaf: each section's owner validates its own keys with these, and `config` assembles the
//! sections, so neither needs the other's types.

use std::path::{Path, PathBuf};

/// A configuration problem, always naming the key and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The configuration file's path.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// A key is missing, unknown or has a value that cannot be used.
    #[error("{key}: {message}")]
    Key {
        /// The full key, e.g. `server.listen`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl ConfigError {
    /// A problem with `key`'s value; `message` says what is wrong and how to fix it.
    pub fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Key {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The offending key, when the problem is one key's value.
    pub fn key_name(&self) -> Option<&str> {
        match self {
            Self::Key { key, .. } => Some(key),
            Self::Read { .. } => None,
        }
    }
}

/// `s` as a URL, or an error naming `key` and the value.
pub fn parse_url(key: &str, s: &str) -> Result<reqwest::Url, ConfigError> {
    reqwest::Url::parse(s)
        .map_err(|e| ConfigError::key(key, format!("{s:?} is not a valid URL: {e}")))
}

/// The file at `p` opens for reading: a bad path fails `check-config`, not the first use.
pub fn readable(key: &str, p: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(p)
        .map(drop)
        .map_err(|e| ConfigError::key(key, format!("cannot read {}: {e}", p.display())))
}

/// A byte allowed in a cookie name (an RFC 7230 token).
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
