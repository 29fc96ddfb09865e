//! The `qlik-sim` binary: starts a [`qlik_sim::Sim`], prints one JSON line with its URLs and
//! certificate paths, and runs until SIGTERM or SIGINT.

use clap::Parser;
use qlik_sim::{AuthInfoTiming, Casing, DuplicateParam, HeaderAuth, RandomExpiry, Sim, SimOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A simulated Qlik Sense Enterprise (QPS API, virtual proxy, engine websocket).
#[derive(Debug, Parser)]
#[command(name = "qlik-sim", version)]
struct Args {
    /// Directory for the PEM files (created if missing; reused when it holds a full set, so
    /// two simulators on one directory are two nodes of one site).
    #[arg(long)]
    cert_dir: PathBuf,
    /// Address to bind every listener to.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Proxy listener port (0 = ephemeral).
    #[arg(long, default_value_t = 0)]
    proxy_port: u16,
    /// QPS API listener port (0 = ephemeral).
    #[arg(long, default_value_t = 0)]
    qps_port: u16,
    /// Control listener port (0 = ephemeral).
    #[arg(long, default_value_t = 0)]
    control_port: u16,
    /// Virtual proxy prefix ("" = default virtual proxy).
    #[arg(long, default_value = "mashup")]
    virtual_proxy: String,
    /// Session cookie header name.
    #[arg(long, default_value = "X-Qlik-Session-mashup")]
    session_cookie: String,
    /// Serve the proxy over plain http.
    #[arg(long)]
    no_proxy_tls: bool,
    /// camelCase QPS API replies.
    #[arg(long)]
    camel_case: bool,
    /// Send OnAuthenticationInformation only after the client's first frame.
    #[arg(long)]
    auth_info_after_first_frame: bool,
    /// Never send OnAuthenticationInformation on proxy engine sockets (calls are still answered).
    #[arg(long, conflicts_with = "auth_info_after_first_frame")]
    no_auth_info: bool,
    /// Keep websockets open after mustAuthenticate:true.
    #[arg(long)]
    keep_open_after_must_authenticate: bool,
    /// Do not require the websocket CSRF token.
    #[arg(long)]
    no_csrf: bool,
    /// Append -HTTP to the cookie name over plain http.
    #[arg(long)]
    http_cookie_suffix: bool,
    /// Proxy session inactivity timeout in seconds.
    #[arg(long, default_value_t = 1800)]
    inactivity_timeout_secs: u64,
    /// Extra allowed websocket Origin host (repeatable).
    #[arg(long = "host-allow")]
    host_allow: Vec<String>,
    /// Make the virtual proxy a header-authentication one with this header (e.g. hdr-usr);
    /// static form `UserDirectory=<dir>; UserId=<id>` unless --header-auth-pattern is given.
    #[arg(long)]
    header_auth: Option<String>,
    /// Dynamic user directory pattern of the header, e.g. '$ud\\$id'.
    #[arg(long, requires = "header_auth")]
    header_auth_pattern: Option<String>,
    /// Serve the engine directly on this port (mutual TLS + X-Qlik-User; 0 = ephemeral).
    #[arg(long)]
    engine_port: Option<u16>,
    /// Read the last of a duplicated `qlik-csrf-token` parameter (default: the first).
    #[arg(long)]
    last_of_duplicate_params: bool,
    /// Every this many milliseconds, end random proxy sessions (as an inactivity timeout
    /// does: open websockets get OnSessionTimedOut); see --expire-random-fraction.
    #[arg(long)]
    expire_random_every_ms: Option<u64>,
    /// The probability that a session ends at each --expire-random-every-ms draw.
    #[arg(long, default_value_t = 0.05, requires = "expire_random_every_ms")]
    expire_random_fraction: f64,
}

impl Args {
    fn options(&self) -> SimOptions {
        SimOptions {
            bind: self.bind,
            proxy_port: self.proxy_port,
            qps_port: self.qps_port,
            control_port: self.control_port,
            virtual_proxy: self.virtual_proxy.clone(),
            session_cookie: self.session_cookie.clone(),
            proxy_tls: !self.no_proxy_tls,
            reply_casing: if self.camel_case {
                Casing::Camel
            } else {
                Casing::Pascal
            },
            auth_info_timing: if self.no_auth_info {
                AuthInfoTiming::Never
            } else if self.auth_info_after_first_frame {
                AuthInfoTiming::AfterFirstFrame
            } else {
                AuthInfoTiming::Immediate
            },
            close_after_must_authenticate: !self.keep_open_after_must_authenticate,
            require_csrf_token: !self.no_csrf,
            duplicate_param: if self.last_of_duplicate_params {
                DuplicateParam::Last
            } else {
                DuplicateParam::First
            },
            http_cookie_suffix: self.http_cookie_suffix,
            inactivity_timeout: Duration::from_secs(self.inactivity_timeout_secs),
            host_allow_list: self.host_allow.clone(),
            own_host_names: Vec::new(),
            header_auth: self.header_auth.as_ref().map(|header| HeaderAuth {
                header: header.clone(),
                dynamic_pattern: self.header_auth_pattern.clone(),
            }),
            engine_port: self.engine_port,
            random_expiry: self.expire_random_every_ms.map(|ms| RandomExpiry {
                every: Duration::from_millis(ms),
                fraction: self.expire_random_fraction,
            }),
        }
    }
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let sim = match Sim::start(args.options(), &args.cert_dir).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("qlik-sim: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let ready = serde_json::json!({
        "proxy_url": sim.proxy_url(),
        "qps_api_url": sim.qps_api_url(),
        "engine_url": sim.engine_url(),
        "control_url": sim.control_url(),
        "ca_cert": sim.pki().ca_cert,
        "client_cert": sim.pki().client_cert,
        "client_key": sim.pki().client_key,
    });
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{ready}")
        .and_then(|_| stdout.flush())
        .is_err()
    {
        eprintln!("qlik-sim: cannot write the ready line to stdout");
    }
    drop(stdout);
    terminated().await;
    sim.shutdown().await;
    std::process::ExitCode::SUCCESS
}
