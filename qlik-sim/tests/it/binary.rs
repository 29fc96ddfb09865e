//! The `qlik-sim` binary prints one ready line of JSON and stops on SIGTERM.

use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn binary_prints_ready_line_and_stops_on_sigterm() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_qlik-sim"))
        .arg("--cert-dir")
        .arg(dir.path())
        .args([
            "--no-proxy-tls",
            "--camel-case",
            "--host-allow",
            "example.com",
            "--engine-port",
            "0",
            "--header-auth",
            "hdr-usr",
            "--header-auth-pattern",
            "$ud\\\\$id",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn qlik-sim");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("ready line in time")
        .expect("read")
        .expect("a line");
    let ready: Value = serde_json::from_str(&line).expect("ready line is JSON");
    for key in [
        "proxy_url",
        "qps_api_url",
        "control_url",
        "ca_cert",
        "client_cert",
        "client_key",
    ] {
        assert!(ready[key].is_string(), "{key} in {line}");
    }
    assert!(ready["proxy_url"]
        .as_str()
        .expect("url")
        .starts_with("http://127.0.0.1:"));
    assert!(ready["engine_url"]
        .as_str()
        .expect("engine_url")
        .starts_with("wss://127.0.0.1:"));

    // The header-authentication virtual proxy with the dynamic pattern.
    let echo: Value = reqwest::Client::new()
        .get(format!(
            "{}/mashup/sim/echo",
            ready["proxy_url"].as_str().expect("url")
        ))
        .header("hdr-usr", "CORP\\alice")
        .send()
        .await
        .expect("echo")
        .json()
        .await
        .expect("json");
    assert_eq!(echo["user"]["userId"], "alice");
    assert!(std::path::Path::new(ready["client_key"].as_str().expect("path")).exists());

    let counters: Value = reqwest::get(format!(
        "{}/control/counters",
        ready["control_url"].as_str().expect("url")
    ))
    .await
    .expect("control")
    .json()
    .await
    .expect("json");
    assert_eq!(counters["proxy_requests"], 1);
    assert_eq!(counters["header_sessions"], 1);

    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}
