//! Open websockets, per gateway session: logout, expiry and shutdown close them (hyper stops
//! tracking a connection once it is upgraded, so the gateway must).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

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

    fn lock(&self) -> std::sync::MutexGuard<'_, Sockets> {
        self.inner.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks every socket of one gateway session to close. Returns how many were asked.
    pub fn close_session(&self, session_key: &str, reason: CloseReason) -> usize {
        let map = self.lock();
        let mut n = 0;
        for (key, tx) in map.values() {
            if key.as_deref() == Some(session_key) {
                let _ = tx.send(Some(reason));
                n += 1;
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
