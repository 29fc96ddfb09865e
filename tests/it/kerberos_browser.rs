//! Windows login end to end in real headless Chromium against a real MIT KDC: the built-in page
//! → Kerberos/SPNEGO login → back to the page → live data over the engine websocket from qlik-sim.
//! The browser side is tests/browser/kerberos.mjs (Playwright); this drives it.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::browser::{check_prerequisites, chromium, read_all};
use crate::common::kdc::Kdc;
use crate::common::*;

/// Whole browser run: launch, warm-up, login, page, live data, close.
const NODE_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_login_in_chromium_shows_live_engine_data() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    check_prerequisites(root, &[]);

    let kdc = Kdc::start();
    let env = Env::with(Setup {
        auth: Some(format!(
            "[auth]\nprovider = \"negotiate\"\n[auth.negotiate]\nkeytab = \"{}\"\nreplay_cache = \"file2:{}\"\n",
            kdc.keytab().display(),
            kdc.path("rc").display()
        )),
        public_host: Some("localhost".into()),
        ..Setup::default()
    })
    .await;
    let ccache = kdc.ccache("alice", None, &["HTTP/localhost"]);
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kerberos_browser.png");
    let _ = std::fs::remove_file(&screenshot);

    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("tests/browser/kerberos.mjs")
        .current_dir(root)
        .envs(kdc.env())
        .env("KRB5CCNAME", format!("FILE:{}", ccache.display()))
        .env("GATEWAY_URL", &env.url)
        .env("EXPECT_USER", "TEST\\alice")
        .env("CHROMIUM", chromium())
        .env("SCREENSHOT", &screenshot)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("could not run node (is Node.js 20+ installed?): {e}"));
    let stdout = read_all(child.stdout.take().expect("stdout"));
    let stderr = read_all(child.stderr.take().expect("stderr"));
    let status = match tokio::time::timeout(NODE_TIMEOUT, child.wait()).await {
        Ok(status) => status.expect("wait for node"),
        Err(_) => {
            // SIGTERM first: Playwright then closes Chromium instead of orphaning it.
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
            let (out, err) = (stdout.await.unwrap(), stderr.await.unwrap());
            panic!(
                "kerberos.mjs did not finish in {NODE_TIMEOUT:?}\nstdout:\n{out}\nstderr:\n{err}"
            );
        }
    };
    let elapsed = started.elapsed();
    let (out, err) = (stdout.await.unwrap(), stderr.await.unwrap());
    let report = format!(
        "node tests/browser/kerberos.mjs: {status} after {elapsed:?}\nstdout:\n{out}\nstderr:\n{err}\nscreenshot: {}",
        screenshot.display()
    );
    let result: serde_json::Value = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .unwrap_or_else(|| panic!("no JSON result line\n{report}"));
    assert!(status.success() && result["ok"] == true, "{report}");
    assert_eq!(result["user"], "TEST\\alice", "{report}");
    eprintln!("browser run took {elapsed:?}: {result}\n{err}");

    // qlik-sim's side: a proxy session for the Kerberos user only, and engine websockets that
    // carried that session's cookie (put there by the gateway, never seen by the browser).
    let sim = env.sim().control();
    let sessions = sim.sessions();
    assert!(
        !sessions.is_empty()
            && sessions
                .iter()
                .all(|s| s.user_directory == "TEST" && s.user_id == "alice"),
        "Qlik sessions: {sessions:?}"
    );
    let cookie_name = "X-Qlik-Session-mashup";
    let alice_sockets = sim
        .requests()
        .into_iter()
        .filter(|r| r.websocket && r.path.starts_with("/mashup/app/"))
        .filter(|r| {
            r.headers
                .get("cookie")
                .into_iter()
                .flatten()
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().split_once('='))
                .any(|(k, v)| k == cookie_name && sessions.iter().any(|s| s.session_id == v))
        })
        .count();
    assert!(
        alice_sockets >= 1,
        "no engine websocket at qlik-sim with TEST\\alice's session: {:?}",
        sim.requests()
            .iter()
            .filter(|r| r.websocket)
            .collect::<Vec<_>>()
    );
    let c = sim.counters();
    assert!(c.ws_upgrades >= 1, "{c:?}");
    assert_eq!(c.ws_must_authenticate, 0, "{c:?}");
    assert_eq!(c.ws_rejected, 0, "{c:?}");

    env.stop().await;
    drop(kdc);
}
