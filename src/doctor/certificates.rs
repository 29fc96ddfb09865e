//! The certificate files: the client pair belongs together, the CA parses, and none has expired
//! or is about to.

use std::path::Path;

use super::report::{Check, Report};
use crate::config::Config;
use crate::net::tls;

/// Certificates expiring within this many days are a warning.
const EXPIRY_WARN_DAYS: i64 = 30;

/// Where the QMC exports the certificates the gateway needs.
pub(super) const EXPORT_QMC: &str = "Certificates → Export certificates: the machine name the gateway connects to, \"Include secret key\", format \"Platform independent PEM-format\"; copy client.pem, client_key.pem and root.pem";

/// Checks the certificate files; `false` when Qlik cannot be reached with them at all.
pub(super) fn check(cfg: &Config, r: &mut Report) -> bool {
    let pair = pair(cfg, r);
    let ca = ca(cfg, r);
    let dates = expiry(cfg, r);
    pair && ca && dates
}

fn pair(cfg: &Config, r: &mut Report) -> bool {
    let q = &cfg.qlik;
    let pair = (|| -> Result<(), String> {
        let chain = tls::load_certs(&q.client_cert).map_err(|e| e.to_string())?;
        let key = tls::load_key(&q.client_key).map_err(|e| e.to_string())?;
        let signing = tls::provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("{}: {e}", q.client_key.display()))?;
        rustls::sign::CertifiedKey::new(chain, signing)
            .keys_match()
            .map_err(|e| format!("{e}"))
    })();
    match pair {
        Ok(()) => {
            r.push(Check::ok(format!(
                "client certificate {} and key {} belong together",
                q.client_cert.display(),
                q.client_key.display()
            )));
            true
        }
        Err(e) => {
            r.push(
                Check::fail(
                    "client certificate and key (qlik.client_cert, qlik.client_key)",
                    format!("{e}; the key is not this certificate's, or a file is not PEM"),
                )
                .qmc(EXPORT_QMC)
                .gw("point qlik.client_cert at client.pem and qlik.client_key at client_key.pem of the same export"),
            );
            false
        }
    }
}

fn ca(cfg: &Config, r: &mut Report) -> bool {
    let q = &cfg.qlik;
    match tls::root_store(&q.ca_cert, false) {
        Ok(_) => {
            r.push(Check::ok(format!(
                "CA certificate {} parses",
                q.ca_cert.display()
            )));
            true
        }
        Err(e) => {
            r.push(
                Check::fail("CA certificate (qlik.ca_cert)", e.to_string())
                    .qmc(EXPORT_QMC)
                    .gw("point qlik.ca_cert at root.pem of the export"),
            );
            false
        }
    }
}

/// The validity of the client certificate, the CA's (up to 8 in the file) and the listener's;
/// `false` when a certificate for Qlik has expired.
fn expiry(cfg: &Config, r: &mut Report) -> bool {
    let q = &cfg.qlik;
    let mut usable = true;
    let mut files: Vec<(&str, &Path)> = vec![
        ("qlik.client_cert", &q.client_cert),
        ("qlik.ca_cert", &q.ca_cert),
    ];
    if let Some(t) = &cfg.server.tls {
        files.push(("server.tls.cert", &t.cert));
    }
    let now = chrono::Utc::now().timestamp();
    for (key, path) in files {
        let Ok(certs) = tls::load_certs(path) else {
            continue;
        };
        for der in certs.iter().take(if key == "qlik.ca_cert" { 8 } else { 1 }) {
            let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
                r.push(Check::fail(
                    format!("{key} {}", path.display()),
                    "a certificate in the file is not valid X.509",
                ));
                continue;
            };
            let not_after = cert.validity().not_after.timestamp();
            let expired = not_after < now;
            r.push(validity(key, path, &cert, now));
            usable &= !expired || key == "server.tls.cert";
        }
    }
    usable
}

/// The check of one certificate's validity period at `now`.
fn validity(
    key: &str,
    path: &Path,
    cert: &x509_parser::certificate::X509Certificate<'_>,
    now: i64,
) -> Check {
    let subject = cert.subject().to_string();
    let not_after = cert.validity().not_after.timestamp();
    let not_before = cert.validity().not_before.timestamp();
    let date = fmt_date(not_after);
    let days = (not_after - now) / 86_400;
    let what = format!("{key} \"{subject}\"");
    let c = if not_after < now {
        Check::fail(
            format!("{what} expired on {date}"),
            "an expired certificate is refused in every TLS handshake",
        )
    } else if not_before > now {
        Check::fail(
            format!("{what} is not valid before {}", fmt_date(not_before)),
            "the certificate is not valid yet: this host's clock, or the issuer's, is wrong",
        )
    } else if days < EXPIRY_WARN_DAYS {
        Check::warn(
            format!("{what} expires in {days} days ({date})"),
            format!("the certificate expires within {EXPIRY_WARN_DAYS} days; then every call to Qlik fails"),
        )
    } else {
        return Check::ok(format!("{what} valid until {date}"));
    };
    let c = if key == "server.tls.cert" {
        c
    } else {
        c.qmc(format!(
            "{EXPORT_QMC} (after renewing the certificates of the site if they expire)"
        ))
    };
    c.gw(format!("replace the file {}", path.display()))
}

fn fmt_date(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| ts.to_string())
}
