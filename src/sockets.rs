//! Open websockets, per gateway session: logout, expiry and shutdown close them (hyper stops
//! tracking a connection once it is upgraded, so the gateway must).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::sync::{broadcast, Notify};

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

impl CloseReason {
    const ALL: [CloseReason; 3] = [Self::Logout, Self::SessionEnded, Self::Shutdown];

    /// Its code in a [`CloseSignal`]; 0 is "not asked".
    fn code(self) -> u8 {
        match self {
            Self::Logout => 1,
            Self::SessionEnded => 2,
            Self::Shutdown => 3,
        }
    }

    fn of_code(code: u8) -> Option<CloseReason> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// The gateway's request to close one socket: set by the registry, read by the socket's relay.
/// The relay looks at it on every pass of its loop, for every message; a `tokio::sync::watch`
/// registered and removed a waiter under the channel's lock each time (3.6 % of a relayed round
/// trip's instructions, BENCHMARKS.md), this is an atomic and a waker slot.
#[derive(Default)]
struct CloseSignal {
    /// 0 until the socket is asked to close, then the [`CloseReason`]'s code.
    reason: AtomicU8,
    waker: AtomicWaker,
}

impl CloseSignal {
    /// Asks with `reason` unless the socket was asked already; whether it was asked now.
    fn ask_first(&self, reason: CloseReason) -> bool {
        let asked = self
            .reason
            .compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if asked {
            self.waker.wake();
        }
        asked
    }

    /// Asks with `reason`, replacing an earlier one.
    fn ask(&self, reason: CloseReason) {
        if self.reason.swap(reason.code(), Ordering::AcqRel) != reason.code() {
            self.waker.wake();
        }
    }
}

/// Socket id → (owning session's storage key, close signal).
type Sockets = HashMap<u64, (Option<String>, Arc<CloseSignal>)>;

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
    signal: Arc<CloseSignal>,
    /// The reason [`Self::closed`] last returned.
    seen: Option<CloseReason>,
}

impl SocketGuard {
    /// Resolves when the gateway asks the socket to close, with the reason; after that, only when
    /// the reason changes (a shutdown after a logout). Cancel-safe: dropped before it resolves,
    /// it has taken nothing.
    pub fn closed(&mut self) -> impl Future<Output = CloseReason> + '_ {
        std::future::poll_fn(move |cx| {
            // Registered before the reason is read: an ask in between still wakes this task.
            self.signal.waker.register(cx.waker());
            match CloseReason::of_code(self.signal.reason.load(Ordering::Acquire)) {
                Some(r) if self.seen != Some(r) => {
                    self.seen = Some(r);
                    Poll::Ready(r)
                }
                _ => Poll::Pending,
            }
        })
    }
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
        let guard = self.new_guard();
        self.lock()
            .insert(guard.id, (session_key, guard.signal.clone()));
        guard
    }

    /// Registers a socket of the gateway session with `session_key` unless that session already
    /// has `max` open sockets; `None` at the limit. Counted and inserted under one lock, so
    /// parallel upgrades cannot overshoot it.
    pub fn try_register(&self, session_key: &str, max: usize) -> Option<SocketGuard> {
        let guard = self.new_guard();
        let mut map = self.lock();
        let open = map
            .values()
            .filter(|(k, _)| k.as_deref() == Some(session_key))
            .count();
        if open >= max {
            return None;
        }
        map.insert(
            guard.id,
            (Some(session_key.to_owned()), guard.signal.clone()),
        );
        Some(guard)
    }

    /// A guard with a new id and close signal, not registered yet. Dropped unregistered (at the
    /// limit), its removal from the map finds nothing.
    fn new_guard(&self) -> SocketGuard {
        SocketGuard {
            id: self.inner.next.fetch_add(1, Ordering::Relaxed),
            inner: self.inner.clone(),
            signal: Arc::default(),
            seen: None,
        }
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
        for (key, signal) in map.values() {
            if key.as_deref() == Some(session_key) {
                n += usize::from(signal.ask_first(reason));
            }
        }
        n
    }

    /// Asks every socket to close.
    pub fn close_all(&self, reason: CloseReason) {
        for (_, signal) in self.lock().values() {
            signal.ask(reason);
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn a_socket_hears_the_first_reason_of_its_session_and_a_later_shutdown() {
        let sockets = SocketRegistry::default();
        let mut mine = sockets.register(Some("s1".into()));
        let mut other = sockets.register(Some("s2".into()));
        assert_eq!(mine.closed().now_or_never(), None, "not asked yet");
        let waiting = tokio::spawn(async move {
            let r = mine.closed().await;
            (r, mine)
        });
        assert_eq!(sockets.close_session("s1", CloseReason::Logout), 1);
        let (r, mut mine) = waiting.await.unwrap();
        assert_eq!(r, CloseReason::Logout);
        // Asked again for the same session: the first reason stays, and nothing new is heard.
        assert_eq!(sockets.close_session("s1", CloseReason::SessionEnded), 0);
        assert_eq!(mine.closed().now_or_never(), None);
        assert_eq!(
            other.closed().now_or_never(),
            None,
            "another session's socket"
        );
        sockets.close_all(CloseReason::Shutdown);
        assert_eq!(mine.closed().now_or_never(), Some(CloseReason::Shutdown));
        assert_eq!(other.closed().now_or_never(), Some(CloseReason::Shutdown));
        assert_eq!(sockets.len(), 2);
        drop((mine, other));
        assert!(sockets.is_empty());
    }

    #[test]
    fn reason_codes_round_trip() {
        for r in CloseReason::ALL {
            assert_eq!(CloseReason::of_code(r.code()), Some(r));
        }
        assert_eq!(CloseReason::of_code(0), None);
    }
}
