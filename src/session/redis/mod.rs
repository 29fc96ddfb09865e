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

mod connection;
mod events;
mod scripts;
mod store;

use connection::{describe, Manager, Source};
use events::{subscribe, EVENT_BUFFER};
use scripts::{CAS, INSERT, LOCK, TAKE, UNLOCK};

/// How often a read-modify-write is retried when another writer changed the value in between.
const CAS_ATTEMPTS: usize = 5;
/// EXISTS calls per pipeline in a sweep.
const SWEEP_BATCH: usize = 500;

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

    /// A store for `cfg`; nothing is connected yet.
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

    /// A touch within this time of the last one is not written.
    pub fn touch_every(&self) -> Duration {
        self.touch_every
    }

    /// The Redis key holding the session `id`.
    pub fn redis_key(&self, id: &SessionId) -> String {
        format!("{}{}", self.prefix, id.storage_key())
    }

    fn user_key(&self, s: &GatewaySession) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(s.user_key().as_bytes());
        format!("{}user:{}", self.key_prefix, hex::encode(digest))
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
