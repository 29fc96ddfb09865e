//! `qlik-sim`: a simulated Qlik Sense Enterprise (client-managed) for the tests and demo of
//! `qlik-gateway`. It serves three listeners:
//!
//! * the **proxy** (virtual proxy `/{prefix}/…`): session cookie, ticket redemption,
//!   auth-module redirects, the Personal API, websocket CSRF tokens and the engine websocket;
//! * the **QPS API** (`/qps/{prefix}/…`, mutual TLS + xrfkey): sessions, tickets, users;
//! * a **control** API (plain HTTP) for tests: sessions, counters, recorded requests, faults.
//!
//! Every behaviour follows `qlik-reference.md`; the points it marks UNCONFIRMED are options
//! in [`SimOptions`].

mod apps;
mod control;
mod engine;
mod options;
mod pki;
mod proxy;
mod qps_api;
mod serve;
mod state;
mod util;

pub use apps::{HELPDESK_APP_ID, SALES_APP_ID};
pub use options::{AuthInfoTiming, Casing, SimOptions};
pub use pki::PkiPaths;
pub use state::{Counters, QpsFault, RecordedRequest, SessionInfo};

use state::{SessionEnd, Shared};
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
    /// Generates a fresh PKI into `cert_dir` (created if missing) and starts the proxy, QPS API
    /// and control listeners on `opts.bind` (ports from the options, 0 = ephemeral).
    pub async fn start(opts: SimOptions, cert_dir: &Path) -> Result<Sim, SimError> {
        let pki = pki::generate(cert_dir)?;
        let (proxy_listener, proxy_addr) = bind(opts.bind, opts.proxy_port).await?;
        let (qps_listener, qps_addr) = bind(opts.bind, opts.qps_port).await?;
        let (control_listener, control_addr) = bind(opts.bind, opts.control_port).await?;

        let proxy_tls = if opts.proxy_tls {
            Some(serve::proxy_tls(&pki)?)
        } else {
            None
        };
        let qps_tls = serve::qps_tls(&pki)?;
        let proxy_url = url(if opts.proxy_tls { "https" } else { "http" }, proxy_addr);
        let shared = Shared::new(opts, proxy_url);

        let (shutdown, rx) = watch::channel(false);
        let tasks = vec![
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
                Some(qps_tls),
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
            tokio::spawn(shared.clone().run_sweeper(rx)),
        ];
        tracing::info!(proxy = %shared.proxy_url, qps = %qps_addr, control = %control_addr, "qlik-sim started");
        Ok(Sim {
            shared,
            pki: pki.paths,
            qps_api_url: url("https", qps_addr),
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

    /// Stops the listeners and closes every connection and websocket.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.shared.shutdown_sockets();
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

    /// Every live proxy session.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.shared.sessions()
    }

    /// A snapshot of the event counters.
    pub fn counters(&self) -> Counters {
        self.shared.counters()
    }

    /// The last 1000 requests the proxy listener saw, oldest first.
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
