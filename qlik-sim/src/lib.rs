//! `qlik-sim`: a simulated Qlik Sense Enterprise (client-managed) for the tests and demo of
//! `qlik-gateway`. It serves these listeners:
//!
//! * the **proxy** (virtual proxy `/{prefix}/…`): session cookie, ticket redemption, header
//!   authentication (optional), auth-module redirects, the Personal API, websocket CSRF tokens
//!   and the engine websocket;
//! * the **QPS API** (`/qps/{prefix}/…`, mutual TLS + xrfkey): sessions, tickets, users;
//! * optionally the **engine** directly (`/app/{appId}`, mutual TLS + `X-Qlik-User`);
//! * a **control** API (plain HTTP) for tests: sessions, counters, recorded requests, faults,
//!   proxy notifications.
//!
//! Several simulators started on the same certificate directory share one PKI, like the nodes
//! of one Qlik site.
//!
//! Every behaviour follows `qlik-reference.md`; the points it marks UNCONFIRMED are options
//! in [`SimOptions`].

mod apps;
mod clients;
mod control;
mod direct;
mod engine;
mod engine_session;
mod hypercube;
mod identity;
mod layouts;
mod notifications;
mod options;
mod pages;
mod pki;
mod proxy;
mod qps_api;
mod selections;
mod serve;
mod state;
mod util;

pub use apps::{HELPDESK_APP_ID, SALES_APP_ID};
pub use options::{AuthInfoTiming, Casing, DuplicateParam, HeaderAuth, RandomExpiry, SimOptions};
pub use pki::PkiPaths;
pub use state::{Counters, EngineSelections, QpsFault, RecordedRequest, SessionInfo};

use notifications::{ProxyNotification, SessionEnd};
use state::{Shared, SocketCmd};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A file or socket operation failed.
    #[error("I/O error: {0}")]
    Io(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Pki(#[from] rcgen::Error),
    /// TLS configuration failed.
    #[error("TLS configuration failed: {0}")]
    Tls(String),
    /// The options are inconsistent (e.g. a reserved header-authentication header name).
    #[error("invalid options: {0}")]
    Options(String),
}

/// [`SimControl::notify`] was given a method it does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown proxy notification {method:?}; known: {known}")]
pub struct UnknownNotification {
    /// The method asked for.
    pub method: String,
    /// The supported methods, comma-separated.
    pub known: String,
}

impl From<rustls::Error> for SimError {
    fn from(e: rustls::Error) -> Self {
        SimError::Tls(e.to_string())
    }
}

/// A running simulator.
pub struct Sim {
    shared: Arc<Shared>,
    pki: PkiPaths,
    qps_api_url: String,
    engine_url: Option<String>,
    control_url: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(ip: std::net::IpAddr, port: u16) -> Result<(TcpListener, SocketAddr), SimError> {
    let listener = TcpListener::bind((ip, port))
        .await
        .map_err(|e| SimError::Io(format!("bind {ip}:{port}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| SimError::Io(format!("local_addr: {e}")))?;
    Ok((listener, addr))
}

fn url(scheme: &str, addr: SocketAddr) -> String {
    format!("{scheme}://{addr}")
}

impl Sim {
    /// Starts the proxy, QPS API, control and (with [`SimOptions::engine_port`]) direct engine
    /// listeners on `opts.bind` (ports from the options, 0 = ephemeral). The PKI in `cert_dir`
    /// (created if missing) is reused when all its files are there, else generated; so a
    /// second simulator on the same `cert_dir` is a second node of the same site.
    pub async fn start(opts: SimOptions, cert_dir: &Path) -> Result<Sim, SimError> {
        let pki = pki::generate_or_load(cert_dir)?;
        Self::start_inner(opts, pki).await
    }

    /// Like [`Sim::start`], with the PKI of existing PEM files, e.g. another simulator's
    /// [`Sim::pki`] (one gateway client certificate and CA then work for both).
    pub async fn start_with_pki(opts: SimOptions, pki: &PkiPaths) -> Result<Sim, SimError> {
        let pki = pki::load(pki)?;
        Self::start_inner(opts, pki).await
    }

    async fn start_inner(opts: SimOptions, pki: pki::Pki) -> Result<Sim, SimError> {
        let header_auth = opts
            .header_auth
            .as_ref()
            .map(identity::HeaderAuthenticator::new)
            .transpose()
            .map_err(SimError::Options)?;
        let (proxy_listener, proxy_addr) = bind(opts.bind, opts.proxy_port).await?;
        let (qps_listener, qps_addr) = bind(opts.bind, opts.qps_port).await?;
        let (control_listener, control_addr) = bind(opts.bind, opts.control_port).await?;
        let engine_listener = match opts.engine_port {
            Some(port) => Some(bind(opts.bind, port).await?),
            None => None,
        };

        let proxy_tls = if opts.proxy_tls {
            Some(serve::proxy_tls(&pki)?)
        } else {
            None
        };
        let mutual_tls = serve::mutual_tls(&pki)?;
        let proxy_url = url(if opts.proxy_tls { "https" } else { "http" }, proxy_addr);
        let shared = Shared::new(opts, proxy_url, header_auth);

        let (shutdown, rx) = watch::channel(false);
        let mut tasks = vec![
            serve::spawn(
                "proxy",
                proxy_listener,
                proxy_tls,
                proxy::router(shared.clone()),
                rx.clone(),
            ),
            serve::spawn(
                "qps",
                qps_listener,
                Some(mutual_tls.clone()),
                qps_api::router(shared.clone()),
                rx.clone(),
            ),
            serve::spawn(
                "control",
                control_listener,
                None,
                control::router(SimControl {
                    shared: shared.clone(),
                }),
                rx.clone(),
            ),
        ];
        let engine_url = engine_listener.map(|(listener, addr)| {
            tasks.push(serve::spawn(
                "engine",
                listener,
                Some(mutual_tls),
                direct::router(shared.clone()),
                rx.clone(),
            ));
            url("wss", addr)
        });
        if let Some(chaos) = shared.opts.random_expiry {
            tasks.push(tokio::spawn(
                shared.clone().run_random_expiry(chaos, rx.clone()),
            ));
        }
        tasks.push(tokio::spawn(shared.clone().run_sweeper(rx)));
        tracing::info!(proxy = %shared.proxy_url, qps = %qps_addr, control = %control_addr,
            engine = engine_url.as_deref().unwrap_or("-"), "qlik-sim started");
        Ok(Sim {
            shared,
            pki: pki.paths,
            qps_api_url: url("https", qps_addr),
            engine_url,
            control_url: url("http", control_addr),
            shutdown,
            tasks,
        })
    }

    /// Base URL of the proxy, e.g. `https://127.0.0.1:41234` (no trailing slash, no prefix).
    pub fn proxy_url(&self) -> String {
        self.shared.proxy_url.clone()
    }

    /// Base URL of the QPS API listener (mutual TLS), e.g. `https://127.0.0.1:41235`.
    pub fn qps_api_url(&self) -> String {
        self.qps_api_url.clone()
    }

    /// Base URL of the direct engine listener (mutual TLS + `X-Qlik-User`), e.g.
    /// `wss://127.0.0.1:41237`; `None` unless [`SimOptions::engine_port`] is set. Engine
    /// websockets are at `{engine_url}/app/{appId}`.
    pub fn engine_url(&self) -> Option<String> {
        self.engine_url.clone()
    }

    /// Base URL of the control listener, e.g. `http://127.0.0.1:41236`.
    pub fn control_url(&self) -> String {
        self.control_url.clone()
    }

    /// Paths of the generated PEM files.
    pub fn pki(&self) -> &PkiPaths {
        &self.pki
    }

    /// A handle to inspect and steer the running simulator.
    pub fn control(&self) -> SimControl {
        SimControl {
            shared: self.shared.clone(),
        }
    }

    /// Stops every listener (proxy, QPS API, control, engine: new connections are refused
    /// once this returns), drops every HTTP connection and closes every websocket with 1001.
    pub async fn shutdown(self) {
        self.stop(SocketCmd::Shutdown).await;
    }

    /// Like [`Sim::shutdown`], but websockets are dropped without a close frame, as when a
    /// node dies.
    pub async fn kill(self) {
        self.stop(SocketCmd::Abort).await;
    }

    async fn stop(self, sockets: SocketCmd) {
        let _ = self.shutdown.send(true);
        self.shared.shutdown_sockets(sockets);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// A cheap, cloneable handle to a running simulator's state.
#[derive(Clone)]
pub struct SimControl {
    shared: Arc<Shared>,
}

impl SimControl {
    /// Ends every proxy session; their websockets get `OnSessionTimedOut` (fatal), then close.
    pub fn expire_all_sessions(&self) {
        self.shared.end_all_sessions(SessionEnd::TimedOut);
    }

    /// Ends every proxy session of one user, like [`SimControl::expire_all_sessions`].
    pub fn expire_user_sessions(&self, user_directory: &str, user_id: &str) {
        self.shared
            .end_user_sessions(user_directory, user_id, SessionEnd::TimedOut);
    }

    /// Sends the proxy message `method` to every open proxy engine websocket, as
    /// `{"jsonrpc":"2.0","method":M,"params":{"severity":"fatal","timestamp":…,"message":…}}`
    /// (`message` only when documented), then closes them with 1000 when `close`.
    /// `OnSessionTimedOut`, `OnSessionClosed` and `OnSessionLoggedOut` also end every proxy
    /// session; `OnNoEngineAvailable`, `OnMaxParallelSessionsExceeded`,
    /// `OnLicenseAccessDenied`, `OnEngineWebsocketFailed` and `OnRepositoryWebsocketFailed`
    /// leave them alive. Direct engine websockets never get proxy messages. Returns how many
    /// websockets got it.
    pub fn notify(&self, method: &str, close: bool) -> Result<usize, UnknownNotification> {
        Ok(self.shared.notify(None, Self::notification(method)?, close))
    }

    /// Like [`SimControl::notify`], for one user's websockets and sessions only.
    pub fn notify_user(
        &self,
        user_directory: &str,
        user_id: &str,
        method: &str,
        close: bool,
    ) -> Result<usize, UnknownNotification> {
        let n = Self::notification(method)?;
        Ok(self
            .shared
            .notify(Some((user_directory, user_id)), n, close))
    }

    fn notification(method: &str) -> Result<ProxyNotification, UnknownNotification> {
        ProxyNotification::find(method).ok_or_else(|| UnknownNotification {
            method: method.to_string(),
            known: ProxyNotification::methods().join(", "),
        })
    }

    /// Every live proxy session.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.shared.sessions()
    }

    /// The selections in every proxy engine session with an open app (what a chart's click
    /// selected).
    pub fn selections(&self) -> Vec<EngineSelections> {
        self.shared.selections()
    }

    /// A snapshot of the event counters.
    pub fn counters(&self) -> Counters {
        self.shared.counters()
    }

    /// The last 1000 requests the proxy and direct engine listeners saw, oldest first (the
    /// engine's have `direct_engine: true`).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    /// Forgets the recorded proxy requests.
    pub fn clear_requests(&self) {
        self.shared.clear_requests();
    }

    /// Injects a fault into the QPS API listener (`None` clears it).
    pub fn set_fault(&self, fault: Option<QpsFault>) {
        self.shared.set_fault(fault);
    }
}
