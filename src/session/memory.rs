//! The in-process store: one replica, sessions lost on restart.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{GatewaySession, QlikSession, SessionId, SessionStore, StoreError, Timeouts};

/// Keyed by storage key, hashed with FxHash rather than SipHash (183 instructions for a 64-byte key
/// under callgrind, on every request): a storage key is the SHA-256 of an id the gateway
/// drew from the CSPRNG, so the keys in the map are uniformly spread and no one chooses them; a
/// lookup of a forged cookie's key only probes. The per-user index keeps SipHash: the IdP's user
/// names are not random.
type Map = HashMap<String, (SessionId, Arc<GatewaySession>), rustc_hash::FxBuildHasher>;

/// The sessions, and which of them each user holds (for `session.max_sessions_per_user`).
#[derive(Default)]
struct Sessions {
    map: Map,
    /// Per user key, the storage keys of the user's sessions in `map`, expired ones included
    /// until the sweep (or a login at the limit) drops them. A login then costs the same with
    /// ten sessions in the process or a million: it looks at its own user's sessions only, and
    /// at those only when there are as many as the limit.
    by_user: HashMap<String, HashSet<String>>,
}

impl Sessions {
    /// Forgets `key` in its user's set; the user's entry goes with its last session.
    fn unindex(&mut self, user: String, key: &str) {
        if let std::collections::hash_map::Entry::Occupied(mut e) = self.by_user.entry(user) {
            e.get_mut().remove(key);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }
}

/// Sessions in a mutex-guarded map, keyed by the id's hash so a heap dump does not hold usable ids.
/// Each session is shared with the requests using it; a change copies it if any request still
/// holds it (copy on write), which keeps the per-request lookup free of copies.
pub struct MemoryStore {
    timeouts: Timeouts,
    /// Touches closer together than this are not written (as in the Redis store): a write may
    /// copy the session, and the idle timeout does not need more precision.
    touch_every: Duration,
    sessions: Mutex<Sessions>,
}

impl MemoryStore {
    /// An empty store enforcing `timeouts`.
    pub fn new(timeouts: Timeouts) -> Self {
        Self {
            touch_every: timeouts.touch_every(),
            timeouts,
            sessions: Mutex::new(Sessions::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // A panic while holding the lock cannot leave a half-written session (every write is one
        // insert or field assignment), so a poisoned map is still consistent.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert(
        &self,
        id: &SessionId,
        session: GatewaySession,
        max_per_user: usize,
    ) -> Result<bool, StoreError> {
        let now = SystemTime::now();
        let user = session.user_key();
        let mut guard = self.lock();
        let Sessions { map, by_user } = &mut *guard;
        let keys = by_user.entry(user).or_default();
        // Fewer sessions than the limit, expired or not: below it without looking at them.
        if keys.len() >= max_per_user {
            // Expired ones no longer count; they stay in the map for the sweep, which reports
            // them so that their websockets are closed.
            keys.retain(|k| {
                map.get(k)
                    .is_some_and(|(_, s)| !s.is_expired(&self.timeouts, now))
            });
            if keys.len() >= max_per_user {
                return Ok(false);
            }
        }
        let key = id.storage_key().to_owned();
        keys.insert(key.clone());
        map.insert(key, (id.clone(), Arc::new(session)));
        Ok(true)
    }

    async fn get_and_touch(
        &self,
        id: &SessionId,
    ) -> Result<Option<Arc<GatewaySession>>, StoreError> {
        let key = id.storage_key();
        let now = SystemTime::now();
        let mut guard = self.lock();
        match guard.map.get_mut(key) {
            // Left in place for the sweep: removing it here would end the session without
            // anyone closing its websockets (only the sweep reports what ended).
            Some((_, s)) if s.is_expired(&self.timeouts, now) => Ok(None),
            Some((_, s)) => {
                let stale = now
                    .duration_since(s.last_seen)
                    .is_ok_and(|d| d >= self.touch_every);
                if stale {
                    Arc::make_mut(s).last_seen = now;
                }
                Ok(Some(s.clone()))
            }
            None => Ok(None),
        }
    }

    async fn get(&self, id: &SessionId) -> Result<Option<GatewaySession>, StoreError> {
        let now = SystemTime::now();
        Ok(self
            .lock()
            .map
            .get(id.storage_key())
            .filter(|(_, s)| !s.is_expired(&self.timeouts, now))
            .map(|(_, s)| GatewaySession::clone(s)))
    }

    async fn set_qlik(
        &self,
        id: &SessionId,
        qlik: Option<QlikSession>,
    ) -> Result<bool, StoreError> {
        match self.lock().map.get_mut(id.storage_key()) {
            Some((_, s)) => {
                Arc::make_mut(s).qlik = qlik;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn remove(&self, id: &SessionId) -> Result<Option<GatewaySession>, StoreError> {
        let mut guard = self.lock();
        let Some((_, s)) = guard.map.remove(id.storage_key()) else {
            return Ok(None);
        };
        guard.unindex(s.user_key(), id.storage_key());
        Ok(Some(Arc::unwrap_or_clone(s)))
    }

    async fn sweep(&self) -> Result<Vec<SessionId>, StoreError> {
        let now = SystemTime::now();
        let mut removed = Vec::new();
        let mut users = Vec::new();
        let mut guard = self.lock();
        guard.map.retain(|_, (id, s)| {
            let keep = !s.is_expired(&self.timeouts, now);
            if !keep {
                removed.push(id.clone());
                users.push(s.user_key());
            }
            keep
        });
        for (id, user) in removed.iter().zip(users) {
            guard.unindex(user, id.storage_key());
        }
        Ok(removed)
    }

    async fn count(&self) -> Result<usize, StoreError> {
        Ok(self.lock().map.len())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use std::time::Duration;

    fn identity() -> Identity {
        Identity {
            user_directory: "DEV".into(),
            user_id: "alice".into(),
            attributes: vec![],
        }
    }

    #[tokio::test]
    async fn idle_and_absolute_timeouts_end_sessions() {
        let store = MemoryStore::new(Timeouts {
            idle: Duration::from_secs(60),
            absolute: Duration::from_secs(3600),
        });
        let id = SessionId::generate();
        let mut s = GatewaySession::new(identity(), "static");
        s.last_seen -= Duration::from_secs(61);
        assert!(store.insert(&id, s, 10).await.unwrap());
        assert!(store.get_and_touch(&id).await.unwrap().is_none());
        // Found expired by a request, it is still reported by the sweep (its sockets get closed).
        assert_eq!(store.sweep().await.unwrap(), vec![id.clone()]);

        let id2 = SessionId::generate();
        let mut s = GatewaySession::new(identity(), "static");
        s.created_at -= Duration::from_secs(3601);
        assert!(store.insert(&id2, s, 10).await.unwrap());
        assert_eq!(store.sweep().await.unwrap(), vec![id2.clone()]);
        assert_eq!(store.count().await.unwrap(), 0);

        let id3 = SessionId::generate();
        store
            .insert(&id3, GatewaySession::new(identity(), "static"), 10)
            .await
            .unwrap();
        assert!(store.get_and_touch(&id3).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn touches_slide_the_idle_timeout_without_disturbing_sessions_in_use() {
        let store = MemoryStore::new(Timeouts {
            idle: Duration::from_secs(60),
            absolute: Duration::from_secs(3600),
        });
        let id = SessionId::generate();
        let mut s = GatewaySession::new(identity(), "static");
        s.last_seen -= Duration::from_secs(59);
        assert!(store.insert(&id, s, 10).await.unwrap());

        // A request holds the session while it is touched and its Qlik session replaced.
        let held = store.get_and_touch(&id).await.unwrap().unwrap();
        let qlik = QlikSession {
            cookie_value: "q".into(),
            csrf_token: None,
            created_at: SystemTime::now(),
            node: String::new(),
        };
        assert!(store.set_qlik(&id, Some(qlik)).await.unwrap());
        assert!(
            held.qlik.is_none(),
            "a session in use changed under its request"
        );

        let now = store.get(&id).await.unwrap().unwrap();
        assert_eq!(
            now.qlik.as_ref().map(|q| q.cookie_value.as_str()),
            Some("q")
        );
        // The touch moved the idle expiry: 59 s idle plus this touch is not 60 s idle.
        let left = now
            .expires_at(&store.timeouts)
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(left > Duration::from_secs(58), "{left:?}");

        // Touches closer together than a second are not written.
        let seen = now.last_seen;
        let again = store.get_and_touch(&id).await.unwrap().unwrap();
        assert_eq!(again.last_seen, seen);
    }

    #[tokio::test]
    async fn a_user_at_the_session_limit_gets_no_more_until_one_ends() {
        let store = MemoryStore::new(Timeouts {
            idle: Duration::from_secs(60),
            absolute: Duration::from_secs(3600),
        });
        let ids: Vec<_> = (0..3).map(|_| SessionId::generate()).collect();
        for id in &ids {
            assert!(store
                .insert(id, GatewaySession::new(identity(), "static"), 3)
                .await
                .unwrap());
        }
        // Case does not make another user.
        let mut shouty = identity();
        shouty.user_id = "ALICE".into();
        shouty.user_directory = "dev".into();
        let extra = SessionId::generate();
        assert!(!store
            .insert(&extra, GatewaySession::new(shouty, "static"), 3)
            .await
            .unwrap());
        assert!(store.get(&extra).await.unwrap().is_none(), "nothing stored");
        // Another user is not affected.
        let mut bob = identity();
        bob.user_id = "bob".into();
        assert!(store
            .insert(
                &SessionId::generate(),
                GatewaySession::new(bob, "static"),
                3
            )
            .await
            .unwrap());
        // An ended session frees its place.
        store.remove(&ids[0]).await.unwrap();
        assert!(store
            .insert(&extra, GatewaySession::new(identity(), "static"), 3)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn expired_sessions_free_their_place_before_the_sweep_and_leave_no_index_behind() {
        let store = MemoryStore::new(Timeouts {
            idle: Duration::from_secs(60),
            absolute: Duration::from_secs(3600),
        });
        let old = SessionId::generate();
        let mut s = GatewaySession::new(identity(), "static");
        s.last_seen -= Duration::from_secs(61);
        assert!(store.insert(&old, s, 2).await.unwrap());
        let live = SessionId::generate();
        let s = GatewaySession::new(identity(), "static");
        assert!(store.insert(&live, s, 2).await.unwrap());
        // At the limit by count, but one of the two has expired: a third fits.
        let third = SessionId::generate();
        let s = GatewaySession::new(identity(), "static");
        assert!(store.insert(&third, s, 2).await.unwrap());
        let fourth = SessionId::generate();
        let s = GatewaySession::new(identity(), "static");
        assert!(!store.insert(&fourth, s, 2).await.unwrap());
        // The sweep still reports the expired one (its websockets are closed).
        assert_eq!(store.sweep().await.unwrap(), vec![old]);
        store.remove(&live).await.unwrap();
        store.remove(&third).await.unwrap();
        assert!(
            store.lock().by_user.is_empty(),
            "no user entry outlives its sessions"
        );
    }
}
