//! PEM loading and rustls configurations (ring provider only: one crypto backend in the binary).

pub mod reloading;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate or key file that cannot be used, naming the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The file cannot be read.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        reason: String,
    },
    /// The file holds no PEM certificate.
    #[error("{path} holds no PEM certificate; export it as PEM (QMC: Certificates → Export, format \"Windows format\" off)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no PEM private key.
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the certificate or key (e.g. a key that does not match the certificate).
    #[error("certificate/key in {path} rejected: {reason}")]
    Rejected {
        /// The file (empty when the refusal concerns no file).
        path: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

/// The one crypto provider the gateway uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process default so libraries that build their own configs agree.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// All certificates in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsFileError::NoKey {
        path: path.to_path_buf(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| TlsFileError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Roots: the configured CA (Qlik's exported root.pem) plus the system's, since the Qlik proxy's
/// port 443 often carries a certificate from the company's CA rather than Qlik's own.
pub fn root_store(ca: &Path, with_system: bool) -> Result<rustls::RootCertStore, TlsFileError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| TlsFileError::Rejected {
            path: ca.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    if with_system {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    }
    Ok(roots)
}

/// The system's trusted roots only.
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

/// Client config presenting `cert`/`key` and trusting `roots`, with the given ALPN protocols.
pub fn client_config(
    roots: rustls::RootCertStore,
    identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, TlsFileError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFileError::Rejected {
            path: PathBuf::new(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots);
    let mut cfg = match identity {
        Some((cert, key)) => {
            let chain = load_certs(cert)?;
            let key = load_key(key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsFileError::Rejected {
                    path: cert.to_path_buf(),
                    reason: e.to_string(),
                })?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// Server config for the HTTPS listener: h2 and http/1.1 by ALPN, with the certificate pair
/// reloaded when its files change (see [`reloading`]).
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsFileError> {
    let resolver = reloading::ReloadingCert::new(cert, key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFileError::Rejected {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}
