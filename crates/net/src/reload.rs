//! The one watcher for files the gateway replaces without a restart (the HTTPS certificate, the
//! Kerberos keytab): a check every so often and on SIGHUP, until what it watches is dropped.
//!
//! A reload that fails keeps the previous files in use. A failure that persists (a broken file
//! left in place, a full temp directory) is retried at every check but logged once, at ERROR,
//! and again only when its message changes; the repeats go to DEBUG.

use std::fmt::Display;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The log target this module had inside the gateway crate, kept so that operators' filters
/// (`RUST_LOG=qlik_gateway=…`) and documented log lines still match.
const LOG_TARGET: &str = "qlik_gateway::net::reload";

/// Something loaded from files that can be loaded again.
pub trait Reload: Send + Sync + 'static {
    /// Why a reload failed, for the log.
    type Error: Display + Send;

    /// Loads again if the files changed (or whatever their state, when `force`: a SIGHUP);
    /// `Ok(true)` when something new is in use. May block: it runs on the blocking pool.
    fn reload(&self, force: bool) -> Result<bool, Self::Error>;

    /// The log line for a failed reload (the previous files stay in use), e.g.
    /// "keytab changed but cannot be used; still using the previous one".
    fn failed(&self) -> &'static str;

    /// The file the log lines name (`file=` field).
    fn file(&self) -> &std::path::Path;
}

/// Watches `target` until it is dropped: a check every `every` (none when `None`) and one on
/// each SIGHUP. Needs a Tokio runtime; outside one it does nothing. The SIGHUP handler is in
/// place when this returns, so a SIGHUP sent right after start-up reloads instead of ending the
/// process (its default action).
pub fn watch<T: Reload>(target: &Arc<T>, every: Option<Duration>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    #[cfg(unix)]
    let hup = {
        let _guard = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| tracing::warn!(target: LOG_TARGET, "no reload on SIGHUP: {e}"))
            .ok()
    };
    #[cfg(not(unix))]
    let hup: Option<()> = None;
    rt.spawn(run(Arc::downgrade(target), every, hup));
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

async fn run<T: Reload>(weak: Weak<T>, every: Option<Duration>, mut hup: Option<Hangup>) {
    let mut reported: Option<String> = None;
    let mut tick = every.map(|d| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        let poll = async {
            match tick.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = {
            let _ = &mut hup;
            std::future::pending::<()>()
        };
        let force = tokio::select! {
            _ = poll => false,
            _ = hangup => true,
        };
        let Some(target) = weak.upgrade() else {
            return;
        };
        let t = target.clone();
        let result =
            tokio::task::spawn_blocking(move || t.reload(force).map_err(|e| e.to_string())).await;
        match result {
            Ok(Ok(_)) => reported = None,
            Ok(Err(e)) => {
                let file = target.file().display();
                if reported.as_ref() == Some(&e) {
                    tracing::debug!(target: LOG_TARGET, %file, "the reload still fails (already reported): {e}");
                } else {
                    tracing::error!(target: LOG_TARGET, %file, "{}: {e}", target.failed());
                    reported = Some(e);
                }
            }
            Err(e) => {
                let file = target.file().display();
                tracing::error!(target: LOG_TARGET, %file, "{} (the reload task failed): {e}", target.failed());
            }
        }
    }
}
