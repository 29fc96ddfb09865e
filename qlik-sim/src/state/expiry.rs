//! Ending proxy sessions on time: the inactivity sweeper, and random expiry (chaos).

use super::Shared;
use crate::notifications::SessionEnd;
use crate::options::RandomExpiry;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

impl Shared {
    /// Expires sessions whose inactivity timer ran out; returns the next deadline, if any.
    fn sweep(&self) -> Option<Instant> {
        let timeout = self.opts.inactivity_timeout;
        let mut inner = self.lock();
        let overdue: Vec<String> = inner
            .sessions
            .iter()
            .filter(|(_, r)| r.last_activity.elapsed() >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in overdue {
            Self::end_locked(&mut inner, &id, SessionEnd::TimedOut, true);
        }
        inner
            .sessions
            .values()
            .map(|r| r.last_activity + timeout)
            .min()
    }

    /// Ends each live session with probability `fraction` (see [`RandomExpiry`]); returns how
    /// many ended.
    pub(crate) fn expire_random(&self, fraction: f64) -> usize {
        use rand::Rng;
        let mut rng = rand::rng();
        let fraction = fraction.clamp(0.0, 1.0);
        let mut inner = self.lock();
        let doomed: Vec<String> = inner
            .sessions
            .keys()
            .filter(|_| rng.random_bool(fraction))
            .cloned()
            .collect();
        for id in &doomed {
            Self::end_locked(&mut inner, id, SessionEnd::TimedOut, true);
        }
        doomed.len()
    }

    /// Runs [`Shared::expire_random`] every `chaos.every` until shutdown.
    pub(crate) async fn run_random_expiry(
        self: Arc<Self>,
        chaos: RandomExpiry,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(chaos.every.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let n = self.expire_random(chaos.fraction);
                    if n > 0 {
                        tracing::info!(sessions = n, "random expiry ended proxy sessions");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Runs the inactivity timer until `shutdown` flips.
    pub(crate) async fn run_sweeper(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let next = self.sweep();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.sweeper.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
