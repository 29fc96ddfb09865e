//! `qlik-gateway demo`: a simulated Qlik in-process, the gateway with a static user, and the
//! built-in page, so a newcomer sees the whole flow with one command.

use std::net::SocketAddr;
use std::process::ExitCode;

use qlik_sim::{Sim, SimOptions};

use crate::config;

/// Runs until Ctrl-C / SIGTERM.
pub async fn run(listen: SocketAddr) -> ExitCode {
    crate::logging::init(&config::LogConfig {
        json: false,
        level: "info".into(),
    });
    // Bind first so that `--listen 127.0.0.1:0` works: public_url needs the real port.
    let listener = match std::net::TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}; pass --listen with a free address");
            return ExitCode::FAILURE;
        }
    };
    let listen = listener.local_addr().unwrap_or(listen);
    let dir = std::env::temp_dir().join(format!("qlik-gateway-demo-{}", std::process::id()));
    let sim = match Sim::start(SimOptions::default(), &dir).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot start the simulated Qlik: {e}");
            return ExitCode::FAILURE;
        }
    };
    let toml = demo_config(&sim, listen);
    let cfg = match config::load_str(&toml) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: demo configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "\n  qlik-gateway demo\n  open http://{listen}/  (user DEV\\alice, simulated Qlik at {}, control API {})\n",
        sim.proxy_url(),
        sim.control_url()
    );
    let result = crate::serve(cfg, Some(listener), crate::server::shutdown_signal()).await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration the demo runs with: the same keys an operator writes.
pub fn demo_config(sim: &Sim, listen: SocketAddr) -> String {
    let pki = sim.pki();
    format!(
        r#"
[server]
listen = "{listen}"
public_url = "http://{listen}"

[session]
store = "memory"

[auth]
provider = "static"
[auth.static]
user_directory = "DEV"
user_id = "alice"

[qlik]
proxy_url = "{proxy}"
qps_api_url = "{qps}"
virtual_proxy = "mashup"
session_cookie = "X-Qlik-Session-mashup"
client_cert = {cert:?}
client_key = {key:?}
ca_cert = {ca:?}
"#,
        proxy = sim.proxy_url(),
        qps = sim.qps_api_url(),
        cert = pki.client_cert.display().to_string(),
        key = pki.client_key.display().to_string(),
        ca = pki.ca_cert.display().to_string(),
    )
}
