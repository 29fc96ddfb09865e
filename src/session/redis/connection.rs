//! Connections: one server or the master the sentinels name, rebuilt when one keeps failing;
//! every call under `redis_timeout`, with errors that name the server.

use super::*;

/// A connection that keeps failing is replaced at most this often.
const REBUILD_EVERY: Duration = Duration::from_secs(1);

/// Where connections go: one server, or whichever server the sentinels name master right now.
#[derive(Clone)]
pub(super) enum Source {
    Direct(Box<Client>),
    /// Asked again for every new connection (the first, and each one after a failure), so a
    /// failover is followed without a restart. Resolving needs `&mut`: one at a time.
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

impl Source {
    /// A client for the current master. Through Sentinel this asks the sentinels and checks
    /// with `ROLE` that the server named is a master (not one demoted a moment ago).
    pub(super) async fn client(&self) -> RedisResult<Client> {
        match self {
            Source::Direct(c) => Ok(Client::clone(c)),
            Source::Sentinel(s) => s.lock().await.async_get_client().await,
        }
    }

    pub(super) fn is_sentinel(&self) -> bool {
        matches!(self, Source::Sentinel(_))
    }
}

pub(super) struct Manager {
    conn: ConnectionManager,
    built: Instant,
}

impl RedisStore {
    pub(super) async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(m) = self
            .manager
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(m.conn.clone());
        }
        // Through Sentinel: the master of the moment (the manager then reconnects to that
        // address only; a failure drops it, see `maybe_rebuild`, and the next call asks again).
        let client = self
            .source
            .client()
            .await
            .map_err(|e| self.fail("has no reachable master", &describe(&e)))?;
        let mut m = self.manager.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = m.as_ref() {
            return Ok(m.conn.clone());
        }
        let conn = ConnectionManager::new_lazy_with_config(client, self.manager_config.clone())
            .map_err(|e| self.fail("cannot set up a connection", &e.to_string()))?;
        *m = Some(Manager {
            conn: conn.clone(),
            built: Instant::now(),
        });
        Ok(conn)
    }

    pub(super) fn maybe_rebuild(&self) {
        let mut m = self.manager.lock().unwrap_or_else(|p| p.into_inner());
        if m.as_ref()
            .is_some_and(|m| m.built.elapsed() >= REBUILD_EVERY)
        {
            *m = None;
        }
    }

    pub(super) fn no_answer(&self) -> String {
        format!(
            "no answer within {} (session.redis_timeout)",
            humantime::format_duration(self.timeout)
        )
    }

    pub(super) fn fail(&self, what: &str, detail: &str) -> StoreError {
        let mut msg = format!("Redis at {} {what}: {detail}", self.target);
        if let Some(pw) = self.password.as_deref().filter(|p| !p.is_empty()) {
            msg = msg.replace(pw, "<redacted>");
        }
        StoreError(msg)
    }

    pub(super) async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut retried = false;
        loop {
            let conn = match tokio::time::timeout_at(deadline, self.connection()).await {
                Ok(c) => c?,
                Err(_) => return Err(self.fail(what, &self.no_answer())),
            };
            match tokio::time::timeout_at(deadline, f(conn)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if e.is_connection_dropped() && !retried => {
                    // Through Sentinel the dropped server may be a master that is gone: ask the
                    // sentinels again rather than reconnect to the same address.
                    if self.source.is_sentinel() {
                        self.maybe_rebuild();
                    }
                    retried = true;
                }
                Ok(Err(e)) => {
                    if !is_reply_error(&e) {
                        self.maybe_rebuild();
                    }
                    let detail = if e.is_timeout() {
                        self.no_answer()
                    } else {
                        describe(&e)
                    };
                    return Err(self.fail(what, &detail));
                }
                Err(_) => {
                    self.maybe_rebuild();
                    return Err(self.fail(what, &self.no_answer()));
                }
            }
        }
    }

    pub(super) async fn replicated<T: FromRedisValue>(
        &self,
        what: &str,
        script: &Script,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let replicas = self.connected_replicas().await?;
        let wait_ms = u64::try_from((self.timeout / 2).as_millis()).unwrap_or(u64::MAX);
        let (value, acked): (T, usize) = self
            .call(what, |mut c| async move {
                ::redis::pipe()
                    .load_script(script)
                    .ignore()
                    .invoke_script(invocation)
                    .cmd("WAIT")
                    .arg(replicas)
                    .arg(wait_ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if acked < replicas {
            return Err(self.fail(
                what,
                &format!(
                    "the write reached {acked} of the master's {replicas} replicas within {}; \
                     not confirmed, so that a failover cannot undo it (check the replicas' \
                     replication link)",
                    humantime::format_duration(Duration::from_millis(wait_ms))
                ),
            ));
        }
        Ok(value)
    }

    pub(super) async fn connected_replicas(&self) -> Result<usize, StoreError> {
        let role: Vec<::redis::Value> = self
            .call("did not answer ROLE", |mut c| async move {
                ::redis::cmd("ROLE").query_async(&mut c).await
            })
            .await?;
        Ok(match role.get(2) {
            Some(::redis::Value::Array(replicas)) => replicas.len(),
            _ => 0,
        })
    }
}

/// An error Redis answered to a command (the connection itself is fine).
pub(super) fn is_reply_error(e: &RedisError) -> bool {
    use ::redis::ServerErrorKind as S;
    matches!(
        e.kind(),
        ErrorKind::Server(S::ResponseError | S::NoScript | S::ExecAbort)
            | ErrorKind::UnexpectedReturnType
    )
}

/// What a Redis error means for an operator (never the password).
pub(super) fn describe(e: &RedisError) -> String {
    if e.is_connection_refusal() {
        "connection refused (is Redis running?)".into()
    } else if e.is_connection_dropped() {
        "connection lost (Redis restarted or the network dropped it); reconnecting".into()
    } else if e.kind() == ErrorKind::AuthenticationFailed {
        format!("authentication failed; check the password (session.redis_password_file or the one in session.redis_url) and the ACL user ({e})")
    } else {
        e.to_string()
    }
}
