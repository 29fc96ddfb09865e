//! Negotiate: the keytab holds a key for the service principal browsers ask tickets for.

use super::report::{Check, Report};
use crate::auth::negotiate::keytab as kt;
use crate::config::NegotiateConfig;

/// Reads the keytab and looks for the service principal.
pub(super) fn check(n: &NegotiateConfig, r: &mut Report) {
    match kt::read(&n.keytab) {
        Ok(keys) if !keys.is_empty() => {
            let want = n
                .service_principal
                .clone()
                .unwrap_or_else(|| format!("HTTP/{}", n.public_host));
            let has = keys.iter().any(|k| {
                let base = k
                    .principal
                    .rsplit_once('@')
                    .map_or(k.principal.as_str(), |(p, _)| p);
                k.principal.eq_ignore_ascii_case(&want) || base.eq_ignore_ascii_case(&want)
            });
            if has {
                r.push(Check::ok(format!(
                    "keytab {} has {want} (principals: {})",
                    n.keytab.display(),
                    kt::principal_list(&keys)
                )));
            } else {
                r.push(
                    Check::fail(
                        format!("keytab {} has no key for {want}", n.keytab.display()),
                        format!("it has keys for {}", kt::principal_list(&keys)),
                    )
                    .gw(format!("setspn -S {want} <service account>; ktpass for that principal; or set auth.negotiate.service_principal")),
                );
            }
        }
        Ok(_) => r.push(Check::fail(
            format!("keytab {}", n.keytab.display()),
            "the keytab holds no keys",
        )),
        Err(e) => r.push(
            Check::fail(format!("keytab {}", n.keytab.display()), e.to_string())
                .gw("check auth.negotiate.keytab and its file permissions"),
        ),
    }
}
