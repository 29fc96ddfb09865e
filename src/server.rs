//! Listeners: plain HTTP or HTTPS (rustls, h2 + http/1.1 by ALPN), header limits and timeouts, and a
//! graceful shutdown that also drains upgraded websockets (hyper stops tracking those). With
//! `server.admin_listen`, a second, plain-HTTP listener serves metrics and health checks.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

mod balance;
pub mod body_timeout;
pub mod first_request;
mod timer_promise;

use crate::limits::HeadLimits;
use crate::logging::RequestSpan;
use balance::{Balance, Inbox, Placed};
use body_timeout::TimedBody;
use first_request::{Arrived, FirstRequestDeadline};

use crate::gateway::endpoints::PeerAddr;
use crate::route_class::RouteClass;
use crate::sockets::CloseReason;
use crate::state::AppState;

/// A failure to start listening.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The public listener (`server.listen`) cannot be bound or used.
    #[error(
        "cannot listen on {addr}: {source}; is another process using the port? (server.listen)"
    )]
    Bind {
        /// `server.listen`, or the address of the listener given.
        addr: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The admin listener (`server.admin_listen`) cannot be bound.
    #[error("cannot listen on {addr}: {source}; is another process using the port? (server.admin_listen)")]
    BindAdmin {
        /// `server.admin_listen`.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The listener's certificate or key (`[server.tls]`) cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsFileError),
}

/// A bound, not yet serving, gateway.
pub struct Server {
    listener: TcpListener,
    /// `server.admin_listen`, bound.
    admin: Option<TcpListener>,
    state: Arc<AppState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Threads accepting and serving connections (`server.threads`), the caller's included.
    threads: usize,
}

impl Server {
    /// Binds `server.listen` (and `server.admin_listen`) and loads the TLS certificate when
    /// configured.
    pub async fn bind(state: Arc<AppState>) -> Result<Self, ServeError> {
        let addr = state.cfg.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        Self::new(state, listener)
    }

    /// Uses an already bound listener (tests bind port 0 first to learn the port for
    /// `public_url`); binds `server.admin_listen` when set (port 0 too: see [`Self::admin_addr`]).
    pub fn with_listener(
        state: Arc<AppState>,
        listener: std::net::TcpListener,
    ) -> Result<Self, ServeError> {
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: state.cfg.server.listen,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ServeError::Bind { addr, source })?;
        let listener =
            TcpListener::from_std(listener).map_err(|source| ServeError::Bind { addr, source })?;
        Self::new(state, listener)
    }

    fn new(state: Arc<AppState>, listener: TcpListener) -> Result<Self, ServeError> {
        let admin = match state.cfg.server.admin_listen {
            Some(addr) => {
                let err = |source| ServeError::BindAdmin { addr, source };
                let l = std::net::TcpListener::bind(addr).map_err(err)?;
                l.set_nonblocking(true).map_err(err)?;
                Some(TcpListener::from_std(l).map_err(err)?)
            }
            None => None,
        };
        let tls = match &state.cfg.server.tls {
            Some(t) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                crate::net::tls::server_config(&t.cert, &t.key)?,
            ))),
            None => None,
        };
        Ok(Self {
            listener,
            admin,
            threads: state.cfg.server.threads,
            state,
            tls,
        })
    }

    /// The address actually bound (port 0 resolves here).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin listener's address, when `server.admin_listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then drains: no new connections, in-flight requests finish,
    /// websockets get close 1001, and everything is given up after `server.drain_timeout`.
    ///
    /// Connections are accepted and served on `server.threads` threads: the caller's, and as
    /// many more, each with a single-threaded runtime of its own. A connection lives on one
    /// thread, as in nginx's worker processes: packed onto one thread while the load is light,
    /// spread evenly over all of them once it is not ([`balance`]). Its upstream connections live
    /// there too (the pool keeps them per runtime): no task moves between cores and no request
    /// waits for a wake-up on another one. Measured against tokio's work-stealing
    /// scheduler in BENCHMARKS.md ("Thread per core"). Background work (session sweeps,
    /// reloads, the admin listener) stays on the caller's runtime.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let state = self.state;
        let limits = HeadLimits {
            max_header_bytes: state.cfg.server.max_header_bytes,
            max_headers: state.cfg.server.max_headers,
            max_request_line: state.cfg.server.max_request_line_bytes,
        };
        let builder = Arc::new(connection_builder(&state, &limits));
        let first_request_timeout = state.cfg.server.header_read_timeout;
        let (balance, mut inboxes) = Balance::new(self.threads);
        let accept = Arc::new(Accept {
            router: crate::routes::router(state.clone()),
            state: state.clone(),
            limits,
            builder: builder.clone(),
            tls: self.tls,
            balance,
        });
        let sweeper = tokio::spawn(sweep(state.clone()));
        // Logouts on other replicas close this replica's websockets at once (a shared store).
        let events = state.store.events().map(|rx| {
            tokio::spawn(crate::sockets::close_on_session_events(
                rx,
                state.store.clone(),
                state.sockets.clone(),
            ))
        });
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = self.admin.map(|l| {
            tokio::spawn(serve_admin(
                l,
                crate::routes::admin_router(state.clone()),
                builder.clone(),
                admin_stopped,
                state.cfg.server.drain_timeout,
                first_request_timeout,
            ))
        });
        let stop = tokio_util::sync::CancellationToken::new();
        let mine = inboxes.remove(0);
        let others = spawn_accept_threads(&accept, &self.listener, inboxes, &stop);
        let graceful = GracefulShutdown::new();
        {
            let stopped = async {
                shutdown.await;
                stop.cancel();
            };
            tokio::pin!(stopped);
            accept.serve(self.listener, mine, &graceful, stopped).await;
        }
        stop.cancel();
        let _ = stop_admin.send(());
        sweeper.abort();
        if let Some(e) = events {
            e.abort();
        }
        drain(&state, graceful).await;
        for done in others {
            let _ = done.await;
        }
        if let Some(a) = admin {
            let _ = a.await;
        }
    }
}

/// What every accepting thread shares.
struct Accept {
    router: Router,
    state: Arc<AppState>,
    limits: HeadLimits,
    builder: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Which thread serves a connection one of them accepted.
    balance: Arc<Balance>,
}

/// Starts an accepting thread per inbox on clones of `listener`; each ends when `stop` is
/// cancelled and its connections and websockets have drained, and then reports on its receiver.
/// A thread that cannot start drops its inbox, and the others stop handing it connections.
fn spawn_accept_threads(
    accept: &Arc<Accept>,
    listener: &TcpListener,
    inboxes: Vec<Inbox>,
    stop: &tokio_util::sync::CancellationToken,
) -> Vec<tokio::sync::oneshot::Receiver<()>> {
    let mut done = Vec::with_capacity(inboxes.len());
    for inbox in inboxes {
        let i = inbox.index;
        // The clones share one socket: whichever thread is free first takes the connection.
        let std_listener = match socket2::SockRef::from(listener).try_clone() {
            Ok(s) => std::net::TcpListener::from(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot share the listener with another thread; serving on fewer threads");
                break;
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let accept = accept.clone();
        let stop = stop.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("qlik-gateway-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start an accepting thread's runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot use the listener on another thread");
                            return;
                        }
                    };
                    let graceful = GracefulShutdown::new();
                    accept
                        .serve(listener, inbox, &graceful, stop.cancelled())
                        .await;
                    // The connections and websocket relays of this thread run on its runtime,
                    // which must outlive them; the main thread's drain closes the websockets.
                    let drain = accept.state.cfg.server.drain_timeout;
                    let all = async {
                        graceful.shutdown().await;
                        accept.state.sockets.wait_empty(drain).await;
                    };
                    let _ = tokio::time::timeout(drain, all).await;
                });
                let _ = tx.send(());
            });
        match spawned {
            Ok(_) => done.push(rx),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start an accepting thread; serving on fewer threads");
                break;
            }
        }
    }
    done
}

impl Accept {
    /// Accepts on `listener`, and takes the connections other threads hand to `inbox`, until
    /// `stop` resolves; every connection is watched by `graceful`.
    async fn serve(
        &self,
        listener: TcpListener,
        mut inbox: Inbox,
        graceful: &GracefulShutdown,
        stop: impl Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let promise = tokio::spawn(timer_promise::keep());
        loop {
            let placed = tokio::select! {
                _ = &mut stop => break,
                Some(handed) = inbox.rx.recv() => match handed.take() {
                    Ok(placed) => placed,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot take a connection from another thread");
                        continue;
                    }
                },
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        match self.balance.place(inbox.index, tcp, peer) {
                            Some(placed) => placed,
                            None => continue,
                        }
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            self.serve_one(placed, graceful);
        }
        promise.abort();
        // A closed inbox takes no more connections; those handed over just before the stop
        // are served (and drained) like the rest.
        inbox.rx.close();
        while let Ok(handed) = inbox.rx.try_recv() {
            if let Ok(placed) = handed.take() {
                self.serve_one(placed, graceful);
            }
        }
    }

    /// Serves one connection on this thread's runtime, watched by `graceful`.
    fn serve_one(&self, (tcp, peer, load): Placed, graceful: &GracefulShutdown) {
        let state = &self.state;
        let first_request_timeout = state.cfg.server.header_read_timeout;
        let arrived = Arrived::default();
        let svc = service(
            self.router.clone(),
            peer,
            state.clone(),
            self.limits,
            arrived.clone(),
        );
        let builder = self.builder.clone();
        match &self.tls {
            None => {
                let io = FirstRequestDeadline::new(tcp, first_request_timeout, arrived, Some(load));
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(io), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        log_connection_error(peer, &*e);
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let timeout = first_request_timeout;
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer, "TLS handshake not finished within server.header_read_timeout; closing");
                            return;
                        }
                    };
                    // The clock for the first request starts after the handshake.
                    let io = FirstRequestDeadline::new(stream, timeout, arrived, Some(load));
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(io), svc)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        log_connection_error(peer, &*e);
                    }
                });
            }
        }
    }
}

/// HTTP/1 and HTTP/2 as the limits and timeouts of `[server]` say.
fn connection_builder(state: &AppState, limits: &HeadLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper only refuses a head when its buffer fills first, which depends on how the bytes
    // arrive; with room above the limit, every head the limit concerns is parsed and
    // measured exactly in `service`. hyper also times each head, from the end of the
    // previous response on a kept-alive connection.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.cfg.server.header_read_timeout)
        .max_buf_size(limits.parser_cap());
    // hyper's default of 100 headers parses into a stack array, while an explicit count
    // allocates an array of that size per request: only set when more are allowed.
    if let Some(n) = limits.parser_max_headers() {
        builder.http1().max_headers(n);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.parser_cap()).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// After the listener is closed: every websocket told the server is going away, then the
/// connections and sockets given `server.drain_timeout` to finish.
async fn drain(state: &AppState, graceful: GracefulShutdown) {
    let drain = state.cfg.server.drain_timeout;
    let open = state.sockets.len();
    tracing::info!(websockets = open, drain = ?drain, "shutting down: draining connections");
    state.sockets.close_all(CloseReason::Shutdown);
    let all = async {
        graceful.shutdown().await;
        state.sockets.wait_empty(drain).await;
    };
    let timed_out = tokio::time::timeout(drain, all).await.is_err();
    if timed_out {
        tracing::warn!("drain timeout reached; closing the remaining connections");
    }
    // What an operator checks after a restart: whether every client was told, or some
    // were cut off by the timeout.
    let left = state.sockets.len();
    tracing::info!(
        websockets_closed = open.saturating_sub(left),
        websockets_left = left,
        timed_out,
        "drain finished"
    );
}

/// The admin listener: plain HTTP, [`crate::routes::admin_router`], until `stop` fires; then
/// its requests in flight (a scrape, a readiness check) get up to `drain` to finish.
async fn serve_admin(
    listener: TcpListener,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    drain: Duration,
    first_request_timeout: Duration,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let arrived = Arrived::default();
        let io = FirstRequestDeadline::new(tcp, first_request_timeout, arrived.clone(), None);
        let router = router.clone();
        let svc = TowerToHyperService::new(tower::service_fn(move |req| {
            arrived.mark();
            router.clone().oneshot(req)
        }));
        let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                log_connection_error(peer, &*e);
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("admin listener: drain timeout reached");
    }
}

/// One line per connection that hyper ended with an error: malformed or oversized heads at info
/// (a client or a proxy in front is misbehaving), timeouts and resets at debug (routine).
fn log_connection_error(peer: SocketAddr, e: &(dyn std::error::Error + 'static)) {
    let Some(h) = e.downcast_ref::<hyper::Error>() else {
        tracing::debug!(peer = %peer.ip(), error = %e, "connection ended with an error");
        return;
    };
    if h.is_parse_too_large() {
        tracing::info!(peer = %peer.ip(), error = %h, "request head refused by the parser: far above server.max_header_bytes (or more than server.max_headers headers); answered 431");
    } else if h.is_parse() || h.is_parse_status() {
        tracing::info!(peer = %peer.ip(), error = %h, "malformed request head; answered 400 and closed the connection");
    } else if h.is_timeout() {
        tracing::debug!(peer = %peer.ip(), "no complete request head within server.header_read_timeout; connection closed");
    } else if is_first_request_timeout(h) {
        tracing::debug!(peer = %peer.ip(), "no request within server.header_read_timeout of the connection's start; connection closed");
    } else {
        tracing::debug!(peer = %peer.ip(), error = %h, "connection ended with an error");
    }
}

fn is_first_request_timeout(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
}

fn service(
    router: Router,
    peer: SocketAddr,
    state: Arc<AppState>,
    limits: HeadLimits,
    arrived: Arrived,
) -> TowerToHyperService<
    impl tower::Service<
            http::Request<Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
            Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send + 'static,
        > + Clone,
> {
    TowerToHyperService::new(tower::service_fn(
        move |mut req: http::Request<Incoming>| {
            arrived.mark();
            // Measured before the gateway adds its own headers (X-Request-Id).
            let refused = limits.check(&req).err();
            let http1 = req.version() < http::Version::HTTP_2;
            let id = request_id(req.headers());
            // Room, in one step, for this id and what the gateway adds on the way upstream
            // (`headers::ADDED_UPSTREAM`, `Host` among them, which the client's head already
            // has): grown one insert at a time, the map is rebuilt twice on a typical request.
            req.headers_mut().reserve(crate::headers::ADDED_UPSTREAM);
            req.headers_mut().insert(REQUEST_ID, id.clone());
            // Every log line of this request (and of its websocket relay) carries the id, and
            // Qlik gets it too (the header is forwarded), so one id follows a request end to end.
            let span = RequestSpan::new(id.clone(), peer.ip());
            let class = RouteClass::of(req.uri().path(), &state.cfg.qlik.mount, req.headers());
            let metrics = state.metrics.clone();
            let start = Instant::now();
            let routed = crate::routes::routed(req.uri().path(), state.provider.callback_path());
            let router = router.clone();
            let state = state.clone();
            let future = async move {
                if let Some(e) = refused {
                    let mut resp = crate::error::GatewayError::from(e).into_response();
                    metrics.http_request(class, resp.status(), start.elapsed());
                    resp.headers_mut().insert(REQUEST_ID, id);
                    // The rest of an oversized head's request is not worth reading (HTTP/2 has
                    // no Connection header: the stream ends with the response).
                    if http1 {
                        resp.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    return Ok(resp);
                }
                let body_timeout = state.cfg.server.body_timeout;
                let mut req = req.map(|b| {
                    // Bodyless requests (most of them, and every websocket upgrade) skip the timer.
                    if http_body::Body::is_end_stream(&b) {
                        axum::body::Body::new(b)
                    } else {
                        axum::body::Body::new(TimedBody::new(b, body_timeout))
                    }
                });
                let mut resp = if routed {
                    req.extensions_mut().insert(PeerAddr(peer));
                    router.oneshot(req).await?
                } else {
                    crate::routes::dispatch(state, peer, Some(class), req).await
                };
                // Time to the response head: a streamed body is not waited for.
                metrics.http_request(class, resp.status(), start.elapsed());
                resp.headers_mut().insert(REQUEST_ID, id);
                Ok(resp)
            };
            span.instrument(future)
        },
    ))
}

const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The client's `X-Request-Id` when it is a plain token (a load balancer's id), else a new one.
/// Anything else is replaced: the id goes into every log line and must not forge log content.
fn request_id(headers: &http::HeaderMap) -> http::HeaderValue {
    if let Some(v) = headers.get(REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
        {
            return v.clone();
        }
    }
    use rand::RngCore;
    let mut raw = [0u8; 12];
    rand::rng().fill_bytes(&mut raw);
    // One allocation, no per-byte formatting: this runs on every request.
    let mut hex = [0u8; 24];
    match hex::encode_to_slice(raw, &mut hex) {
        Ok(()) => http::HeaderValue::from_bytes(&hex)
            .unwrap_or_else(|_| http::HeaderValue::from_static("-")),
        Err(_) => http::HeaderValue::from_static("-"),
    }
}

/// Removes expired sessions and closes their websockets.
async fn sweep(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(state.cfg.session.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match state.store.sweep().await {
            Ok(ended) => {
                for id in ended {
                    state
                        .sockets
                        .close_session(id.storage_key(), CloseReason::SessionEnded);
                }
            }
            Err(e) => tracing::warn!(error = %e, "session sweep failed"),
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
