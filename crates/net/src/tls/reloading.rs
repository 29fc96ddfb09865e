//! The HTTPS certificate, replaced without a restart: the files are checked every few seconds (and
//! on SIGHUP), and a pair that loads cleanly serves every new handshake. Open connections keep the
//! certificate they were made with; a broken replacement is reported and the old pair stays.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsFileError;

/// The log target this module had inside the gateway crate, kept so that operators' filters
/// (`RUST_LOG=qlik_gateway=…`) and documented log lines still match.
const LOG_TARGET: &str = "qlik_gateway::net::tls::reloading";

/// How often the certificate files are looked at.
const POLL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<(u64, Option<SystemTime>)>);

fn stamp(paths: &[&Path]) -> Stamp {
    Stamp(
        paths
            .iter()
            .map(|p| match std::fs::metadata(p) {
                Ok(m) => (m.len(), m.modified().ok()),
                Err(_) => (0, None),
            })
            .collect(),
    )
}

/// Serves the current certificate pair and swaps in a new one when the files change.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Stamp)>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsFileError> {
    let chain = super::load_certs(cert)?;
    let key_der = super::load_key(key)?;
    let signer = super::provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsFileError::Rejected {
            path: key.to_path_buf(),
            reason: e.to_string(),
        })?;
    let ck = CertifiedKey::new(chain, signer);
    // A key that does not belong to the certificate must not replace a working pair.
    ck.keys_match().map_err(|e| TlsFileError::Rejected {
        path: key.to_path_buf(),
        reason: format!("the key does not belong to {}: {e}", cert.display()),
    })?;
    Ok(Arc::new(ck))
}

impl ReloadingCert {
    /// Loads the pair (start-up fails on a bad one) and starts watching the files.
    pub fn new(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsFileError> {
        let s = stamp(&[cert, key]);
        let ck = load(cert, key)?;
        let me = Arc::new(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new((ck, s)),
        });
        crate::reload::watch(&me, Some(POLL));
        Ok(me)
    }

    /// Loads the files again if they changed (or `force`); keeps the old pair on failure.
    pub fn reload(&self, force: bool) -> Result<bool, TlsFileError> {
        let now = stamp(&[&self.cert, &self.key]);
        let unchanged = match self.current.read() {
            Ok(g) => g.1 == now,
            Err(p) => p.into_inner().1 == now,
        };
        if unchanged && !force {
            return Ok(false);
        }
        let ck = load(&self.cert, &self.key)?;
        match self.current.write() {
            Ok(mut g) => *g = (ck, now),
            Err(p) => *p.into_inner() = (ck, now),
        }
        tracing::info!(target: LOG_TARGET, cert = %self.cert.display(), "TLS certificate reloaded; new connections use it");
        Ok(true)
    }
}

impl crate::reload::Reload for ReloadingCert {
    type Error = TlsFileError;

    fn reload(&self, force: bool) -> Result<bool, TlsFileError> {
        ReloadingCert::reload(self, force)
    }

    fn failed(&self) -> &'static str {
        "the TLS certificate files changed but cannot be used; still serving the previous certificate"
    }

    fn file(&self) -> &Path {
        &self.cert
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match self.current.read() {
            Ok(g) => g.0.clone(),
            Err(p) => p.into_inner().0.clone(),
        })
    }
}
