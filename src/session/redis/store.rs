//! The [`SessionStore`] operations on Redis.

use super::*;

#[async_trait]
impl SessionStore for RedisStore {
    async fn insert(
        &self,
        id: &SessionId,
        session: GatewaySession,
        max_per_user: usize,
    ) -> Result<bool, StoreError> {
        let now = SystemTime::now();
        let Some(ttl) = self.ttl_ms(&session, now) else {
            return Ok(true);
        };
        let ms = |t: SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        };
        let last_alive = ms(session.created_at + self.timeouts.absolute);
        let value = &self.seal(id, &session)?;
        let key = &self.redis_key(id);
        let user = &self.user_key(&session);
        let prefix = &self.prefix;
        let mut invocation = self.insert.key(key);
        invocation
            .key(user)
            .arg(value)
            .arg(ttl)
            .arg(last_alive)
            .arg(max_per_user)
            .arg(id.storage_key())
            .arg(prefix)
            .arg(ms(now));
        let stored: i64 = self
            .replicated("did not store the new session", &self.insert, &invocation)
            .await?;
        if stored == 0 {
            return Ok(false);
        }
        self.remember(id);
        Ok(true)
    }

    async fn get_and_touch(
        &self,
        id: &SessionId,
    ) -> Result<Option<Arc<GatewaySession>>, StoreError> {
        self.get_and_touch_owned(id).await.map(|s| s.map(Arc::new))
    }

    async fn get(&self, id: &SessionId) -> Result<Option<GatewaySession>, StoreError> {
        match self.read(id).await? {
            Some(r) if !r.session.is_expired(&self.timeouts, SystemTime::now()) => {
                self.remember(id);
                Ok(Some(r.session))
            }
            _ => Ok(None),
        }
    }

    async fn set_qlik(
        &self,
        id: &SessionId,
        qlik: Option<QlikSession>,
    ) -> Result<bool, StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(Read {
                raw, mut session, ..
            }) = self.read(id).await?
            else {
                return Ok(false);
            };
            let Some(ttl) = self.ttl_ms(&session, SystemTime::now()) else {
                return Ok(false);
            };
            session.qlik = qlik.clone();
            let value = self.seal(id, &session)?;
            match self.compare_and_set(id, &raw, &value, ttl).await? {
                Some(done) => return Ok(done),
                None => continue,
            }
        }
        Err(self.fail(
            "kept changing the session",
            &format!("{CAS_ATTEMPTS} concurrent updates in a row; try again"),
        ))
    }

    async fn remove(&self, id: &SessionId) -> Result<Option<GatewaySession>, StoreError> {
        let key = &self.redis_key(id);
        let event = &format!("logout:{}", id.storage_key());
        let channel = &self.channel;
        let mut invocation = self.take.key(key);
        invocation.arg(channel).arg(event);
        let raw: Option<Vec<u8>> = self
            .replicated("did not answer a session removal", &self.take, &invocation)
            .await?;
        self.forget(id);
        let Some(raw) = raw else {
            return Ok(None);
        };
        match self.keys.open(id.storage_key().as_bytes(), &raw) {
            Ok((plain, _)) => Ok(serde_json::from_slice(&plain).ok()),
            Err(e) => {
                tracing::warn!(session = %id.log_tag(), error = %e, "removed a session that cannot be opened");
                Ok(None)
            }
        }
    }

    async fn sweep(&self) -> Result<Vec<SessionId>, StoreError> {
        let ids: Vec<SessionId> = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut gone = Vec::new();
        for chunk in ids.chunks(SWEEP_BATCH) {
            let keys = &chunk
                .iter()
                .map(|id| self.redis_key(id))
                .collect::<Vec<_>>();
            let exists: Vec<bool> = self
                .call("did not answer the session sweep", |mut c| async move {
                    let mut p = ::redis::pipe();
                    for k in keys {
                        p.exists(k);
                    }
                    p.query_async(&mut c).await
                })
                .await?;
            for (id, live) in chunk.iter().zip(exists) {
                if !live {
                    self.forget(id);
                    gone.push(id.clone());
                }
            }
        }
        Ok(gone)
    }

    async fn count(&self) -> Result<usize, StoreError> {
        let pattern = format!("{}*", self.prefix);
        let deadline = Instant::now() + self.timeout * 5;
        let mut cursor = 0u64;
        let mut n = 0usize;
        loop {
            let p = pattern.as_str();
            let (next, keys): (u64, Vec<String>) = self
                .call("did not answer SCAN", |mut c| async move {
                    ::redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(p)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            n += keys.len();
            cursor = next;
            if cursor == 0 {
                return Ok(n);
            }
            if Instant::now() > deadline {
                return Err(self.fail("took too long to count sessions", &format!("{n} so far")));
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self
            .call("is not reachable", |mut c| async move {
                ::redis::cmd("PING").query_async(&mut c).await
            })
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(self.fail("answered PING oddly", &pong))
        }
    }

    async fn lock(&self, id: &SessionId, ttl: Duration) -> Result<Option<LockGuard>, StoreError> {
        let key = format!("{}lock:qlik:{}", self.key_prefix, id.storage_key());
        let token = {
            use rand::RngCore;
            let mut b = [0u8; 16];
            rand::rng().fill_bytes(&mut b);
            hex::encode(b)
        };
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let (k, t) = (&key, &token);
        let taken: i64 = self
            .call("did not answer a lock request", |mut c| async move {
                self.lock
                    .key(k)
                    .arg(t)
                    .arg(ttl_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if taken != 1 {
            return Ok(None);
        }
        let mut conn = self.connection().await?;
        let unlock = self.unlock.clone();
        let timeout = self.timeout;
        let target = self.target.clone();
        Ok(Some(LockGuard::new(move || async move {
            let r = tokio::time::timeout(
                timeout,
                unlock.key(&key).arg(&token).invoke_async::<i64>(&mut conn),
            )
            .await;
            if !matches!(r, Ok(Ok(_))) {
                // It expires by itself; until then other replicas wait for it.
                tracing::warn!(redis = %target, "could not release a Qlik session lock in Redis; it expires by itself");
            }
        })))
    }

    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<SessionEvent>> {
        let mut ev = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((tx, task)) = ev.as_ref() {
            // Reused only while someone listens: a task whose listeners are all gone ends.
            if tx.receiver_count() > 0 && !task.is_finished() {
                return Some(tx.subscribe());
            }
        }
        let (tx, rx) = tokio::sync::broadcast::channel(EVENT_BUFFER);
        let task = tokio::spawn(subscribe(
            self.source.clone(),
            self.channel.clone(),
            self.timeout,
            self.target.clone(),
            tx.clone(),
        ));
        *ev = Some((tx, task));
        Some(rx)
    }
}
