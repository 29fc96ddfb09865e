//! The `qlik-gateway` command: run, check-config, doctor, demo.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use qlik_gateway::config::{self, Config};
use qlik_gateway::server::shutdown_signal;
use qlik_gateway::state::AppState;

mod allocator;

/// mimalloc instead of glibc's malloc: the proxy path allocates and frees small buffers and
/// header maps on every request, where glibc's allocator cost ~8% of the gateway's CPU.
#[global_allocator]
static GLOBAL: allocator::MiMalloc = allocator::MiMalloc;

#[derive(Parser)]
#[command(
    name = "qlik-gateway",
    version,
    about = "Same-origin gateway for Qlik Sense mashups"
)]
struct Cli {
    /// Configuration file (TOML). Every key can be overridden by QLIK_GATEWAY__SECTION__KEY.
    #[arg(long, global = true, env = "QLIK_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and exit non-zero naming the offending key.
    CheckConfig,
    /// Check a live deployment: certificates, QPS (mTLS, xrfkey), a probe session, the session
    /// cookie name, the engine websocket, clock skew, keytab; each failure with its fix.
    Doctor {
        /// The probe user, DIRECTORY\userid.
        #[arg(long, default_value = "QLIK-GATEWAY\\doctor")]
        user: String,
    },
    /// Start a simulated Qlik, the gateway with a static user and a demo page on 127.0.0.1:8080.
    Demo {
        /// Address for the gateway.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        // `run` serves on threads of its own (`server.threads`), each with a single-threaded
        // scheduler; the one it starts here is the first of them.
        return run(cli.config);
    };
    // The other commands: with one CPU (a container's quota, a pinned process) a
    // single-threaded scheduler, which does without the work-stealing machinery that only
    // costs when there is nothing to steal.
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match command {
            Command::Demo { listen } => demo(listen).await,
            Command::CheckConfig => check_config(cli.config),
            Command::Doctor { user } => doctor(cli.config, &user).await,
        }
    })
}

#[cfg(feature = "demo")]
async fn demo(listen: std::net::SocketAddr) -> ExitCode {
    qlik_gateway::demo::run(listen).await
}

/// Release builds for production (the Dockerfile's) carry no simulated Qlik.
#[cfg(not(feature = "demo"))]
async fn demo(_listen: std::net::SocketAddr) -> ExitCode {
    eprintln!("error: this qlik-gateway was built without the simulated Qlik (the `demo` feature), as production builds are; run the demo from the source (`cargo run --release -- demo`) or with deploy/compose (qlik-gateway in front of the qlik-sim image)");
    ExitCode::from(2)
}

fn load(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    let Some(path) = path else {
        eprintln!("error: no configuration: pass --config FILE or set QLIK_GATEWAY_CONFIG (see config/qlik-gateway.example.toml)");
        return Err(ExitCode::from(2));
    };
    config::load(&path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn check_config(path: Option<PathBuf>) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    // Certificates are parsed too, not only found: a PEM without a key fails here, not at login.
    if let Err(e) = AppState::new(cfg) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    println!("configuration ok");
    ExitCode::SUCCESS
}

async fn doctor(path: Option<PathBuf>, user: &str) -> ExitCode {
    let opts = match qlik_gateway::doctor::Options::parse_user(user) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = match load(path.clone()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let path = path.unwrap_or_default();
    let report = qlik_gateway::doctor::run(&cfg, &path, &opts, true).await;
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run(path: Option<PathBuf>) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    qlik_gateway::logging::init(&cfg.log);
    match runtime.block_on(qlik_gateway::serve(cfg, None, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
