//! Event counters: what the gateway saw and did that operators want to count (and tests and the
//! Prometheus endpoint read). Lock-free, held once in `AppState`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Qlik's fatal proxy notifications (`qlik-reference.md` §4), counted each under its own name.
/// A fixed list on purpose: a counter (a metric label) is never named by upstream input, so the
/// set stays bounded whatever Qlik sends; any other notification with `severity: "fatal"` is
/// counted under [`OTHER_FATAL`].
pub const FATAL_NOTIFICATIONS: [&str; 8] = [
    "OnSessionTimedOut",
    "OnSessionClosed",
    "OnSessionLoggedOut",
    "OnNoEngineAvailable",
    "OnMaxParallelSessionsExceeded",
    "OnLicenseAccessDenied",
    "OnEngineWebsocketFailed",
    "OnRepositoryWebsocketFailed",
];

/// The name fatal notifications outside [`FATAL_NOTIFICATIONS`] are counted under.
pub const OTHER_FATAL: &str = "other";

/// The gateway's counters. Every count only grows (Prometheus counters). A clone shares the
/// counters (the metrics registry reads them at each scrape).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    /// Indexed like [`FATAL_NOTIFICATIONS`], then [`OTHER_FATAL`].
    fatal: [AtomicU64; FATAL_NOTIFICATIONS.len() + 1],
    login_prompts: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Fatal notifications Qlik sent on engine websockets (all passed on to the client), by method
    /// name; every name of [`FATAL_NOTIFICATIONS`] and [`OTHER_FATAL`] is present.
    pub fatal_notifications: BTreeMap<&'static str, u64>,
    /// `OnAuthenticationInformation` with `mustAuthenticate: true` the gateway sent to a client
    /// (only ever when the gateway session is gone). A rate that grows with traffic is a login loop.
    pub login_prompts: u64,
}

impl Stats {
    /// Counts one fatal notification from Qlik.
    pub fn fatal_notification(&self, method: &str) {
        let i = FATAL_NOTIFICATIONS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(FATAL_NOTIFICATIONS.len());
        self.inner.fatal[i].fetch_add(1, Ordering::Relaxed);
    }

    /// How many fatal notifications named `method` were seen ([`OTHER_FATAL`] for the rest;
    /// 0 for a name that is counted under [`OTHER_FATAL`]).
    pub fn fatal_notifications(&self, method: &str) -> u64 {
        if method == OTHER_FATAL {
            return self.inner.fatal[FATAL_NOTIFICATIONS.len()].load(Ordering::Relaxed);
        }
        FATAL_NOTIFICATIONS
            .iter()
            .position(|m| *m == method)
            .map_or(0, |i| self.inner.fatal[i].load(Ordering::Relaxed))
    }

    /// Counts one `mustAuthenticate: true` sent to a client.
    pub fn login_prompt(&self) {
        self.inner.login_prompts.fetch_add(1, Ordering::Relaxed);
    }

    /// How many `mustAuthenticate: true` the gateway sent to clients.
    pub fn login_prompts(&self) -> u64 {
        self.inner.login_prompts.load(Ordering::Relaxed)
    }

    /// Every counter, read now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let names = FATAL_NOTIFICATIONS.iter().copied().chain([OTHER_FATAL]);
        StatsSnapshot {
            fatal_notifications: names
                .zip(&self.inner.fatal)
                .map(|(n, c)| (n, c.load(Ordering::Relaxed)))
                .collect(),
            login_prompts: self.login_prompts(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_name_with_a_bounded_set() {
        let s = Stats::default();
        s.fatal_notification("OnSessionTimedOut");
        s.fatal_notification("OnSessionTimedOut");
        s.fatal_notification("OnNoEngineAvailable");
        s.fatal_notification("OnSomethingNew");
        s.fatal_notification("OnSomethingElse");
        s.login_prompt();
        assert_eq!(s.fatal_notifications("OnSessionTimedOut"), 2);
        assert_eq!(s.fatal_notifications("OnNoEngineAvailable"), 1);
        assert_eq!(s.fatal_notifications("OnSessionClosed"), 0);
        assert_eq!(s.fatal_notifications("OnSomethingNew"), 0);
        assert_eq!(s.fatal_notifications(OTHER_FATAL), 2);
        let snap = s.snapshot();
        assert_eq!(
            snap.fatal_notifications.len(),
            FATAL_NOTIFICATIONS.len() + 1
        );
        assert_eq!(snap.fatal_notifications["OnSessionTimedOut"], 2);
        assert_eq!(snap.fatal_notifications[OTHER_FATAL], 2);
        assert_eq!(snap.login_prompts, 1);
    }
}
