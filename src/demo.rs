//! `qlik-gateway demo`: a simulated Qlik in-process, the gateway with a static user, and the
//! built-in page, so a newcomer sees the whole flow with one command.
// A command's output, not logging: the demo prints its URLs and hints for the person who started it.
#![allow(clippy::print_stdout, clippy::print_stderr)]

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
    // The configured public URL, not the listen address: `0.0.0.0:8080` is no address a browser
    // can open, and QLIK_GATEWAY__SERVER__PUBLIC_URL may have replaced it.
    eprintln!(
        "\n  qlik-gateway demo\n  open {}/  (user DEV\\alice, simulated Qlik at {}, control API {})\n",
        cfg.server.public_origin,
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

/// The URL a browser on this machine opens: the listen address itself, or `localhost` when the
/// gateway listens on every interface (`--listen 0.0.0.0:8080` in a container with its port
/// published), because `http://0.0.0.0:8080` opens nowhere and the engine websocket's Origin must
/// match the public URL.
fn public_url(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        format!("http://localhost:{}", listen.port())
    } else {
        format!("http://{listen}")
    }
}

/// When listening on every interface, the loopback addresses also reach the gateway: let pages
/// opened as `http://127.0.0.1:PORT` or `http://[::1]:PORT` open the engine websocket too.
fn loopback_origins(listen: SocketAddr) -> Vec<String> {
    if listen.ip().is_unspecified() {
        let port = listen.port();
        vec![
            format!("http://127.0.0.1:{port}"),
            format!("http://[::1]:{port}"),
        ]
    } else {
        Vec::new()
    }
}

/// The configuration the demo runs with: the same keys an operator writes.
pub fn demo_config(sim: &Sim, listen: SocketAddr) -> String {
    let pki = sim.pki();
    format!(
        r#"
[server]
listen = "{listen}"
public_url = "{public_url}"

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

[security]
allowed_origins = {allowed_origins:?}
"#,
        public_url = public_url(listen),
        allowed_origins = loopback_origins(listen),
        proxy = sim.proxy_url(),
        qps = sim.qps_api_url(),
        cert = pki.client_cert.display().to_string(),
        key = pki.client_key.display().to_string(),
        ca = pki.ca_cert.display().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn demo_public_origin(listen: &str) -> (String, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let sim = Sim::start(SimOptions::default(), dir.path()).await.unwrap();
        let cfg = config::load_str(&demo_config(&sim, listen.parse().unwrap())).unwrap();
        sim.shutdown().await;
        (cfg.server.public_origin, cfg.security.allowed_origins)
    }

    #[tokio::test]
    async fn listening_on_every_interface_gives_a_url_a_browser_can_open() {
        let (public, allowed) = demo_public_origin("0.0.0.0:8080").await;
        assert_eq!(public, "http://localhost:8080");
        assert_eq!(allowed, ["http://127.0.0.1:8080", "http://[::1]:8080"]);
        let (public, _) = demo_public_origin("[::]:8081").await;
        assert_eq!(public, "http://localhost:8081");
    }

    #[tokio::test]
    async fn a_specific_address_is_its_own_url() {
        let (public, allowed) = demo_public_origin("127.0.0.1:8080").await;
        assert_eq!(public, "http://127.0.0.1:8080");
        assert!(allowed.is_empty());
    }
}
