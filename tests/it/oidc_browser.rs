//! OIDC login end to end in real headless Chromium against a real OpenID Provider
//! (node-oidc-provider, tests/oidc/provider.mjs): the built-in page → the IdP's login form, filled
//! in and submitted → /_gateway/callback → the page with the user and live data over the engine
//! websocket from qlik-sim → logout through the IdP → /_gateway/logged-out → the IdP asks for the
//! password again. The browser side is tests/browser/oidc.mjs (Playwright); this drives it.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::browser::{check_prerequisites, chromium, read_all};
use crate::common::oidc::{Idp, ALICE};
use crate::common::*;
use qlik_sim::{Counters, RecordedRequest, SessionInfo};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Whole browser run: launch, login at the IdP, page, live data, logout, login form again, close.
const NODE_TIMEOUT: Duration = Duration::from_secs(120);
const CLIENT_ID: &str = "qlik-gateway";
const CLIENT_SECRET: &str = "gateway-secret-for-the-browser-test";

/// What qlik-sim knew while the browser was logged in (before the logout ended it).
struct Snapshot {
    sessions: Vec<SessionInfo>,
    counters: Counters,
    requests: Vec<RecordedRequest>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_login_in_chromium_shows_live_engine_data_and_logout_ends_the_idp_session() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    check_prerequisites(root, &[("oidc", "oidc-provider")]);

    // The IdP first (its issuer goes into the gateway's config), the client once the gateway's
    // URL is known.
    let idp = Idp::start(json!([])).await;
    let secrets = tempfile::tempdir().expect("tempdir");
    let secret_file = secrets.path().join("client-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).expect("write the client secret");
    let env = Env::with(Setup {
        auth: Some(format!(
            "[auth]\nprovider = \"oidc\"\n[auth.oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
             client_secret_file = \"{}\"\nscopes = [\"openid\", \"profile\", \"email\", \"groups\"]\n\
             user_directory = \"CORP\"\nattributes = {{ groups = \"Group\" }}\n",
            idp.issuer,
            secret_file.display()
        )),
        ..Setup::default()
    })
    .await;
    idp.add_clients(json!([Idp::client(
        CLIENT_ID,
        Some(CLIENT_SECRET),
        &format!("{}/_gateway/callback", env.url),
        &format!("{}/_gateway/logged-out", env.url),
    )]))
    .await;
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("oidc_browser.png");
    let _ = std::fs::remove_file(&screenshot);

    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("tests/browser/oidc.mjs")
        .current_dir(root)
        .env("GATEWAY_URL", &env.url)
        .env("IDP_URL", &idp.issuer)
        .env("USERNAME", ALICE.0)
        .env("PASSWORD", ALICE.1)
        .env("EXPECT_USER", "CORP\\alice")
        .env("HANDSHAKE", "1")
        .env("CHROMIUM", chromium())
        .env("SCREENSHOT", &screenshot)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("could not run node (is Node.js 20+ installed?): {e}"));
    let mut stdin = child.stdin.take();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let stderr = read_all(child.stderr.take().expect("stderr"));

    // The script stops once logged in with live data and says so; qlik-sim's state is read then
    // (the logout ends the Qlik session) and the script is told to go on.
    let mut out = String::new();
    let mut during: Option<Snapshot> = None;
    let run = async {
        while let Ok(Some(line)) = stdout.next_line().await {
            out.push_str(&line);
            out.push('\n');
            let phase = serde_json::from_str::<Value>(&line).ok();
            if phase.as_ref().is_some_and(|v| v["phase"] == "logged-in") {
                let sim = env.sim().control();
                during = Some(Snapshot {
                    sessions: sim.sessions(),
                    counters: sim.counters(),
                    requests: sim.requests(),
                });
                if let Some(mut s) = stdin.take() {
                    let _ = s.write_all(b"log out\n").await;
                    let _ = s.flush().await;
                }
            }
        }
        child.wait().await
    };
    let status = tokio::time::timeout(NODE_TIMEOUT, run).await;
    let status = match status {
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
            let err = stderr.await.unwrap();
            panic!(
                "oidc.mjs did not finish in {NODE_TIMEOUT:?}\nstdout:\n{out}\nstderr:\n{err}\nIdP log:\n{}",
                idp.log()
            );
        }
    };
    let elapsed = started.elapsed();
    let err = stderr.await.unwrap();
    let report = format!(
        "node tests/browser/oidc.mjs: {status} after {elapsed:?}\nstdout:\n{out}\nstderr:\n{err}\n\
         screenshot: {}\nIdP log:\n{}",
        screenshot.display(),
        idp.log()
    );
    let result: Value = out
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l.trim())
                .ok()
                .filter(|v| v.get("ok").is_some())
        })
        .unwrap_or_else(|| panic!("no JSON result line\n{report}"));
    assert!(status.success() && result["ok"] == true, "{report}");
    assert_eq!(result["user"], "CORP\\alice", "{report}");
    eprintln!("browser run took {elapsed:?}: {result}\n{err}");

    // qlik-sim while logged in: a proxy session for CORP\alice only, with her groups as Group
    // attributes, and an engine websocket that carried that session's cookie (put there by the
    // gateway, never seen by the browser).
    let during =
        during.unwrap_or_else(|| panic!("the script never reported being logged in\n{report}"));
    let sessions = &during.sessions;
    assert!(
        !sessions.is_empty()
            && sessions
                .iter()
                .all(|s| s.user_directory == "CORP" && s.user_id == "alice"),
        "Qlik sessions while logged in: {sessions:?}"
    );
    for group in ["Sales", "Qlik Admins"] {
        assert!(
            sessions
                .iter()
                .all(|s| s.attributes.iter().any(|(k, v)| k == "Group" && v == group)),
            "Group={group} missing from the Qlik session's attributes: {sessions:?}"
        );
    }
    assert!(
        sessions.iter().any(|s| s.open_websockets >= 1),
        "no engine websocket open with alice's Qlik session while the page showed live data: {sessions:?}"
    );
    let cookie_name = "X-Qlik-Session-mashup";
    let alice_sockets = during
        .requests
        .iter()
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
        "no engine websocket at qlik-sim with CORP\\alice's session: {:?}",
        during
            .requests
            .iter()
            .filter(|r| r.websocket)
            .collect::<Vec<_>>()
    );
    let c = &during.counters;
    assert!(c.ws_upgrades >= 1, "{c:?}");
    assert_eq!(c.ws_must_authenticate, 0, "{c:?}");
    assert_eq!(c.ws_rejected, 0, "{c:?}");

    // After the logout: the Qlik session is gone from QPS, its websockets with it, and the second
    // visit (which stopped at the IdP's form) made no new one.
    let sim = env.sim().control();
    let after = sim.sessions();
    assert!(
        after.is_empty(),
        "Qlik sessions left after logout: {after:?}"
    );
    let c = sim.counters();
    assert!(
        c.sessions_deleted >= during.sessions.len() as u64,
        "the logout deleted no Qlik session: {c:?}"
    );
    assert_eq!(
        c.sessions_created, during.counters.sessions_created,
        "a Qlik session was created after the logout: {c:?}"
    );

    env.stop().await;
    drop(idp);
}
