//! What `doctor` found: one [`Check`] per thing checked, printed as it completes, and the `Date`
//! headers Qlik sent on the way (for the clock check).

use std::fmt;
use std::time::SystemTime;

use http::header;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It passed.
    Ok,
    /// Not a failure, but worth a look; `cause` says why.
    Warn,
    /// It failed; `cause` says why and `qmc` / `gateway` what to change.
    Fail,
}

/// One check: what was checked and, unless it passed, why and what to change.
#[derive(Debug, Clone)]
pub struct Check {
    /// How the check ended.
    pub status: Status,
    /// What was checked, in a few words.
    pub what: String,
    /// Why it did not pass (`None` when it did).
    pub cause: Option<String>,
    /// The setting to change in the QMC.
    pub qmc: Option<String>,
    /// The setting to change in the gateway's configuration (or elsewhere).
    pub gateway: Option<String>,
}

impl Check {
    pub(super) fn ok(what: impl Into<String>) -> Self {
        Self {
            status: Status::Ok,
            what: what.into(),
            cause: None,
            qmc: None,
            gateway: None,
        }
    }

    fn bad(status: Status, what: impl Into<String>, cause: impl Into<String>) -> Self {
        Self {
            status,
            what: what.into(),
            cause: Some(cause.into()),
            qmc: None,
            gateway: None,
        }
    }

    pub(super) fn fail(what: impl Into<String>, cause: impl Into<String>) -> Self {
        Self::bad(Status::Fail, what, cause)
    }

    pub(super) fn warn(what: impl Into<String>, cause: impl Into<String>) -> Self {
        Self::bad(Status::Warn, what, cause)
    }

    pub(super) fn qmc(mut self, s: impl Into<String>) -> Self {
        self.qmc = Some(s.into());
        self
    }

    pub(super) fn gw(mut self, s: impl Into<String>) -> Self {
        self.gateway = Some(s.into());
        self
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        write!(f, "{tag}  {}", self.what)?;
        if self.status != Status::Ok {
            if let Some(c) = &self.cause {
                write!(f, "\n      cause: {c}")?;
            }
            if let Some(q) = &self.qmc {
                write!(f, "\n      fix (QMC): {q}")?;
            }
            if let Some(g) = &self.gateway {
                write!(f, "\n      fix (gateway): {g}")?;
            }
        }
        Ok(())
    }
}

/// A `Date` header seen from Qlik: who sent it, its time, and the local time when it arrived.
pub(super) type SeenDate = (String, SystemTime, SystemTime);

/// Every check run, printed as it completes.
#[derive(Default)]
pub struct Report {
    /// The checks in the order they were run.
    pub checks: Vec<Check>,
    /// Print each check to stdout as it is added.
    pub print: bool,
    /// `Date` headers seen from Qlik.
    dates: Vec<SeenDate>,
}

impl Report {
    /// An empty report; `print`: each check is printed as it is added.
    pub(super) fn new(print: bool) -> Self {
        Self {
            print,
            ..Self::default()
        }
    }

    pub(super) fn push(&mut self, c: Check) {
        if self.print {
            println!("{c}");
        }
        self.checks.push(c);
    }

    /// Whether any check failed (exit code 1).
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    pub(super) fn saw_date(&mut self, from: &str, headers: &http::HeaderMap) {
        if let Some(t) = headers
            .get(header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| httpdate::parse_http_date(s).ok())
        {
            self.dates.push((from.to_string(), t, SystemTime::now()));
        }
    }

    /// The first `Date` header seen from Qlik.
    pub(super) fn first_date(&self) -> Option<SeenDate> {
        self.dates.first().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_cause_and_fixes_indented() {
        let c = Check::fail("QPS API x", "because")
            .qmc("Virtual proxies → y")
            .gw("set qlik.z");
        assert_eq!(
            c.to_string(),
            "FAIL  QPS API x\n      cause: because\n      fix (QMC): Virtual proxies → y\n      fix (gateway): set qlik.z"
        );
        assert_eq!(Check::ok("fine").to_string(), "ok    fine");
        assert!(Check::warn("soon", "x")
            .to_string()
            .starts_with("warn  soon\n      cause: x"));
    }
}
