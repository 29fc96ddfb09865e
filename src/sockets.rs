//! Open websockets, per gateway session: logout, expiry and shutdown close them (hyper stops
//! tracking a connection once it is upgraded, so the gateway must).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch, Notify};

use crate::session::{SessionEvent, SessionStore};

/// Why the gateway closes a websocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The user logged out.
    Logout,
    /// The gateway session expired or was revoked.
    SessionEnded,
    /// The gateway is shutting down (close code 1001, Going Away).
    Shutdown,
}

/// Socket id → (owning session's storage key, close signal).
type Sockets = HashMap<u64, (Option<String>, watch::Sender<Option<CloseReason>>)>;

#[derive(Default)]
struct Inner {
    next: AtomicU64,
    sockets: Mutex<Sockets>,
    empty: Notify,
}

/// Shared registry of open upgraded connections.
#[derive(Clone, Default)]
pub struct SocketRegistry {
    inner: Arc<Inner>,
}

/// Held by a relay while its socket is open; deregisters on drop.
pub struct SocketGuard {
    id: u64,
    inner: Arc<Inner>,
    /// Becomes `Some(reason)` when the gateway wants the socket closed.
    pub close: watch::Receiver<Option<CloseReason>>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let mut map = self.inner.sockets.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&self.id);
        if map.is_empty() {
            self.inner.empty.notify_waiters();
        }
    }
}

impl SocketRegistry {
    /// Registers a socket belonging to the gateway session with `session_key` (its storage key).
    pub fn register(&self, session_key: Option<String>) -> SocketGuard {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        self.lock().insert(id, (session_key, tx));
        SocketGuard {
            id,
            inner: self.inner.clone(),
            close: rx,
        }
    }

    /// Registers a socket of the gateway session with `session_key` unless that session already
    /// has `max` open sockets; `None` at the limit. Counted and inserted under one lock, so
    /// parallel upgrades cannot overshoot it.
    pub fn try_register(&self, session_key: &str, max: usize) -> Option<SocketGuard> {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        let mut map = self.lock();
        let open = map
            .values()
            .filter(|(k, _)| k.as_deref() == Some(session_key))
            .count();
        if open >= max {
            return None;
        }
        map.insert(id, (Some(session_key.to_owned()), tx));
        Some(SocketGuard {
            id,
            inner: self.inner.clone(),
            close: rx,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sockets> {
        self.inner.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks every socket of one gateway session to close. Returns how many were newly asked. A socket
    /// already asked keeps the first reason (a logout's own event, echoed back by the shared
    /// store, does not change what the socket is told).
    pub fn close_session(&self, session_key: &str, reason: CloseReason) -> usize {
        let map = self.lock();
        let mut n = 0;
        for (key, tx) in map.values() {
            if key.as_deref() == Some(session_key) {
                let asked = tx.send_if_modified(|r| {
                    let first = r.is_none();
                    if first {
                        *r = Some(reason);
                    }
                    first
                });
                n += usize::from(asked);
            }
        }
        n
    }

    /// Asks every socket to close.
    pub fn close_all(&self, reason: CloseReason) {
        for (_, tx) in self.lock().values() {
            let _ = tx.send(Some(reason));
        }
    }

    /// Number of open sockets.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no socket is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until every socket has closed or `timeout` passes; returns whether all closed.
    pub async fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.empty.notified();
            if self.is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_empty();
            }
        }
    }
}

/// Closes this replica's websockets of sessions that a shared store reports removed (a logout on
/// any replica), until the store's events end. After a gap in the events (the store lost its
/// subscription, or this listener fell behind) it sweeps at once instead of waiting for the
/// periodic sweep.
pub(crate) async fn close_on_session_events(
    mut events: broadcast::Receiver<SessionEvent>,
    store: Arc<dyn SessionStore>,
    sockets: SocketRegistry,
) {
    loop {
        match events.recv().await {
            Ok(SessionEvent::LoggedOut(key)) => {
                let n = sockets.close_session(&key, CloseReason::Logout);
                if n > 0 {
                    tracing::info!(
                        websockets_closed = n,
                        "session removed (shared store event); closing its websockets"
                    );
                }
            }
            Ok(SessionEvent::Resubscribed) | Err(broadcast::error::RecvError::Lagged(_)) => {
                match store.sweep().await {
                    Ok(ended) => {
                        for id in ended {
                            sockets.close_session(id.storage_key(), CloseReason::SessionEnded);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "session sweep after missed session events failed")
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
