//! `qlik-gateway doctor`: checks a live deployment the way the gateway uses it and prints, for
//! every failing check, the probable cause and the setting to change (in the QMC or in the
//! gateway's configuration).
//!
//! Checks, in order: configuration warnings; certificate files (pair, CA, expiry); per Qlik node:
//! the QPS API with mutual TLS and the xrfkey, a probe user's Qlik session (created, recognised
//! by the virtual proxy under the configured session cookie name, deleted again), the engine
//! websocket upgrade (host allow list, CSRF token); the clock against Qlik's; the keytab
//! (negotiate) or the IdP's discovery document (OIDC). Qlik is reached with the gateway's own
//! clients: the nodes' QPS clients, the pooled upstream client and its connections.
// A command's output, not logging: `doctor` is a command whose output is its report.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod certificates;
mod clock;
mod engine;
mod keytab;
mod node;
mod oidc;
mod qps;
mod report;
mod session;

use std::path::Path;

use crate::config::{AuthConfig, Config};

pub use report::{Check, Report, Status};

/// Options of the `doctor` subcommand.
#[derive(Debug, Clone)]
pub struct Options {
    /// The user directory of the user the probe session is created for.
    pub user_directory: String,
    /// The user id of that user.
    pub user_id: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            user_directory: "QLIK-GATEWAY".into(),
            user_id: "doctor".into(),
        }
    }
}

impl Options {
    /// `DIR\id` (or `DIR/id`) as given to `--user`.
    pub fn parse_user(s: &str) -> Result<Self, String> {
        let (d, u) = s
            .split_once('\\')
            .or_else(|| s.split_once('/'))
            .ok_or_else(|| format!("--user {s:?}: write it as DIRECTORY\\userid"))?;
        if d.is_empty() || u.is_empty() {
            return Err(format!("--user {s:?}: write it as DIRECTORY\\userid"));
        }
        Ok(Self {
            user_directory: d.into(),
            user_id: u.into(),
        })
    }
}

/// Runs every check against the deployment `cfg` describes.
pub async fn run(cfg: &Config, config_path: &Path, opts: &Options, print: bool) -> Report {
    crate::net::tls::install_default_provider();
    let mut r = Report::new(print);
    r.push(Check::ok(format!(
        "configuration {} is valid",
        config_path.display()
    )));
    for w in &cfg.warnings {
        r.push(
            Check::warn(
                format!("configuration: {w}"),
                "found by the configuration check (check-config reports it too)",
            )
            .gw("change the key the warning names"),
        );
    }
    let certs_ok = certificates::check(cfg, &mut r);
    // What `check-config` and start-up build: the identity provider, session store, mashup.
    match crate::state::AppState::new(cfg.clone()) {
        Ok(_) => r.push(Check::ok(
            "the gateway's state builds (identity provider, session store, mashup)",
        )),
        Err(e) => r.push(
            Check::fail(
                "the gateway cannot start with this configuration",
                e.to_string(),
            )
            .gw("see the key or file the cause names"),
        ),
    }
    if certs_ok {
        node::check_all(cfg, opts, &mut r).await;
    }
    clock::check(&mut r);
    match &cfg.auth {
        AuthConfig::Negotiate(n) => keytab::check(n, &mut r),
        AuthConfig::Oidc(o) => oidc::check(o, &mut r).await,
        _ => {}
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_probe_user() {
        let o = Options::parse_user("DEV\\bob").unwrap();
        assert_eq!(
            (o.user_directory.as_str(), o.user_id.as_str()),
            ("DEV", "bob")
        );
        let o = Options::parse_user("DEV/bob").unwrap();
        assert_eq!(o.user_id, "bob");
        assert!(Options::parse_user("bob").is_err());
        assert!(Options::parse_user("\\bob").is_err());
    }
}
