//! Prometheus metrics: one [`Metrics`] (one registry) per `AppState`, so gateways
//! in one process (the tests) never share counters. Served as text on `/_gateway/metrics`, on the
//! public listener or, with `server.admin_listen`, on the admin listener only.
//!
//! Every label value comes from a fixed set (a route class, a status code, a provider name, an
//! error code), never from a path, a user or anything else a client or Qlik chooses, so the number
//! of series stays bounded whatever the traffic.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `qlik_gateway_http_requests_total` | counter | `route_class` (gateway, qlik, websocket, mashup), `status` |
//! | `qlik_gateway_http_request_duration_seconds` | histogram | `route_class`: time to the response head (101 for websockets) |
//! | `qlik_gateway_proxy_phase_duration_seconds` | histogram | `phase` (session, qlik_session, upstream_connection, upstream_response): where a proxied request's time to its head went |
//! | `qlik_gateway_websockets_open` | gauge | — (engine websockets and proxied dev-server websockets) |
//! | `qlik_gateway_websocket_frames_total` | counter | `direction` (client_to_qlik, qlik_to_client): text and binary messages relayed |
//! | `qlik_gateway_websocket_bytes_total` | counter | `direction`: their payload bytes |
//! | `qlik_gateway_logins_total` | counter | `provider`, `outcome` (success, challenge, refused), `reason` (the error code when refused, else "") |
//! | `qlik_gateway_logouts_total` | counter | — |
//! | `qlik_gateway_qlik_sessions_total` | counter | `event` (created, recreated, failed) |
//! | `qlik_gateway_qps_request_duration_seconds` | histogram | `call` (create_session, request_ticket, delete_session, probe) |
//! | `qlik_gateway_qps_errors_total` | counter | `call`, `code` (qps_unreachable, qps_timeout, qps_tls, …) |
//! | `qlik_gateway_store_errors_total` | counter | — |
//! | `qlik_gateway_sessions` | gauge | — (live gateway sessions in the store, counted at scrape) |
//! | `qlik_gateway_qlik_notifications_total` | counter | `method` (Qlik's fatal notifications, [`crate::stats`]) |
//! | `qlik_gateway_login_prompts_total` | counter | — (`mustAuthenticate: true` sent to a client) |

mod durations;

use crate::qlik::metrics::QpsMetrics;
use crate::route_class::RouteClass;
use durations::DurationHistogram;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::session::{GatewaySession, QlikSession, SessionId, SessionStore, StoreError};
use crate::sockets::SocketRegistry;
use crate::stats::Stats;

/// `Content-Type` of the OpenMetrics text format, served when the scraper asks for it.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus text format (0.0.4), served otherwise.
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the QPS call latency buckets: a QPS call takes milliseconds to
/// seconds.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds (nanoseconds) of the buckets of request and phase durations: finer than
/// [`LATENCY_BUCKETS`] below a millisecond, where a proxied request takes tens of microseconds,
/// its own steps (session lookup, Qlik session) one or two, and a tail of a few hundred shows
/// only in fine buckets.
const FINE_BUCKETS_NS: &[u64] = &[
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// A step of a request proxied to Qlik (or to the mashup's dev server), timed on its own so that
/// a slow request shows which step was slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the gateway session the cookie names (the store's read and touch).
    Session,
    /// The gateway session's Qlik session: at hand, or created through QPS.
    QlikSession,
    /// Waiting for an upstream connection: a pooled one to finish its previous response, or a
    /// new one to be made (TLS included).
    UpstreamConnection,
    /// From the request handed to its connection to the upstream's response head.
    UpstreamResponse,
}

impl Phase {
    const ALL: [Phase; 4] = [
        Self::Session,
        Self::QlikSession,
        Self::UpstreamConnection,
        Self::UpstreamResponse,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::QlikSession => "qlik_session",
            Self::UpstreamConnection => "upstream_connection",
            Self::UpstreamResponse => "upstream_response",
        }
    }
}

/// Which way a websocket frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToQlik,
    QlikToClient,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::ClientToQlik => "client_to_qlik",
            Self::QlikToClient => "qlik_to_client",
        }
    }
}

/// What happened to a Qlik session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QlikSessionEvent {
    /// The gateway session's first Qlik session.
    Created,
    /// A replacement for one Qlik lost or refused (or on a node taken out of rotation).
    Recreated,
    /// Creating one failed (QPS, ticket redemption, no node).
    Failed,
}

impl QlikSessionEvent {
    const ALL: [QlikSessionEvent; 3] = [Self::Created, Self::Recreated, Self::Failed];

    fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Recreated => "recreated",
            Self::Failed => "failed",
        }
    }
}

/// How a login attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// A gateway session was made.
    Success,
    /// The browser was asked for more (a Negotiate challenge, a redirect to the IdP).
    Challenge,
    /// No session; the reason is the error code of the answer (`untrusted_identity_header`, …).
    Refused(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    route_class: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route_class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LoginLabels {
    provider: &'static str,
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type DurationFamily<S> = Family<S, DurationHistogram, fn() -> DurationHistogram>;

fn fine_histogram() -> DurationHistogram {
    DurationHistogram::new(FINE_BUCKETS_NS)
}

/// Every metric of one gateway. Counting is an atomic add (a family lookup for labelled series
/// whose labels are only known at the time, such as a status code).
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    /// Indexed like [`RouteClass::ALL`].
    http_duration: [DurationHistogram; 4],
    /// Indexed like [`Phase::ALL`].
    phases: [DurationHistogram; 4],
    /// Indexed client_to_qlik, qlik_to_client.
    ws_frames: [Counter; 2],
    ws_bytes: [Counter; 2],
    logins: Family<LoginLabels, Counter>,
    logouts: Counter,
    /// Indexed like [`QlikSessionEvent::ALL`].
    qlik_sessions: [Counter; 3],
    qps: QpsMetrics,
    store_errors: Counter,
    sessions: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every family, reading `stats` and `sockets` at each scrape. Long by
    /// nature: one registration per family, in the order `/metrics` lists them.
    pub fn new(stats: Stats, sockets: SocketRegistry) -> Self {
        let mut registry = Registry::default();

        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "qlik_gateway_http_requests",
            "HTTP requests answered, by route class and status (websocket upgrades count once, at their 101)",
            http_requests.clone(),
        );
        let http_duration_family: DurationFamily<RouteLabels> =
            Family::new_with_constructor(fine_histogram);
        registry.register_with_unit(
            "qlik_gateway_http_request_duration",
            "Time from the request to the response head, by route class",
            Unit::Seconds,
            http_duration_family.clone(),
        );
        let http_duration = RouteClass::ALL.map(|c| {
            http_duration_family.get_or_create_owned(&RouteLabels {
                route_class: c.as_str(),
            })
        });

        let phase_family: DurationFamily<PhaseLabels> =
            Family::new_with_constructor(fine_histogram);
        registry.register_with_unit(
            "qlik_gateway_proxy_phase_duration",
            "Time a proxied request spent in each step before its response head: session lookup, Qlik session, waiting for an upstream connection, the upstream's answer",
            Unit::Seconds,
            phase_family.clone(),
        );
        let phases = Phase::ALL
            .map(|p| phase_family.get_or_create_owned(&PhaseLabels { phase: p.as_str() }));

        registry.register_collector(Box::new(Live { stats, sockets }));

        let frames = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "qlik_gateway_websocket_frames",
            "Engine websocket messages (text and binary) relayed, by direction",
            frames.clone(),
        );
        let bytes = Family::<DirectionLabels, Counter>::default();
        registry.register_with_unit(
            "qlik_gateway_websocket",
            "Payload bytes of the engine websocket messages relayed, by direction",
            Unit::Bytes,
            bytes.clone(),
        );
        let dirs = [Direction::ClientToQlik, Direction::QlikToClient];
        let ws_frames = dirs.map(|d| {
            frames.get_or_create_owned(&DirectionLabels {
                direction: d.as_str(),
            })
        });
        let ws_bytes = dirs.map(|d| {
            bytes.get_or_create_owned(&DirectionLabels {
                direction: d.as_str(),
            })
        });

        let logins = Family::<LoginLabels, Counter>::default();
        registry.register(
            "qlik_gateway_logins",
            "Login attempts by identity provider and outcome (success, challenge, refused with the error code as reason)",
            logins.clone(),
        );
        let logouts = Counter::default();
        registry.register(
            "qlik_gateway_logouts",
            "Logouts that ended a gateway session",
            logouts.clone(),
        );

        let qlik_family = Family::<EventLabels, Counter>::default();
        registry.register(
            "qlik_gateway_qlik_sessions",
            "Qlik sessions created for gateway sessions, re-created after Qlik lost them, and failed creations",
            qlik_family.clone(),
        );
        let qlik_sessions = QlikSessionEvent::ALL
            .map(|e| qlik_family.get_or_create_owned(&EventLabels { event: e.as_str() }));

        let qps = QpsMetrics::register(&mut registry, latency_histogram);

        let store_errors = Counter::default();
        registry.register(
            "qlik_gateway_store_errors",
            "Session store operations that failed",
            store_errors.clone(),
        );
        let sessions = Gauge::default();
        registry.register(
            "qlik_gateway_sessions",
            "Live gateway sessions in the session store (counted at scrape)",
            sessions.clone(),
        );

        Self {
            registry,
            http_requests,
            http_duration,
            phases,
            ws_frames,
            ws_bytes,
            logins,
            logouts,
            qlik_sessions,
            qps,
            store_errors,
            sessions,
        }
    }

    /// One answered request: its class, status, and the time to its response head.
    pub fn http_request(&self, class: RouteClass, status: http::StatusCode, took: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route_class: class.as_str(),
                status: status.as_u16(),
            })
            .inc();
        self.http_duration[class as usize].observe(took);
    }

    /// One step of a proxied request and how long it took.
    pub fn phase(&self, phase: Phase, took: Duration) {
        self.phases[phase as usize].observe(took);
    }

    /// One websocket message of `bytes` payload bytes relayed in `direction`.
    pub fn ws_frame(&self, direction: Direction, bytes: usize) {
        let i = direction as usize;
        self.ws_frames[i].inc();
        self.ws_bytes[i].inc_by(bytes as u64);
    }

    /// One login attempt with the provider named `provider`.
    pub fn login(&self, provider: &'static str, outcome: LoginOutcome) {
        let (outcome, reason) = match outcome {
            LoginOutcome::Success => ("success", ""),
            LoginOutcome::Challenge => ("challenge", ""),
            LoginOutcome::Refused(code) => ("refused", code),
        };
        self.logins
            .get_or_create(&LoginLabels {
                provider,
                outcome,
                reason,
            })
            .inc();
    }

    /// One logout that ended a gateway session.
    pub fn logout(&self) {
        self.logouts.inc();
    }

    /// A Qlik session created, re-created, or a failed attempt.
    pub fn qlik_session(&self, event: QlikSessionEvent) {
        self.qlik_sessions[event as usize].inc();
    }

    /// The QPS client's handles.
    pub fn qps(&self) -> QpsMetrics {
        self.qps.clone()
    }

    /// One failed session store operation.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// The live session count, set before each scrape.
    pub fn set_sessions(&self, n: usize) {
        self.sessions.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Every series as text: OpenMetrics (ending in `# EOF`) or Prometheus 0.0.4.
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let r = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        // Writing to a String cannot fail; a collector's error would leave a partial text.
        if let Err(e) = r {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        out
    }

    /// Wraps a session store so that each of its failures is counted.
    pub fn count_store_errors(&self, store: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
        Arc::new(CountingStore {
            inner: store,
            errors: self.store_errors.clone(),
        })
    }
}

/// Values read at scrape time: open websockets (the socket registry) and the event counters of
/// [`Stats`] (fatal notifications, login prompts).
struct Live {
    stats: Stats,
    sockets: SocketRegistry,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let open = ConstGauge::new(i64::try_from(self.sockets.len()).unwrap_or(i64::MAX));
        open.encode(encoder.encode_descriptor(
            "qlik_gateway_websockets_open",
            "Open websockets relayed by the gateway (engine and dev-server).",
            None,
            open.metric_type(),
        )?)?;

        let snap = self.stats.snapshot();
        let mut family = encoder.encode_descriptor(
            "qlik_gateway_qlik_notifications",
            "Fatal notifications Qlik sent on engine websockets (passed on to the client), by method.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (method, n) in &snap.fatal_notifications {
            ConstCounter::new(*n).encode(family.encode_family(&MethodLabels { method })?)?;
        }

        let prompts = ConstCounter::new(snap.login_prompts);
        prompts.encode(encoder.encode_descriptor(
            "qlik_gateway_login_prompts",
            "OnAuthenticationInformation with mustAuthenticate true sent to clients (only when the gateway session is gone).",
            None,
            prompts.metric_type(),
        )?)?;
        Ok(())
    }
}

/// A session store whose failures are counted; every call goes to the wrapped store.
///
/// Forwards every method of [`SessionStore`]: a method added to the trait must be forwarded here
/// too, or a store's own implementation of it (a default one included) would be bypassed.
struct CountingStore {
    inner: Arc<dyn SessionStore>,
    errors: Counter,
}

impl CountingStore {
    fn counted<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_err() {
            self.errors.inc();
        }
        r
    }
}

#[async_trait]
impl SessionStore for CountingStore {
    async fn insert(
        &self,
        id: &SessionId,
        session: GatewaySession,
        max_per_user: usize,
    ) -> Result<bool, StoreError> {
        self.counted(self.inner.insert(id, session, max_per_user).await)
    }
    async fn get_and_touch(
        &self,
        id: &SessionId,
    ) -> Result<Option<Arc<GatewaySession>>, StoreError> {
        self.counted(self.inner.get_and_touch(id).await)
    }
    async fn get(&self, id: &SessionId) -> Result<Option<GatewaySession>, StoreError> {
        self.counted(self.inner.get(id).await)
    }
    async fn set_qlik(
        &self,
        id: &SessionId,
        qlik: Option<QlikSession>,
    ) -> Result<bool, StoreError> {
        self.counted(self.inner.set_qlik(id, qlik).await)
    }
    async fn remove(&self, id: &SessionId) -> Result<Option<GatewaySession>, StoreError> {
        self.counted(self.inner.remove(id).await)
    }
    async fn sweep(&self) -> Result<Vec<SessionId>, StoreError> {
        self.counted(self.inner.sweep().await)
    }
    async fn count(&self) -> Result<usize, StoreError> {
        self.counted(self.inner.count().await)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.counted(self.inner.ping().await)
    }
    async fn lock(
        &self,
        id: &SessionId,
        ttl: Duration,
    ) -> Result<Option<crate::session::LockGuard>, StoreError> {
        self.counted(self.inner.lock(id, ttl).await)
    }
    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<crate::session::SessionEvent>> {
        self.inner.events()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(Stats::default(), SocketRegistry::default())
    }

    #[test]
    fn each_gateway_has_its_own_registry() {
        let (a, b) = (metrics(), metrics());
        a.logout();
        a.ws_frame(Direction::QlikToClient, 10);
        a.http_request(
            RouteClass::Websocket,
            http::StatusCode::SWITCHING_PROTOCOLS,
            Duration::from_millis(2),
        );
        let ta = a.encode(false);
        let tb = b.encode(false);
        assert!(ta.contains("qlik_gateway_logouts_total 1\n"), "{ta}");
        assert!(
            ta.contains("qlik_gateway_websocket_bytes_total{direction=\"qlik_to_client\"} 10\n")
        );
        assert!(ta.contains(
            "qlik_gateway_http_requests_total{route_class=\"websocket\",status=\"101\"} 1\n"
        ));
        assert!(tb.contains("qlik_gateway_logouts_total 0\n"), "{tb}");
        assert!(!tb.contains("status=\"101\""));
    }

    /// The cumulative count of `phase`'s bucket with upper bound `le`. The two formats differ
    /// in the labels' order and in how they spell a bound (`1e-05`, `0.00001`).
    fn phase_bucket(text: &str, phase: &str, le: f64) -> Option<u64> {
        let phase = format!("phase=\"{phase}\"");
        text.lines().find_map(|l| {
            let (labels, n) = l
                .strip_prefix("qlik_gateway_proxy_phase_duration_seconds_bucket{")?
                .split_once("} ")?;
            let mut bound = None;
            let mut ours = false;
            for label in labels.split(',') {
                ours |= label == phase;
                if let Some(v) = label.strip_prefix("le=\"") {
                    bound = v.trim_end_matches('"').parse::<f64>().ok();
                }
            }
            (ours && bound == Some(le)).then(|| n.parse().ok())?
        })
    }

    #[test]
    fn each_phase_has_its_own_series_in_both_formats() {
        let m = metrics();
        m.phase(Phase::Session, Duration::from_micros(7));
        m.phase(Phase::UpstreamResponse, Duration::from_micros(300));
        m.phase(Phase::UpstreamResponse, Duration::from_millis(3));
        for openmetrics in [false, true] {
            let t = m.encode(openmetrics);
            let count = |phase: &str| {
                format!("qlik_gateway_proxy_phase_duration_seconds_count{{phase=\"{phase}\"}} ")
            };
            assert!(t.contains(&format!("{}1\n", count("session"))), "{t}");
            assert!(t.contains(&format!("{}2\n", count("upstream_response"))));
            assert!(t.contains(&format!("{}0\n", count("qlik_session"))));
            assert_eq!(phase_bucket(&t, "session", 1e-5), Some(1), "{t}");
            assert_eq!(phase_bucket(&t, "upstream_response", 2.5e-4), Some(0));
            assert_eq!(phase_bucket(&t, "upstream_response", 5e-4), Some(1));
            assert_eq!(phase_bucket(&t, "upstream_response", 5e-3), Some(2));
            assert_eq!(
                phase_bucket(&t, "upstream_response", f64::INFINITY),
                Some(2)
            );
        }
    }

    #[test]
    fn scrape_time_values_are_read_from_stats_and_sockets() {
        let stats = Stats::default();
        let sockets = SocketRegistry::default();
        let m = Metrics::new(stats.clone(), sockets.clone());
        let guard = sockets.register(None);
        stats.fatal_notification("OnSessionTimedOut");
        stats.fatal_notification("OnSomethingNew");
        stats.login_prompt();
        m.set_sessions(3);
        let t = m.encode(false);
        assert!(t.contains("qlik_gateway_websockets_open 1\n"), "{t}");
        assert!(
            t.contains("qlik_gateway_qlik_notifications_total{method=\"OnSessionTimedOut\"} 1\n")
        );
        assert!(t.contains("qlik_gateway_qlik_notifications_total{method=\"other\"} 1\n"));
        assert!(t.contains("qlik_gateway_login_prompts_total 1\n"));
        assert!(t.contains("qlik_gateway_sessions 3\n"));
        drop(guard);
        assert!(m.encode(false).contains("qlik_gateway_websockets_open 0\n"));
    }

    #[test]
    fn qps_calls_are_timed_and_failures_counted_by_code() {
        let m = metrics();
        let q = m.qps();
        q.observe("create_session", Duration::from_millis(5), None);
        q.observe("probe", Duration::from_millis(1), Some("qps_unreachable"));
        m.qlik_session(QlikSessionEvent::Failed);
        let t = m.encode(false);
        assert!(t.contains(
            "qlik_gateway_qps_request_duration_seconds_count{call=\"create_session\"} 1\n"
        ));
        assert!(t.contains(
            "qlik_gateway_qps_errors_total{call=\"probe\",code=\"qps_unreachable\"} 1\n"
        ));
        assert!(t.contains("qlik_gateway_qlik_sessions_total{event=\"failed\"} 1\n"));
        assert!(t.contains("qlik_gateway_qlik_sessions_total{event=\"created\"} 0\n"));
    }

    /// A store that fails every call.
    struct Down;

    #[async_trait]
    impl SessionStore for Down {
        async fn insert(
            &self,
            _: &SessionId,
            _: GatewaySession,
            _: usize,
        ) -> Result<bool, StoreError> {
            Err(StoreError("down".into()))
        }
        async fn get_and_touch(
            &self,
            _: &SessionId,
        ) -> Result<Option<Arc<GatewaySession>>, StoreError> {
            Err(StoreError("down".into()))
        }
        async fn get(&self, _: &SessionId) -> Result<Option<GatewaySession>, StoreError> {
            Ok(None)
        }
        async fn set_qlik(
            &self,
            _: &SessionId,
            _: Option<QlikSession>,
        ) -> Result<bool, StoreError> {
            Err(StoreError("down".into()))
        }
        async fn remove(&self, _: &SessionId) -> Result<Option<GatewaySession>, StoreError> {
            Err(StoreError("down".into()))
        }
        async fn sweep(&self) -> Result<Vec<SessionId>, StoreError> {
            Err(StoreError("down".into()))
        }
        async fn count(&self) -> Result<usize, StoreError> {
            Err(StoreError("down".into()))
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Err(StoreError("down".into()))
        }
    }

    #[tokio::test]
    async fn store_failures_are_counted() {
        let m = metrics();
        let store = m.count_store_errors(Arc::new(Down));
        let id = SessionId::generate();
        assert!(store.get(&id).await.is_ok());
        assert!(store.get_and_touch(&id).await.is_err());
        assert!(store.ping().await.is_err());
        assert!(store.count().await.is_err());
        assert!(m
            .encode(false)
            .contains("qlik_gateway_store_errors_total 3\n"));
    }
}
