//! qlik-gateway: one same-origin gateway in front of a Qlik Sense mashup and Qlik Sense Enterprise.
//!
//! Request path: `server` accepts → `routes` dispatches → `auth` establishes identity →
//! `session` keeps the gateway session → `qlik_sessions` keeps the user's Qlik session → `proxy`
//! forwards. The layers and which way imports go: ARCHITECTURE.md.

// The gateway reports through `tracing`; only commands (demo, doctor) write to stdout/stderr.
#![warn(clippy::print_stdout, clippy::print_stderr)]
// The public modules are what the binary, the integration tests and the benchmark use; every
// other module is private, so that rustc reports what nothing uses.

mod auth;
pub mod config;
use qlik_gateway_core::config_checks;
#[cfg(feature = "demo")]
pub mod demo;
pub mod doctor;
mod error;
mod gateway;
mod headers;
mod html;
use qlik_gateway_core::identity;
mod limits;
pub mod logging;
pub mod mashup;
mod metrics;
pub use qlik_gateway_net as net;
mod proxy;
use qlik_gateway_qlik as qlik;
mod qlik_sessions;
mod request_target;
mod route_class;
mod routes;
pub mod server;
pub mod session;
mod sockets;
pub mod state;
pub mod stats;

/// A failure that stops the gateway from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The gateway's state cannot be built (certificates, identity provider, session store).
    #[error(transparent)]
    State(#[from] state::StateError),
    /// The listeners cannot be set up.
    #[error(transparent)]
    Serve(#[from] server::ServeError),
}

/// Builds the state, binds `server.listen` (or uses `listener`), logs where it listens, and serves
/// until `shutdown` resolves.
pub async fn serve(
    cfg: config::Config,
    listener: Option<std::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let state = state::AppState::new(cfg)?;
    let server = match listener {
        Some(l) => server::Server::with_listener(state.clone(), l)?,
        None => server::Server::bind(state.clone()).await?,
    };
    let addr = server
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(listen = %addr, public_url = %state.cfg.server.public_origin, qlik = %state.cfg.qlik.proxy_url, threads = state.cfg.server.threads, "qlik-gateway listening");
    if let Some(admin) = server.admin_addr() {
        tracing::info!(admin_listen = %admin, "admin listener (metrics, healthz, readyz) listening");
    }
    hangup_is_not_fatal();
    let probe_state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = probe_state.qlik.probe().await {
            tracing::warn!("QPS API check at start-up failed: {e}");
        }
    });
    server.run(shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP's default action ends the process; operators send it to ask for a reload (the keytab
/// listens for it), so it must never stop the gateway, whatever the provider.
fn hangup_is_not_fatal() {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP received");
                }
            });
        }
        Err(e) => tracing::warn!("cannot listen for SIGHUP: {e}"),
    }
}
