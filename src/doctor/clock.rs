//! This host's clock against Qlik's, from the first `Date` header Qlik sent.

use std::time::Duration;

use super::report::{Check, Report};

/// Clock differences beyond this are a warning (Kerberos tolerates 5 minutes; tokens less).
const SKEW_WARN: Duration = Duration::from_secs(60);

/// Compares the clocks; nothing when no `Date` header came from Qlik.
pub(super) fn check(r: &mut Report) {
    let Some((from, theirs, ours)) = r.first_date() else {
        return;
    };
    let (ahead, d) = match theirs.duration_since(ours) {
        Ok(d) => ("ahead of", d),
        Err(e) => ("behind", e.duration()),
    };
    let secs = d.as_secs();
    if d > SKEW_WARN {
        r.push(
            Check::warn(
                format!("clock: {from} is {secs} s {ahead} this host"),
                "clock skew breaks Kerberos (5 minutes tolerated), token lifetimes and cookie expiry",
            )
            .gw("synchronise this host and the Qlik nodes with the domain's time source (NTP)"),
        );
    } else {
        r.push(Check::ok(format!(
            "clock: within {secs} s of {from} (Date header)"
        )));
    }
}
