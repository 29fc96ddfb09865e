//! The client's frames as activity on its gateway session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::session::SessionId;
use crate::state::AppState;

/// Keeps the gateway session alive while its user works on an open page: a dashboard can run
/// for hours on the engine websocket alone, without one HTTP request that would refresh the
/// idle timer. Only client frames count (Qlik's notifications are not the user being active),
/// and the store is touched at most once per interval, off the relay path.
pub(super) struct Activity {
    state: Arc<AppState>,
    sid: SessionId,
    every: Duration,
    last: Instant,
}

impl Activity {
    pub(super) fn new(state: &Arc<AppState>, sid: &SessionId) -> Self {
        Activity {
            state: state.clone(),
            sid: sid.clone(),
            every: (state.cfg.session.idle_timeout / 4).min(Duration::from_secs(60)),
            last: Instant::now(),
        }
    }

    /// A data frame from the client.
    pub(super) fn seen(&mut self) {
        if self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        let (state, sid) = (self.state.clone(), self.sid.clone());
        tokio::spawn(async move {
            if let Err(e) = state.store.get_and_touch(&sid).await {
                tracing::warn!(session = %sid.log_tag(), error = %e, "could not refresh the session's idle timer from websocket activity");
            }
        });
    }
}
