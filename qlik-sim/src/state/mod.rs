//! The simulator's shared state: proxy sessions, tickets, CSRF tokens, open websockets,
//! engine sessions, counters, recorded requests and injected faults; `expiry` ends sessions
//! on time (the inactivity sweeper, random expiry).

mod expiry;

use crate::engine_session::{self, EngineSession};
use crate::identity::HeaderAuthenticator;
use crate::notifications::{ProxyNotification, SessionEnd};
use crate::options::SimOptions;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

/// How many proxy requests [`crate::SimControl::requests`] keeps.
const MAX_RECORDED: usize = 1000;
/// Ticket lifetime: "valid for one minute" (§1).
const TICKET_TTL: Duration = Duration::from_secs(60);
/// Upper bound of remembered auth-module `targetId`s.
const MAX_TARGETS: usize = 10_000;

/// A proxy session as seen by [`crate::SimControl::sessions`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session id (the cookie value).
    pub session_id: String,
    /// The user's directory.
    pub user_directory: String,
    /// The user's id.
    pub user_id: String,
    /// Attributes given when the session or ticket was added, as (name, value).
    pub attributes: Vec<(String, String)>,
    /// Number of engine websockets currently open with this session.
    pub open_websockets: usize,
}

/// The selections of one proxy engine session with an open app, as seen by
/// [`crate::SimControl::selections`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EngineSelections {
    /// The proxy session the engine session belongs to.
    pub session_id: String,
    /// The open app's id.
    pub app_id: String,
    /// Field name → its selected values' texts, in load order (fields without one are absent).
    pub fields: std::collections::BTreeMap<String, Vec<String>>,
}

/// Event counters, readable through [`crate::SimControl::counters`].
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    /// Requests that reached the QPS API listener (after the TLS handshake).
    pub qps_requests: u64,
    /// Proxy sessions created (QPS `POST session` or ticket redemption).
    pub sessions_created: u64,
    /// Proxy sessions deleted (QPS `DELETE session|user`, Personal API logout, `notify` of
    /// `OnSessionLoggedOut` or `OnSessionClosed`).
    pub sessions_deleted: u64,
    /// Tickets issued by QPS `POST ticket`.
    pub tickets_issued: u64,
    /// Tickets redeemed on the proxy.
    pub tickets_redeemed: u64,
    /// Requests that reached the proxy listener (not the direct engine listener).
    pub proxy_requests: u64,
    /// Proxy websocket upgrades answered with 101.
    pub ws_upgrades: u64,
    /// Websocket upgrades refused with 403 (Origin or CSRF check).
    pub ws_rejected: u64,
    /// Websockets that got `mustAuthenticate: true`.
    pub ws_must_authenticate: u64,
    /// CSRF tokens issued by `GET qps/csrftoken`.
    pub csrf_tokens_issued: u64,
    /// QPS API calls refused by the xrfkey check.
    pub xrfkey_failures: u64,
    /// Proxy sessions ended by inactivity, `expire_*` or `notify` of `OnSessionTimedOut`.
    pub sessions_expired: u64,
    /// Proxy sessions created from a header-authentication header (also in `sessions_created`).
    pub header_sessions: u64,
    /// Requests whose authentication header was refused: not US-ASCII (400) or not naming a
    /// user in the configured form (treated as absent).
    pub header_rejected: u64,
    /// Direct engine websockets (the engine listener) answered with 101.
    pub engine_direct_upgrades: u64,
    /// Direct engine upgrades refused for a missing or malformed `X-Qlik-User` (401).
    pub engine_direct_rejected: u64,
    /// Proxy messages sent by `SimControl::notify*`, one per websocket.
    pub notifications_sent: u64,
}

/// One request seen by the proxy listener (or the direct engine listener, flagged).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path, as sent.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Headers, lowercase name → values.
    pub headers: BTreeMap<String, Vec<String>>,
    /// True for websocket upgrade requests.
    pub websocket: bool,
    /// True for requests to the direct engine listener (not the proxy).
    pub direct_engine: bool,
}

/// A fault injected into the QPS API listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QpsFault {
    /// Every call gets the 403 XSRF answer.
    RejectXrfkey,
    /// Every call is answered only after this delay.
    Delay(Duration),
    /// Every call is answered with this status.
    Status(u16),
}

/// The user behind a proxy session or ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub user_directory: String,
    pub user_id: String,
    pub attributes: Vec<(String, String)>,
}

/// An order to an open websocket task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SocketCmd {
    /// Send this fatal proxy message, then close (code 1000) when `close`.
    Fatal {
        method: &'static str,
        message: Option<&'static str>,
        close: bool,
    },
    /// The simulator is shutting down: close now (code 1001).
    Shutdown,
    /// The simulator is killed: drop the connection without a close frame.
    Abort,
}

/// Which listener a websocket came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketKind {
    /// The virtual proxy (`/{vp}/app/…`): gets proxy messages.
    Proxy,
    /// The direct engine listener: never gets proxy messages.
    Direct,
}

/// A direct engine session, shared by the connections of one user to one app and identity.
struct DirectEngine {
    engine: Arc<Mutex<EngineSession>>,
    sockets: usize,
    /// When the last socket closed with a `/ttl/{sec}`, the session lives until then.
    keep_until: Option<Instant>,
}

struct SessionRecord {
    user: User,
    last_activity: Instant,
    csrf_tokens: HashSet<String>,
    engine_sessions: HashMap<String, Arc<Mutex<EngineSession>>>,
}

struct TicketRecord {
    user: User,
    issued: Instant,
}

struct SocketEntry {
    kind: SocketKind,
    session_id: Option<String>,
    user: Option<(String, String)>,
    tx: mpsc::UnboundedSender<SocketCmd>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, SessionRecord>,
    tickets: HashMap<String, TicketRecord>,
    targets: HashMap<String, String>,
    sockets: HashMap<u64, SocketEntry>,
    direct_engines: HashMap<String, DirectEngine>,
    requests: VecDeque<RecordedRequest>,
    counters: Counters,
    fault: Option<QpsFault>,
}

/// Error from [`Shared::create_session`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SessionExists;

/// State shared by every listener and the control handle.
pub(crate) struct Shared {
    /// Options the simulator was started with.
    pub opts: SimOptions,
    /// Base URL of the proxy listener (no trailing slash, no prefix).
    pub proxy_url: String,
    /// The header of a header-authentication virtual proxy, if it is one.
    pub header_auth: Option<HeaderAuthenticator>,
    /// Ticks on every layout of a live object.
    pub live_tick: AtomicU64,
    inner: Mutex<Inner>,
    sweeper: Notify,
    next_socket: AtomicU64,
}

impl Shared {
    /// New, empty state.
    pub(crate) fn new(
        opts: SimOptions,
        proxy_url: String,
        header_auth: Option<HeaderAuthenticator>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            opts,
            proxy_url,
            header_auth,
            live_tick: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
            sweeper: Notify::new(),
            next_socket: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough data for a simulator.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `{proxy_url}/{vp}` (no trailing slash).
    pub(crate) fn proxy_base(&self) -> String {
        format!("{}{}", self.proxy_url, self.opts.prefix_path())
    }

    /// Applies `f` to the counters.
    pub(crate) fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.lock().counters);
    }

    /// A snapshot of the counters.
    pub(crate) fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    /// Records a request (counting proxy ones), keeping the last [`MAX_RECORDED`].
    pub(crate) fn record(&self, req: RecordedRequest) {
        let mut inner = self.lock();
        if !req.direct_engine {
            inner.counters.proxy_requests += 1;
        }
        if inner.requests.len() >= MAX_RECORDED {
            inner.requests.pop_front();
        }
        inner.requests.push_back(req);
    }

    /// The recorded proxy requests, oldest first.
    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.iter().cloned().collect()
    }

    /// Forgets the recorded proxy requests.
    pub(crate) fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// The injected QPS fault, if any.
    pub(crate) fn fault(&self) -> Option<QpsFault> {
        self.lock().fault
    }

    /// Injects (or clears) a QPS fault.
    pub(crate) fn set_fault(&self, fault: Option<QpsFault>) {
        self.lock().fault = fault;
    }

    fn info(inner: &Inner, id: &str, rec: &SessionRecord) -> SessionInfo {
        SessionInfo {
            session_id: id.to_string(),
            user_directory: rec.user.user_directory.clone(),
            user_id: rec.user.user_id.clone(),
            attributes: rec.user.attributes.clone(),
            open_websockets: inner
                .sockets
                .values()
                .filter(|s| s.kind == SocketKind::Proxy && s.session_id.as_deref() == Some(id))
                .count(),
        }
    }

    fn insert_session(&self, inner: &mut Inner, id: String, user: User) {
        inner.sessions.insert(
            id,
            SessionRecord {
                user,
                last_activity: Instant::now(),
                csrf_tokens: HashSet::new(),
                engine_sessions: HashMap::new(),
            },
        );
        inner.counters.sessions_created += 1;
        self.sweeper.notify_one();
    }

    /// Adds a proxy session with a caller-chosen id (QPS `POST session`).
    pub(crate) fn create_session(
        &self,
        id: &str,
        user: User,
    ) -> Result<SessionInfo, SessionExists> {
        let mut inner = self.lock();
        if inner.sessions.contains_key(id) {
            return Err(SessionExists);
        }
        self.insert_session(&mut inner, id.to_string(), user);
        let rec = &inner.sessions[id];
        Ok(Self::info(&inner, id, rec))
    }

    /// Every live session.
    pub(crate) fn sessions(&self) -> Vec<SessionInfo> {
        let inner = self.lock();
        let mut out: Vec<SessionInfo> = inner
            .sessions
            .iter()
            .map(|(id, rec)| Self::info(&inner, id, rec))
            .collect();
        out.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        out
    }

    /// The selections of every proxy engine session with an open app, by session id.
    pub(crate) fn selections(&self) -> Vec<EngineSelections> {
        let inner = self.lock();
        let mut out: Vec<EngineSelections> = inner
            .sessions
            .iter()
            .flat_map(|(id, rec)| {
                rec.engine_sessions.values().filter_map(|e| {
                    let (app_id, fields) = engine_session::selected_values(e)?;
                    Some(EngineSelections {
                        session_id: id.clone(),
                        app_id,
                        fields,
                    })
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.session_id, &a.app_id).cmp(&(&b.session_id, &b.app_id)));
        out
    }

    /// One session, without refreshing it.
    pub(crate) fn session(&self, id: &str) -> Option<SessionInfo> {
        let inner = self.lock();
        inner
            .sessions
            .get(id)
            .map(|rec| Self::info(&inner, id, rec))
    }

    fn user_matches(user: &User, dir: &str, id: &str) -> bool {
        user.user_directory.eq_ignore_ascii_case(dir) && user.user_id.eq_ignore_ascii_case(id)
    }

    /// The sessions of one user.
    pub(crate) fn user_sessions(&self, dir: &str, id: &str) -> Vec<SessionInfo> {
        self.sessions()
            .into_iter()
            .filter(|s| {
                s.user_directory.eq_ignore_ascii_case(dir) && s.user_id.eq_ignore_ascii_case(id)
            })
            .collect()
    }

    /// Ends one session and orders its websockets to close.
    pub(crate) fn end_session(&self, id: &str, why: SessionEnd) -> Option<SessionInfo> {
        let mut inner = self.lock();
        Self::end_locked(&mut inner, id, why, true)
    }

    /// Removes a session; with `tell_sockets` its websockets get the fatal message and close.
    fn end_locked(
        inner: &mut Inner,
        id: &str,
        why: SessionEnd,
        tell_sockets: bool,
    ) -> Option<SessionInfo> {
        let info = {
            let rec = inner.sessions.get(id)?;
            Self::info(inner, id, rec)
        };
        inner.sessions.remove(id);
        match why {
            SessionEnd::LoggedOut | SessionEnd::Closed => inner.counters.sessions_deleted += 1,
            SessionEnd::TimedOut => inner.counters.sessions_expired += 1,
        }
        if tell_sockets {
            let n = why.notification();
            for sock in inner.sockets.values() {
                if sock.kind == SocketKind::Proxy && sock.session_id.as_deref() == Some(id) {
                    let _ = sock.tx.send(SocketCmd::Fatal {
                        method: n.method,
                        message: n.message,
                        close: true,
                    });
                }
            }
        }
        Some(info)
    }

    /// Sends `n` to every proxy websocket (of one user, when given), closing them when
    /// `close`; a session-ending notification also ends the sessions (all, or the user's).
    /// Returns how many websockets got it.
    pub(crate) fn notify(
        &self,
        user: Option<(&str, &str)>,
        n: ProxyNotification,
        close: bool,
    ) -> usize {
        let mut inner = self.lock();
        let matches = |u: Option<&(String, String)>| match (user, u) {
            (None, _) => true,
            (Some((dir, id)), Some((d, i))) => {
                d.eq_ignore_ascii_case(dir) && i.eq_ignore_ascii_case(id)
            }
            (Some(_), None) => false,
        };
        let mut sent = 0;
        for sock in inner.sockets.values() {
            if sock.kind == SocketKind::Proxy && matches(sock.user.as_ref()) {
                let cmd = SocketCmd::Fatal {
                    method: n.method,
                    message: n.message,
                    close,
                };
                if sock.tx.send(cmd).is_ok() {
                    sent += 1;
                }
            }
        }
        inner.counters.notifications_sent += sent as u64;
        if let Some(why) = n.ends_session {
            let ids: Vec<String> = inner
                .sessions
                .iter()
                .filter(|(_, rec)| {
                    user.is_none_or(|(dir, id)| Self::user_matches(&rec.user, dir, id))
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                Self::end_locked(&mut inner, &id, why, false);
            }
        }
        sent
    }

    /// Ends every session of one user.
    pub(crate) fn end_user_sessions(
        &self,
        dir: &str,
        user_id: &str,
        why: SessionEnd,
    ) -> Vec<SessionInfo> {
        let mut inner = self.lock();
        let ids: Vec<String> = inner
            .sessions
            .iter()
            .filter(|(_, rec)| Self::user_matches(&rec.user, dir, user_id))
            .map(|(id, _)| id.clone())
            .collect();
        ids.iter()
            .filter_map(|id| Self::end_locked(&mut inner, id, why, true))
            .collect()
    }

    /// Ends every session.
    pub(crate) fn end_all_sessions(&self, why: SessionEnd) {
        let mut inner = self.lock();
        let ids: Vec<String> = inner.sessions.keys().cloned().collect();
        for id in ids {
            Self::end_locked(&mut inner, &id, why, true);
        }
    }

    /// Validates a session id and refreshes its inactivity timer. An overdue session is
    /// expired on the spot, so the answer never depends on when the sweeper last ran.
    pub(crate) fn touch(&self, id: &str) -> Option<User> {
        let mut inner = self.lock();
        let timeout = self.opts.inactivity_timeout;
        let overdue = inner.sessions.get(id)?.last_activity.elapsed() >= timeout;
        if overdue {
            Self::end_locked(&mut inner, id, SessionEnd::TimedOut, true);
            return None;
        }
        let rec = inner.sessions.get_mut(id)?;
        rec.last_activity = Instant::now();
        Some(rec.user.clone())
    }

    /// Remembers the URI an unauthenticated request wanted; returns its `targetId`.
    pub(crate) fn new_target(&self, uri: String) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let mut inner = self.lock();
        if inner.targets.len() >= MAX_TARGETS {
            inner.targets.clear();
        }
        inner.targets.insert(id.clone(), uri);
        id
    }

    /// Issues a ticket for `user`; returns the ticket and the `TargetUri` of `target_id`.
    pub(crate) fn issue_ticket(
        &self,
        user: User,
        target_id: Option<&str>,
    ) -> (String, Option<String>) {
        let ticket = crate::util::random_alnum(16);
        let mut inner = self.lock();
        inner.tickets.retain(|_, t| t.issued.elapsed() < TICKET_TTL);
        inner.tickets.insert(
            ticket.clone(),
            TicketRecord {
                user,
                issued: Instant::now(),
            },
        );
        inner.counters.tickets_issued += 1;
        let target = target_id.and_then(|t| inner.targets.get(t).cloned());
        (ticket, target)
    }

    /// Redeems a ticket (once, within its lifetime): creates a session, returns its id and user.
    pub(crate) fn redeem_ticket(&self, ticket: &str) -> Option<(String, User)> {
        let mut inner = self.lock();
        let rec = inner.tickets.remove(ticket)?;
        if rec.issued.elapsed() >= TICKET_TTL {
            return None;
        }
        inner.counters.tickets_redeemed += 1;
        let id = uuid::Uuid::new_v4().to_string();
        self.insert_session(&mut inner, id.clone(), rec.user.clone());
        Some((id, rec.user))
    }

    /// Creates a session for a user named by a header-authentication header; returns its id.
    pub(crate) fn create_header_session(&self, user: User) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let mut inner = self.lock();
        self.insert_session(&mut inner, id.clone(), user);
        inner.counters.header_sessions += 1;
        id
    }

    /// Issues a websocket CSRF token bound to a session.
    pub(crate) fn issue_csrf_token(&self, session_id: &str) -> Option<String> {
        let token = crate::util::random_alnum(32);
        let mut inner = self.lock();
        inner
            .sessions
            .get_mut(session_id)?
            .csrf_tokens
            .insert(token.clone());
        inner.counters.csrf_tokens_issued += 1;
        Some(token)
    }

    /// True when `token` was issued for `session_id`.
    pub(crate) fn check_csrf_token(&self, session_id: &str, token: &str) -> bool {
        self.lock()
            .sessions
            .get(session_id)
            .is_some_and(|s| s.csrf_tokens.contains(token))
    }

    /// The engine session of `session_id` for `key` (app + identity), created if needed.
    /// The flag is true when it already existed (`SESSION_ATTACHED`).
    pub(crate) fn attach_engine(
        &self,
        session_id: &str,
        key: &str,
    ) -> Option<(Arc<Mutex<EngineSession>>, bool)> {
        let mut inner = self.lock();
        let rec = inner.sessions.get_mut(session_id)?;
        if let Some(existing) = rec.engine_sessions.get(key) {
            return Some((existing.clone(), true));
        }
        let fresh = Arc::new(Mutex::new(EngineSession::default()));
        rec.engine_sessions.insert(key.to_string(), fresh.clone());
        Some((fresh, false))
    }

    /// The direct engine session for `key` (user + app + identity), created if needed or
    /// expired; the flag is true when it already existed (`SESSION_ATTACHED`). Counts one
    /// more socket on it: pair with [`Shared::release_direct_engine`].
    pub(crate) fn attach_direct_engine(&self, key: &str) -> (Arc<Mutex<EngineSession>>, bool) {
        let mut inner = self.lock();
        let now = Instant::now();
        inner
            .direct_engines
            .retain(|_, d| d.sockets > 0 || d.keep_until.is_some_and(|t| t > now));
        if let Some(existing) = inner.direct_engines.get_mut(key) {
            existing.sockets += 1;
            existing.keep_until = None;
            return (existing.engine.clone(), true);
        }
        let fresh = Arc::new(Mutex::new(EngineSession::default()));
        inner.direct_engines.insert(
            key.to_string(),
            DirectEngine {
                engine: fresh.clone(),
                sockets: 1,
                keep_until: None,
            },
        );
        (fresh, false)
    }

    /// A direct engine socket closed: the session goes with its last socket, unless a
    /// `/ttl/{sec}` keeps it for `ttl`.
    pub(crate) fn release_direct_engine(&self, key: &str, ttl: Duration) {
        let mut inner = self.lock();
        let Some(d) = inner.direct_engines.get_mut(key) else {
            return;
        };
        d.sockets = d.sockets.saturating_sub(1);
        if d.sockets == 0 {
            if ttl.is_zero() {
                inner.direct_engines.remove(key);
            } else {
                d.keep_until = Some(Instant::now() + ttl);
            }
        }
    }

    /// Registers an open websocket. Returns its id, its command channel and whether its
    /// session (if any) is still alive.
    pub(crate) fn register_socket(
        &self,
        kind: SocketKind,
        session_id: Option<&str>,
        user: Option<&User>,
    ) -> (u64, mpsc::UnboundedReceiver<SocketCmd>, bool) {
        let id = self.next_socket.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        let alive = session_id.is_none_or(|s| inner.sessions.contains_key(s));
        inner.sockets.insert(
            id,
            SocketEntry {
                kind,
                session_id: session_id.map(str::to_string),
                user: user.map(|u| (u.user_directory.clone(), u.user_id.clone())),
                tx,
            },
        );
        (id, rx, alive)
    }

    /// Forgets a closed websocket.
    pub(crate) fn unregister_socket(&self, id: u64) {
        self.lock().sockets.remove(&id);
    }

    /// Orders every open websocket to close (`Shutdown`) or to drop its connection (`Abort`).
    pub(crate) fn shutdown_sockets(&self, cmd: SocketCmd) {
        for sock in self.lock().sockets.values() {
            let _ = sock.tx.send(cmd.clone());
        }
    }
}
