//! The Redis store: sessions shared by several gateway replicas, encrypted at rest.
//!
//! - **Keys**: `{redis_key_prefix}session:{storage key}`. The storage key is the SHA-256 of the
//!   session id, so neither Redis nor anyone reading it (a `MONITOR`, a backup, a replica) learns
//!   a cookie value.
//! - **Values**: the session's JSON sealed with XChaCha20-Poly1305 ([`super::crypto`]), the storage
//!   key as associated data (a value copied onto another session's key does not open). Sessions
//!   sealed with an old key (`old_encryption_key_files`) still open and are re-sealed with the
//!   current key the next time they are touched.
//! - **Expiry**: every write sets `PX` to what is left of the session: the smaller of the idle
//!   and the absolute remainder. Redis deletes it by itself at that point. A touch rewrites the
//!   value with a new `last_seen` and a new `PX` (sliding idle expiry), at most once per
//!   [`RedisStore::touch_every`] per session so that a burst of requests costs one write. The
//!   absolute limit can never be extended: the TTL is capped by `created_at + absolute_timeout`,
//!   and reads check both limits again with the gateway's clock.
//! - **Concurrency**: read-modify-write goes through a compare-and-set script (the new value
//!   only replaces the exact value that was read), so a touch never overwrites a Qlik session
//!   that another request or replica stored in between, and `set_qlik` never resurrects a session
//!   that was logged out or expired meanwhile.
//! - **Failures**: every call has `redis_timeout`; errors become [`StoreError`]s that name the
//!   server (`redis://host:port/db`, never the password), which the request path answers with
//!   503 (fail closed: never 401, never a login loop). The connection manager reconnects by
//!   itself; a connection that keeps failing in a way it does not handle (a server stuck in
//!   `LOADING`, an unanswered socket) is replaced, so the gateway recovers without restart.
//! - **Sentinel** (`session.redis_sentinels`): the master is asked from the sentinels (and its
//!   `ROLE` checked) when a connection is built: on the first call, and after every failure that
//!   drops the connection (refused, dropped, timed out, `READONLY` from a demoted master), so a
//!   failover is followed without a restart. The event subscription resolves the master at each
//!   (re)subscription.
//! - **Replication**: a login's new session and a logout's removal are `WAIT`ed for on every
//!   replica the master has connected before the answer goes out, so a failover (the sentinels
//!   promoting a replica) loses no issued session and brings back no logged-out one. Touches
//!   and Qlik session updates are not waited for: losing one costs little (see `replicated`).
//! - **Sweep**: Redis expires keys itself, so there is nothing to delete. What the sweep still
//!   does is what the memory store's sweep is for: report sessions that ended, so their open
//!   websockets on this replica are closed. The store remembers the sessions it served (ids
//!   live only in memory, as in the memory store) and the sweep asks Redis which of them are
//!   gone: expired, or logged out on another replica.
//! - **Events**: a removal (logout, a login replacing a session) publishes
//!   `logout:{storage key}` on `{redis_key_prefix}events`, in the same script that deletes the
//!   session. Every replica subscribes ([`SessionStore::events`]) and closes that session's
//!   websockets at once; the subscription reconnects and resubscribes by itself, and whatever
//!   was published while it was down is caught by the sweep (a resubscription triggers one).
//! - **Sessions per user**: `{redis_key_prefix}user:{SHA-256 of directory\\id, lowercased}`, a
//!   sorted set of the user's sessions' storage keys, each scored with the last moment it can
//!   live (its absolute timeout). A login counts the live ones and stores the new session in
//!   one script, so `session.max_sessions_per_user` holds across replicas; sessions that ended
//!   are dropped from the set as they are counted, and the set expires with its last session.
//!   The script reads session keys it is not given as `KEYS`: fine on one server or Sentinel,
//!   not on Redis Cluster (which the store does not support).
//! - **Qlik session lock**: `{redis_key_prefix}lock:qlik:{storage key}`, taken with `SET NX PX`
//!   and a random token, released by compare-and-delete, so that one replica at a time creates a
//!   session's Qlik session (`qlik_sessions`). Its lifetime outlasts the QPS calls, so
//!   it expires by itself only when its holder died.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{
    Client, ErrorKind, FromRedisValue, IntoConnectionInfo, RedisError, RedisResult, Script,
    ScriptInvocation,
};
use async_trait::async_trait;

use super::config::RedisStoreConfig;
use super::crypto::Keyring;
use super::{
    GatewaySession, LockGuard, QlikSession, SessionEvent, SessionId, SessionStore, StoreError,
    Timeouts,
};

/// Stores a new session `KEYS[1]` = `ARGV[1]` (expiring in `ARGV[2]` ms) unless the user's set of
/// sessions `KEYS[2]` already holds `ARGV[4]` live ones; then returns 0 and stores nothing.
/// Members are storage keys scored with the latest time they can be alive (`ARGV[3]`, ms since the
/// epoch: the absolute timeout); members past it, or whose session is gone (logout, idle expiry),
/// are removed as they are counted. `ARGV[5]` is the storage key, `ARGV[6]` the sessions' key
/// prefix, `ARGV[7]` now (ms).
const INSERT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[7])
local live = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('EXISTS', ARGV[6] .. m) == 1 then
    live = live + 1
  else
    redis.call('ZREM', KEYS[2], m)
  end
end
if live >= tonumber(ARGV[4]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[2], last[2])
return 1
";

/// Replaces `KEYS[1]` with `ARGV[2]` (expiring in `ARGV[3]` ms) only if it still holds exactly
/// `ARGV[1]`. Returns 1 when replaced, 0 when the key is gone, -1 when it holds another value.
const CAS: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if cur ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// GET and DEL in one step (GETDEL needs Redis 6.2; this works on any version); when there was
/// a session, publishes `ARGV[2]` on channel `ARGV[1]` (its logout event).
const TAKE: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return v
";

/// Takes lock `KEYS[1]` with token `ARGV[1]` for `ARGV[2]` ms: 1 taken (or already ours: the
/// call may run twice), 0 held by someone else.
const LOCK: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then return 1 end
if cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Deletes lock `KEYS[1]` only if it still holds our token `ARGV[1]` (it may have expired and
/// been taken by someone else).
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Buffered events per listener before the slowest one starts missing some (the sweep is the
/// backstop for those).
const EVENT_BUFFER: usize = 1024;
/// The event subscription is checked with a PING this often (a server that stopped answering
/// leaves the socket open).
const SUBSCRIPTION_PING: Duration = Duration::from_secs(10);
/// The longest pause between attempts to get the event subscription back.
const RESUBSCRIBE_MAX_DELAY: Duration = Duration::from_secs(1);

/// How often a read-modify-write is retried when another writer changed the value in between.
const CAS_ATTEMPTS: usize = 5;
/// EXISTS calls per pipeline in a sweep.
const SWEEP_BATCH: usize = 500;
/// A connection that keeps failing is replaced at most this often.
const REBUILD_EVERY: Duration = Duration::from_secs(1);

/// Where connections go: one server, or whichever server the sentinels name master right now.
#[derive(Clone)]
enum Source {
    Direct(Box<Client>),
    /// Asked again for every new connection (the first, and each one after a failure), so a
    /// failover is followed without a restart. Resolving needs `&mut`: one at a time.
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

impl Source {
    /// A client for the current master. Through Sentinel this asks the sentinels and checks
    /// with `ROLE` that the server named is a master (not one demoted a moment ago).
    async fn client(&self) -> RedisResult<Client> {
        match self {
            Source::Direct(c) => Ok(Client::clone(c)),
            Source::Sentinel(s) => s.lock().await.async_get_client().await,
        }
    }

    fn is_sentinel(&self) -> bool {
        matches!(self, Source::Sentinel(_))
    }
}

struct Manager {
    conn: ConnectionManager,
    built: Instant,
}

/// Sessions in Redis. Cheap to share (`Arc`); one multiplexed connection for everything.
pub struct RedisStore {
    source: Source,
    manager_config: ConnectionManagerConfig,
    manager: Mutex<Option<Manager>>,
    prefix: String,
    keys: Keyring,
    timeouts: Timeouts,
    timeout: Duration,
    /// `redis://host:port/db`, for messages.
    target: String,
    /// The password, only to scrub it from error texts should a library ever include it.
    password: Option<String>,
    /// Sessions this replica has served: storage key → id (for the sweep).
    known: Mutex<HashMap<String, SessionId>>,
    /// A touch within this time of the last one is not written (see the module docs).
    touch_every: Duration,
    cas: Script,
    insert: Script,
    take: Script,
    lock: Script,
    unlock: Script,
    /// `{redis_key_prefix}`: the lock keys live next to the sessions.
    key_prefix: String,
    /// `{redis_key_prefix}events`: the pub/sub channel of session events.
    channel: String,
    /// The event fan-out and the task feeding it from the subscription, once someone listens.
    events: Mutex<
        Option<(
            tokio::sync::broadcast::Sender<SessionEvent>,
            tokio::task::JoinHandle<()>,
        )>,
    >,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.target)
            .field("prefix", &self.prefix)
            .field("keys", &self.keys)
            .field("timeouts", &self.timeouts)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A session as read: the exact stored bytes (for compare-and-set) and what they hold.
struct Read {
    raw: Vec<u8>,
    session: GatewaySession,
    /// Sealed with an old key: worth re-sealing.
    old_key: bool,
}

impl RedisStore {
    /// [`SessionStore::get_and_touch`], before it is shared.
    async fn get_and_touch_owned(
        &self,
        id: &SessionId,
    ) -> Result<Option<GatewaySession>, StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let now = SystemTime::now();
            let Some(Read {
                raw,
                mut session,
                old_key,
            }) = self.read(id).await?
            else {
                // Not forgotten: if this replica knew it, the sweep reports it as ended and its
                // websockets here are closed (forgetting would leave them open for good).
                return Ok(None);
            };
            if session.is_expired(&self.timeouts, now) {
                // Redis would delete it within milliseconds; the gateway's clock says it is over.
                // Kept known for the sweep, as above.
                self.delete(id).await?;
                return Ok(None);
            }
            self.remember(id);
            let recent = now
                .duration_since(session.last_seen)
                .map(|d| d < self.touch_every)
                .unwrap_or(true);
            if recent && !old_key {
                return Ok(Some(session));
            }
            session.last_seen = now.max(session.last_seen);
            let Some(ttl) = self.ttl_ms(&session, now) else {
                return Ok(None);
            };
            let value = self.seal(id, &session)?;
            match self.compare_and_set(id, &raw, &value, ttl).await? {
                Some(true) => return Ok(Some(session)),
                // Gone meanwhile: left known for the sweep, as above.
                Some(false) => return Ok(None),
                // Someone else wrote it (a touch or a Qlik session): read again.
                None => continue,
            }
        }
        // Very busy session: every attempt lost the race to another writer, which touched it.
        Ok(self.read(id).await?.map(|r| r.session))
    }

    /// Builds the client. Does not connect: the first call does (so the gateway starts, not
    /// ready, while Redis is down, and `check-config` never needs Redis).
    pub fn new(cfg: &RedisStoreConfig, timeouts: Timeouts) -> Result<Self, StoreError> {
        let target = cfg.target.clone();
        let bad = |what: String| StoreError(format!("Redis at {target}: {what}"));
        let ca = match &cfg.ca_cert {
            Some(ca)
                if cfg.url.starts_with("rediss:")
                    || cfg.sentinel.as_ref().is_some_and(|s| s.tls) =>
            {
                Some(std::fs::read(ca).map_err(|e| {
                    bad(format!(
                        "cannot read session.redis_ca_cert {}: {e}",
                        ca.display()
                    ))
                })?)
            }
            _ => None,
        };
        let certs = |pem: &Vec<u8>| ::redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        };
        let (source, url_password) = if let Some(sc) = &cfg.sentinel {
            let mut addrs = Vec::new();
            for n in &sc.nodes {
                let info = n.as_str().into_connection_info().map_err(|e| {
                    bad(format!(
                        "session.redis_sentinels is not usable ({})",
                        e.category()
                    ))
                })?;
                addrs.push(info.addr().clone());
            }
            let mut b = SentinelClientBuilder::new(addrs, &sc.master, SentinelServerType::Master)
                .map_err(|e| bad(format!("cannot set up Sentinel: {}", e.category())))?;
            if let Some(pw) = &cfg.password {
                b = b.set_client_to_redis_password(pw);
            }
            if sc.tls {
                b = b.set_client_to_redis_tls_mode(::redis::TlsMode::Secure);
                if let Some(pem) = &ca {
                    b = b
                        .set_client_to_redis_certificates(certs(pem))
                        .set_client_to_sentinel_certificates(certs(pem));
                }
            }
            let client = b
                .build()
                .map_err(|e| bad(format!("cannot set up Sentinel: {}", e.category())))?;
            (
                Source::Sentinel(Arc::new(tokio::sync::Mutex::new(client))),
                None,
            )
        } else {
            let mut info = cfg.url.as_str().into_connection_info().map_err(|e| {
                bad(format!(
                    "session.redis_url is not usable ({})",
                    e.category()
                ))
            })?;
            let url_password = info.redis_settings().password().map(str::to_string);
            if let Some(pw) = &cfg.password {
                let settings = info.redis_settings().clone().set_password(pw);
                info = info.set_redis_settings(settings);
            }
            let client = match &ca {
                Some(pem) => Client::build_with_tls(info, certs(pem)),
                None => Client::open(info),
            }
            .map_err(|e| bad(format!("cannot set up the client: {}", e.category())))?;
            (Source::Direct(Box::new(client)), url_password)
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(1));
        Ok(Self {
            source,
            manager_config,
            manager: Mutex::new(None),
            prefix: format!("{}session:", cfg.key_prefix),
            keys: Keyring::new(&cfg.encryption_key, &cfg.old_encryption_keys),
            timeouts,
            timeout: cfg.timeout,
            target,
            password: cfg.password.clone().or(url_password),
            known: Mutex::new(HashMap::new()),
            touch_every: timeouts.touch_every(),
            cas: Script::new(CAS),
            insert: Script::new(INSERT),
            take: Script::new(TAKE),
            lock: Script::new(LOCK),
            unlock: Script::new(UNLOCK),
            key_prefix: cfg.key_prefix.clone(),
            channel: format!("{}events", cfg.key_prefix),
            events: Mutex::new(None),
        })
    }

    /// Touches closer together than this are not written: the idle timer would move by less,
    /// and a page firing many requests at once costs one write, not one per request.
    pub fn touch_every(&self) -> Duration {
        self.touch_every
    }

    /// The Redis key of a session.
    pub fn redis_key(&self, id: &SessionId) -> String {
        format!("{}{}", self.prefix, id.storage_key())
    }

    /// The Redis key of the set of a user's sessions. Hashed like session ids, so that Redis
    /// does not hold user names in the clear either.
    fn user_key(&self, s: &GatewaySession) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(s.user_key().as_bytes());
        format!("{}user:{}", self.key_prefix, hex::encode(digest))
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
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

    /// Drops a connection that failed in a way the manager does not repair by itself (it
    /// reconnects on dropped sockets, not on timeouts or handshake errors). The next call
    /// builds a fresh one.
    fn maybe_rebuild(&self) {
        let mut m = self.manager.lock().unwrap_or_else(|p| p.into_inner());
        if m.as_ref()
            .is_some_and(|m| m.built.elapsed() >= REBUILD_EVERY)
        {
            *m = None;
        }
    }

    fn no_answer(&self) -> String {
        format!(
            "no answer within {} (session.redis_timeout)",
            humantime::format_duration(self.timeout)
        )
    }

    fn fail(&self, what: &str, detail: &str) -> StoreError {
        let mut msg = format!("Redis at {} {what}: {detail}", self.target);
        if let Some(pw) = self.password.as_deref().filter(|p| !p.is_empty()) {
            msg = msg.replace(pw, "<redacted>");
        }
        StoreError(msg)
    }

    /// Runs one Redis call within `redis_timeout`, mapping failures to [`StoreError`]. A call
    /// that found its connection dropped (Redis restarted, a failover, an idle connection cut by
    /// a firewall) is tried once more on the fresh connection, within the same time limit, so
    /// the first request after a restart does not fail. Every call here may run twice: reads,
    /// `SET` of a new session and compare-and-set (whose second run sees its own write and
    /// re-reads) are unaffected; a removal whose reply was lost finds nothing the second time,
    /// so that logout only clears the cookie here (its websockets close at the next sweep).
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, StoreError>
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

    /// Runs a login's or a logout's script, then waits (`WAIT`, on the same connection, so it
    /// covers that write) until every replica the master has connected holds it. A cookie is
    /// only issued for a session that a failover keeps, and a logout is only confirmed once a
    /// failover cannot bring the session back. A replica that does not confirm within half of
    /// `redis_timeout` fails the call (503, try again) rather than risk that. Touches and Qlik
    /// sessions are not waited for: losing one costs a slightly older idle timer or a new Qlik
    /// session, which the gateway creates by itself.
    async fn replicated<T: FromRedisValue>(
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

    /// How many replicas the current master has connected (`ROLE`); 0 for a server without any.
    async fn connected_replicas(&self) -> Result<usize, StoreError> {
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

    fn remember(&self, id: &SessionId) {
        let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
        k.entry(id.storage_key().to_owned())
            .or_insert_with(|| id.clone());
    }

    fn forget(&self, id: &SessionId) {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id.storage_key());
    }

    /// What is left of a session at `now`, as a Redis `PX` (at least 1 ms); `None` when over.
    fn ttl_ms(&self, s: &GatewaySession, now: SystemTime) -> Option<u64> {
        let left = s.expires_at(&self.timeouts).duration_since(now).ok()?;
        let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
        (ms > 0).then_some(ms)
    }

    fn seal(&self, id: &SessionId, s: &GatewaySession) -> Result<Vec<u8>, StoreError> {
        let json = serde_json::to_vec(s)
            .map_err(|e| StoreError(format!("cannot serialize the session: {e}")))?;
        Ok(self.keys.seal(id.storage_key().as_bytes(), &json))
    }

    /// Reads and opens a session. Values that do not open (another key, tampering) or do not
    /// parse count as no session: the user logs in again, and the log says why.
    async fn read(&self, id: &SessionId) -> Result<Option<Read>, StoreError> {
        let key = &self.redis_key(id);
        let raw: Option<Vec<u8>> = self
            .call("did not answer GET", |mut c| async move {
                ::redis::cmd("GET").arg(key).query_async(&mut c).await
            })
            .await?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        match decode(&self.keys, id, &raw) {
            Ok((session, old_key)) => Ok(Some(Read {
                raw,
                session,
                old_key,
            })),
            Err(e) => {
                tracing::warn!(session = %id.log_tag(), error = %e, "session in Redis cannot be used; treating it as logged out");
                Ok(None)
            }
        }
    }

    /// Replaces `old` with `new` if nothing changed in between: `Some(true)` replaced,
    /// `Some(false)` gone, `None` changed by someone else.
    async fn compare_and_set(
        &self,
        id: &SessionId,
        old: &[u8],
        new: &[u8],
        ttl_ms: u64,
    ) -> Result<Option<bool>, StoreError> {
        let key = &self.redis_key(id);
        let r: i64 = self
            .call("did not answer a session update", |mut c| async move {
                self.cas
                    .key(key)
                    .arg(old)
                    .arg(new)
                    .arg(ttl_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(match r {
            1 => Some(true),
            0 => Some(false),
            _ => None,
        })
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let key = &self.redis_key(id);
        self.call("did not answer DEL", |mut c| async move {
            ::redis::cmd("DEL")
                .arg(key)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
    }
}

/// An error Redis answered to a command (the connection itself is fine).
/// Why a value read from Redis is no session.
#[derive(Debug, thiserror::Error)]
enum DecodeError {
    #[error("cannot be opened: {0}")]
    Open(super::crypto::OpenError),
    #[error("does not parse: {0}")]
    Parse(serde_json::Error),
}

/// A session record as read from Redis: opened with `keys` for `id`, parsed. Also says whether
/// an old key sealed it. Pure, so that the decoding of what Redis holds is tested on its own.
fn decode(
    keys: &Keyring,
    id: &SessionId,
    raw: &[u8],
) -> Result<(GatewaySession, bool), DecodeError> {
    let (plain, old_key) = keys
        .open(id.storage_key().as_bytes(), raw)
        .map_err(DecodeError::Open)?;
    let session = serde_json::from_slice(&plain).map_err(DecodeError::Parse)?;
    Ok((session, old_key))
}

fn is_reply_error(e: &RedisError) -> bool {
    use ::redis::ServerErrorKind as S;
    matches!(
        e.kind(),
        ErrorKind::Server(S::ResponseError | S::NoScript | S::ExecAbort)
            | ErrorKind::UnexpectedReturnType
    )
}

fn describe(e: &RedisError) -> String {
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

/// Feeds `tx` from the `channel` subscription until every receiver is gone, reconnecting and
/// resubscribing whenever the subscription is lost (a [`SessionEvent::Resubscribed`] tells the
/// listeners that events may have been missed meanwhile).
async fn subscribe(
    source: Source,
    channel: String,
    timeout: Duration,
    target: String,
    tx: tokio::sync::broadcast::Sender<SessionEvent>,
) {
    use futures_util::StreamExt;
    let mut delay = Duration::from_millis(50);
    let mut gap = false;
    let mut failures = 0u32;
    loop {
        let connect = async {
            // Through Sentinel, each (re)subscription goes to the master of the moment.
            let mut p = source.client().await?.get_async_pubsub().await?;
            p.subscribe(&channel).await?;
            RedisResult::Ok(p)
        };
        let attempt = tokio::select! {
            _ = tx.closed() => return,
            r = tokio::time::timeout(timeout, connect) => r,
        };
        match attempt {
            Ok(Ok(pubsub)) => {
                if gap {
                    tracing::info!(redis = %target, channel = %channel, "session events: subscribed again");
                    let _ = tx.send(SessionEvent::Resubscribed);
                }
                gap = true;
                failures = 0;
                delay = Duration::from_millis(50);
                let (mut sink, mut stream) = pubsub.split();
                let mut ping = tokio::time::interval(SUBSCRIPTION_PING);
                ping.reset();
                let why = loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        m = stream.next() => match m {
                            Some(m) => {
                                let Ok(payload) = m.get_payload::<String>() else { continue };
                                if let Some(key) = payload.strip_prefix("logout:") {
                                    let _ = tx.send(SessionEvent::LoggedOut(key.to_string()));
                                }
                            }
                            None => break "connection lost",
                        },
                        _ = ping.tick() => {
                            let pong = tokio::time::timeout(timeout, sink.ping::<::redis::Value>()).await;
                            if !matches!(pong, Ok(Ok(_))) {
                                break "no answer to PING";
                            }
                        }
                    }
                };
                tracing::warn!(redis = %target, channel = %channel, "session events: subscription lost ({why}); resubscribing (the sweep covers the gap)");
            }
            Ok(Err(e)) => {
                gap = true;
                failures += 1;
                if failures == 1 {
                    tracing::warn!(redis = %target, error = %describe(&e), "session events: cannot subscribe; retrying");
                }
            }
            Err(_) => {
                gap = true;
                failures += 1;
                if failures == 1 {
                    tracing::warn!(redis = %target, "session events: no answer to SUBSCRIBE within {}; retrying", humantime::format_duration(timeout));
                }
            }
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RESUBSCRIBE_MAX_DELAY);
    }
}

/// Property tests (`PROPTEST_CASES` sets the case count; see the README's long run).
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::identity::Identity;
    use crate::session::crypto::KeyMaterial;
    use crate::session::{QlikSession, Secret};
    use proptest::prelude::*;

    fn keys() -> (Keyring, Keyring) {
        let (current, old) = (KeyMaterial::new([7; 32]), KeyMaterial::new([9; 32]));
        (
            Keyring::new(&current, std::slice::from_ref(&old)),
            Keyring::new(&old, &[]),
        )
    }

    fn time() -> impl Strategy<Value = SystemTime> {
        (0u64..4_000_000_000, 0u32..1_000_000_000)
            .prop_map(|(s, n)| SystemTime::UNIX_EPOCH + Duration::new(s, n))
    }

    fn session() -> impl Strategy<Value = GatewaySession> {
        let qlik = (
            any::<String>(),
            prop::option::of(any::<String>()),
            time(),
            any::<String>(),
        )
            .prop_map(|(cookie_value, csrf_token, created_at, node)| QlikSession {
                cookie_value,
                csrf_token,
                created_at,
                node,
            });
        (
            (
                any::<String>(),
                any::<String>(),
                prop::collection::vec((any::<String>(), any::<String>()), 0..3),
            ),
            any::<String>(),
            (time(), time()),
            prop::option::of(qlik),
            prop::option::of(any::<String>()),
        )
            .prop_map(
                |(
                    (user_directory, user_id, attributes),
                    provider,
                    (created_at, last_seen),
                    qlik,
                    id_token,
                )| GatewaySession {
                    identity: Identity {
                        user_directory,
                        user_id,
                        attributes,
                    },
                    provider,
                    created_at,
                    last_seen,
                    qlik,
                    id_token: id_token.map(Secret::new),
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever Redis hands back (another writer, corruption, an attacker with Redis
        /// access): no panic, and nothing that was not sealed for this session opens.
        #[test]
        fn arbitrary_values_do_not_decode(raw in prop::collection::vec(any::<u8>(), 0..200)) {
            let (keys, _) = keys();
            prop_assert!(decode(&keys, &SessionId::generate(), &raw).is_err());
        }

        /// Sealed plaintext that is not a session (a bug, an old format): an error, no panic.
        #[test]
        fn sealed_junk_does_not_panic(plain in prop::collection::vec(any::<u8>(), 0..200), json in "\\{[ -~]{0,60}\\}") {
            let (keys, _) = keys();
            let id = SessionId::generate();
            let _ = decode(&keys, &id, &keys.seal(id.storage_key().as_bytes(), &plain));
            let _ = decode(&keys, &id, &keys.seal(id.storage_key().as_bytes(), json.as_bytes()));
        }

        /// Every session comes back as it was written, under the current key or an old one, and
        /// only for the session it was sealed for; a flipped byte never opens.
        #[test]
        fn sessions_round_trip(s in session(), old in any::<bool>(), flip in any::<prop::sample::Index>()) {
            let (keys, old_keys) = keys();
            let id = SessionId::generate();
            let json = serde_json::to_vec(&s).unwrap();
            let sealer = if old { &old_keys } else { &keys };
            let raw = sealer.seal(id.storage_key().as_bytes(), &json);
            let (back, was_old) = decode(&keys, &id, &raw).unwrap();
            prop_assert_eq!(was_old, old);
            prop_assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&s).unwrap());
            prop_assert!(decode(&keys, &SessionId::generate(), &raw).is_err());
            let mut bad = raw.clone();
            bad[flip.index(raw.len())] ^= 0x01;
            prop_assert!(decode(&keys, &id, &bad).is_err());
        }
    }
}
