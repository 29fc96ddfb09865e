//! A throwaway PKI shaped like the certificates the QMC exports (`root.pem`, `client.pem`,
//! `client_key.pem`), plus the proxy's server certificate and an untrusted client certificate.
//! A directory that already holds all of them is reused, so that several simulated nodes
//! share one PKI (one client certificate and CA work for all, as in a real multi-node site).

use crate::SimError;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where the generated PEM files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiPaths {
    /// The CA certificate (`root.pem`).
    pub ca_cert: PathBuf,
    /// The trusted client certificate, CN "QlikClient" (`client.pem`).
    pub client_cert: PathBuf,
    /// Its PKCS#8 key (`client_key.pem`).
    pub client_key: PathBuf,
    /// The server certificate for `localhost`, 127.0.0.1 and ::1 (`server.pem`).
    pub server_cert: PathBuf,
    /// Its PKCS#8 key (`server_key.pem`).
    pub server_key: PathBuf,
    /// A client certificate signed by a different CA (`untrusted_client.pem`).
    pub untrusted_client_cert: PathBuf,
    /// Its PKCS#8 key (`untrusted_client_key.pem`).
    pub untrusted_client_key: PathBuf,
}

/// The material the listeners need in memory.
pub(crate) struct Pki {
    pub paths: PkiPaths,
    /// The certificates of `root.pem` (trusted for client certificates).
    pub ca_der: Vec<CertificateDer<'static>>,
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key: PrivateKeyDer<'static>,
}

fn ca_params(cn: &str) -> Result<CertificateParams, SimError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn leaf_params(
    cn: &str,
    sans: Vec<String>,
    eku: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, SimError> {
    let mut params = CertificateParams::new(sans)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![eku];
    Ok(params)
}

fn write(path: &Path, contents: &str) -> Result<(), SimError> {
    std::fs::write(path, contents).map_err(|e| SimError::Io(format!("{}: {e}", path.display())))
}

impl PkiPaths {
    /// The standard file names inside `dir`.
    pub fn in_dir(dir: &Path) -> PkiPaths {
        PkiPaths {
            ca_cert: dir.join("root.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client_key.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server_key.pem"),
            untrusted_client_cert: dir.join("untrusted_client.pem"),
            untrusted_client_key: dir.join("untrusted_client_key.pem"),
        }
    }

    fn all(&self) -> [&PathBuf; 7] {
        [
            &self.ca_cert,
            &self.client_cert,
            &self.client_key,
            &self.server_cert,
            &self.server_key,
            &self.untrusted_client_cert,
            &self.untrusted_client_key,
        ]
    }
}

fn read(path: &Path) -> Result<Vec<u8>, SimError> {
    std::fs::read(path).map_err(|e| SimError::Io(format!("{}: {e}", path.display())))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, SimError> {
    let pem = read(path)?;
    let list = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SimError::Tls(format!("{}: {e}", path.display())))?;
    if list.is_empty() {
        return Err(SimError::Tls(format!(
            "{}: no certificate found",
            path.display()
        )));
    }
    Ok(list)
}

/// Loads an existing PKI (every file in `paths` must exist).
pub(crate) fn load(paths: &PkiPaths) -> Result<Pki, SimError> {
    for path in paths.all() {
        if !path.is_file() {
            return Err(SimError::Io(format!("{}: missing", path.display())));
        }
    }
    let ca_der = certs(&paths.ca_cert)?;
    let mut server_chain = certs(&paths.server_cert)?;
    for ca in &ca_der {
        if !server_chain.contains(ca) {
            server_chain.push(ca.clone());
        }
    }
    let server_key = PrivateKeyDer::from_pem_slice(&read(&paths.server_key)?)
        .map_err(|e| SimError::Tls(format!("{}: {e}", paths.server_key.display())))?;
    Ok(Pki {
        paths: paths.clone(),
        ca_der,
        server_chain,
        server_key,
    })
}

/// Reuses the PKI in `dir` when every file is there, else generates a fresh one. Serialised
/// within the process, so simulators started concurrently on one directory share one PKI.
pub(crate) fn generate_or_load(dir: &Path) -> Result<Pki, SimError> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let paths = PkiPaths::in_dir(dir);
    if paths.all().iter().all(|p| p.is_file()) {
        return load(&paths);
    }
    generate(dir)
}

/// Generates a fresh PKI into `dir` (created if missing).
fn generate(dir: &Path) -> Result<Pki, SimError> {
    std::fs::create_dir_all(dir).map_err(|e| SimError::Io(format!("{}: {e}", dir.display())))?;
    let paths = PkiPaths::in_dir(dir);

    let ca = CertifiedIssuer::self_signed(ca_params("qlik-sim CA")?, KeyPair::generate()?)?;
    write(&paths.ca_cert, &ca.pem())?;

    let server_key = KeyPair::generate()?;
    let server = leaf_params(
        "localhost",
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?
    .signed_by(&server_key, &ca)?;
    write(&paths.server_cert, &server.pem())?;
    write(&paths.server_key, &server_key.serialize_pem())?;

    let client_key = KeyPair::generate()?;
    let client = leaf_params("QlikClient", vec![], ExtendedKeyUsagePurpose::ClientAuth)?
        .signed_by(&client_key, &ca)?;
    write(&paths.client_cert, &client.pem())?;
    write(&paths.client_key, &client_key.serialize_pem())?;

    let rogue_ca = CertifiedIssuer::self_signed(ca_params("untrusted CA")?, KeyPair::generate()?)?;
    let rogue_key = KeyPair::generate()?;
    let rogue = leaf_params("QlikClient", vec![], ExtendedKeyUsagePurpose::ClientAuth)?
        .signed_by(&rogue_key, &rogue_ca)?;
    write(&paths.untrusted_client_cert, &rogue.pem())?;
    write(&paths.untrusted_client_key, &rogue_key.serialize_pem())?;

    let server_key = PrivateKeyDer::from_pem_slice(server_key.serialize_pem().as_bytes())
        .map_err(|e| SimError::Tls(format!("server key: {e}")))?;
    Ok(Pki {
        paths,
        ca_der: vec![ca.der().clone()],
        server_chain: vec![server.der().clone(), ca.der().clone()],
        server_key,
    })
}
