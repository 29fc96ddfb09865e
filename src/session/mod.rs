//! Gateway sessions: the only state the browser holds is an opaque id in one HttpOnly cookie; everything
//! else (identity, the Qlik session) lives server-side in a [`SessionStore`].

pub mod config;
pub mod cookie;
pub mod crypto;
pub mod id;
pub mod memory;
pub mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::identity::Identity;
pub use id::SessionId;

/// The user's Qlik session as the gateway holds it on their behalf.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QlikSession {
    /// The value of the virtual proxy's session cookie. A credential: never logged.
    pub cookie_value: String,
    /// Qlik's websocket CSRF token for this session, once fetched (`None` = not fetched yet,
    /// `Some("")` = this Qlik does not issue one).
    pub csrf_token: Option<String>,
    /// When the gateway obtained this Qlik session.
    pub created_at: SystemTime,
    /// The proxy node the session lives on (its configured URL; `""` = the first node).
    #[serde(default)]
    pub node: String,
}

impl fmt::Debug for QlikSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QlikSession")
            .field("cookie_value", &"<redacted>")
            .field(
                "csrf_token",
                &self.csrf_token.as_ref().map(|_| "<redacted>"),
            )
            .field("created_at", &self.created_at)
            .field("node", &self.node)
            .finish()
    }
}

/// A string that is a credential (an ID token): kept, never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential so that it is never printed.
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// The value, for the one place that sends it where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One logged-in browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewaySession {
    /// Who the user is, as Qlik gets it: user directory, user id and session attributes.
    pub identity: Identity,
    /// Which identity provider logged the user in.
    pub provider: String,
    /// When the user logged in; the absolute timeout counts from it.
    pub created_at: SystemTime,
    /// The last request that touched the session; the idle timeout counts from it.
    pub last_seen: SystemTime,
    /// The user's Qlik session, once one was made.
    pub qlik: Option<QlikSession>,
    /// The OIDC ID token, for `id_token_hint` at the IdP's logout.
    #[serde(default)]
    pub id_token: Option<Secret>,
}

impl GatewaySession {
    /// A session that starts now.
    pub fn new(identity: Identity, provider: &str) -> Self {
        let now = SystemTime::now();
        Self {
            identity,
            provider: provider.to_string(),
            created_at: now,
            last_seen: now,
            qlik: None,
            id_token: None,
        }
    }

    /// When the session ends if nothing else happens.
    pub fn expires_at(&self, timeouts: &Timeouts) -> SystemTime {
        (self.last_seen + timeouts.idle).min(self.created_at + timeouts.absolute)
    }

    /// Whether the session is past its idle or absolute timeout at `now`.
    pub fn is_expired(&self, timeouts: &Timeouts, now: SystemTime) -> bool {
        now >= self.expires_at(timeouts)
    }

    /// Who the session counts against for `session.max_sessions_per_user`: Qlik compares user
    /// directories and ids without regard to case, so `CORP\Alice` and `corp\alice` are one user.
    pub fn user_key(&self) -> String {
        format!(
            "{}\\{}",
            self.identity.user_directory.to_lowercase(),
            self.identity.user_id.to_lowercase()
        )
    }
}

/// Idle and absolute session lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A session ends after this long without a request.
    pub idle: Duration,
    /// A session ends after this long in any case.
    pub absolute: Duration,
}

impl Timeouts {
    /// How close together two touches of a session may be before the second is not written:
    /// a tenth of the idle timeout, at most a second. A burst of requests costs one write, and
    /// the idle timeout needs no more precision.
    pub fn touch_every(&self) -> Duration {
        (self.idle / 10).min(Duration::from_secs(1))
    }
}

/// A store failure (only a networked store can fail; the memory store never does).
#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub struct StoreError(pub String);

/// Something that happened to a session on some replica, as a shared store reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The session with this storage key ([`SessionId::storage_key`]) was removed (logout, or a
    /// login replacing it): its websockets on every replica are to be closed.
    LoggedOut(String),
    /// The event subscription was (re)established after a gap: events of the gap are lost, so
    /// the listener should sweep now instead of waiting for the next interval.
    Resubscribed,
}

type Release = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A held [`SessionStore::lock`]. [`LockGuard::release`] it when done; a guard that is only
/// dropped releases in the background (and the lock's own lifetime is the backstop).
#[must_use = "a lock is released when its guard is released or dropped"]
pub struct LockGuard {
    release: Option<Release>,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("held", &self.release.is_some())
            .finish()
    }
}

impl LockGuard {
    /// A lock with nothing to release (a store within one process: the caller's in-process
    /// lock is all the exclusion there is to have).
    pub fn local() -> Self {
        Self { release: None }
    }

    /// A lock released by running `release`.
    pub fn new<F, Fut>(release: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self {
            release: Some(Box::new(move || Box::pin(release()))),
        }
    }

    /// Releases the lock now.
    pub async fn release(mut self) {
        if let Some(r) = self.release.take() {
            r().await;
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(r) = self.release.take() {
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(r());
            }
        }
    }
}

/// Where gateway sessions live: [`memory::MemoryStore`] for one replica, [`redis::RedisStore`] for several.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session unless its user already has `max_per_user` live sessions: `Ok(false)`,
    /// and nothing is stored. Counted and stored in one step, so parallel logins of one user
    /// cannot overshoot the limit (on every replica sharing the store).
    async fn insert(
        &self,
        id: &SessionId,
        session: GatewaySession,
        max_per_user: usize,
    ) -> Result<bool, StoreError>;
    /// Returns the live session and marks it as seen now; expired sessions are removed and not
    /// returned. Shared, not copied: this runs on every request, and a session can be large (an
    /// ID token, group attributes). Its `last_seen` may lag by up to a second: touches are
    /// written at most once a second per session.
    async fn get_and_touch(
        &self,
        id: &SessionId,
    ) -> Result<Option<Arc<GatewaySession>>, StoreError>;
    /// Returns the live session without touching it.
    async fn get(&self, id: &SessionId) -> Result<Option<GatewaySession>, StoreError>;
    /// Replaces the session's Qlik session. Returns false when the gateway session is gone.
    async fn set_qlik(&self, id: &SessionId, qlik: Option<QlikSession>)
        -> Result<bool, StoreError>;
    /// Removes the session, returning it if it existed.
    async fn remove(&self, id: &SessionId) -> Result<Option<GatewaySession>, StoreError>;
    /// Removes expired sessions, returning their ids (so their websockets can be closed).
    async fn sweep(&self) -> Result<Vec<SessionId>, StoreError>;
    /// Number of live sessions (for metrics).
    async fn count(&self) -> Result<usize, StoreError>;
    /// Whether the store answers (for readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Takes the lock `id` for at most `ttl` across every replica sharing the store: `Ok(None)`
    /// when someone else holds it. A store of one process has nothing to add to the caller's
    /// in-process lock and always grants it.
    async fn lock(&self, _id: &SessionId, _ttl: Duration) -> Result<Option<LockGuard>, StoreError> {
        Ok(Some(LockGuard::local()))
    }

    /// Session events published by other replicas (and this one), for a store shared by
    /// several replicas; `None` for a store of one process (it has nothing to tell).
    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<SessionEvent>> {
        None
    }
}
