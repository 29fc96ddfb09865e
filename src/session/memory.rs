//! The in-process store: one replica, sessions lost on restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;

use super::{GatewaySession, QlikSession, SessionId, SessionStore, StoreError, Timeouts};

/// Sessions in a mutex-guarded map, keyed by the id's hash so a heap dump does not hold usable ids.
pub struct MemoryStore {
    timeouts: Timeouts,
    sessions: Mutex<HashMap<String, (SessionId, GatewaySession)>>,
}

impl MemoryStore {
    /// An empty store enforcing `timeouts`.
    pub fn new(timeouts: Timeouts) -> Self {
        Self {
            timeouts,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (SessionId, GatewaySession)>> {
        // A panic while holding the lock cannot leave a half-written session (every write is one
        // insert or field assignment), so a poisoned map is still consistent.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert(&self, id: &SessionId, session: GatewaySession) -> Result<(), StoreError> {
        self.lock()
            .insert(id.storage_key().to_owned(), (id.clone(), session));
        Ok(())
    }

    async fn get_and_touch(&self, id: &SessionId) -> Result<Option<GatewaySession>, StoreError> {
        let key = id.storage_key();
        let now = SystemTime::now();
        let mut map = self.lock();
        match map.get_mut(key) {
            Some((_, s)) if s.is_expired(&self.timeouts, now) => {
                map.remove(key);
                Ok(None)
            }
            Some((_, s)) => {
                s.last_seen = now;
                Ok(Some(s.clone()))
            }
            None => Ok(None),
        }
    }

    async fn get(&self, id: &SessionId) -> Result<Option<GatewaySession>, StoreError> {
        let now = SystemTime::now();
        Ok(self
            .lock()
            .get(id.storage_key())
            .filter(|(_, s)| !s.is_expired(&self.timeouts, now))
            .map(|(_, s)| s.clone()))
    }

    async fn set_qlik(
        &self,
        id: &SessionId,
        qlik: Option<QlikSession>,
    ) -> Result<bool, StoreError> {
        match self.lock().get_mut(id.storage_key()) {
            Some((_, s)) => {
                s.qlik = qlik;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn remove(&self, id: &SessionId) -> Result<Option<GatewaySession>, StoreError> {
        Ok(self.lock().remove(id.storage_key()).map(|(_, s)| s))
    }

    async fn sweep(&self) -> Result<Vec<SessionId>, StoreError> {
        let now = SystemTime::now();
        let mut removed = Vec::new();
        self.lock().retain(|_, (id, s)| {
            let keep = !s.is_expired(&self.timeouts, now);
            if !keep {
                removed.push(id.clone());
            }
            keep
        });
        Ok(removed)
    }

    async fn count(&self) -> Result<usize, StoreError> {
        Ok(self.lock().len())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Identity;
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
        store.insert(&id, s).await.unwrap();
        assert!(store.get_and_touch(&id).await.unwrap().is_none());

        let id2 = SessionId::generate();
        let mut s = GatewaySession::new(identity(), "static");
        s.created_at -= Duration::from_secs(3601);
        store.insert(&id2, s).await.unwrap();
        assert_eq!(store.sweep().await.unwrap(), vec![id2.clone()]);
        assert_eq!(store.count().await.unwrap(), 0);

        let id3 = SessionId::generate();
        store
            .insert(&id3, GatewaySession::new(identity(), "static"))
            .await
            .unwrap();
        assert!(store.get_and_touch(&id3).await.unwrap().is_some());
    }
}
