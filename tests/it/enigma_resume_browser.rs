//! enigma.js as Qlik's November 2024 article shows it, in headless Chromium through the real
//! gateway binary with the Redis session store: the page fetches `{mount}/qps/csrftoken`, puts
//! the `qlik-csrf-token` it read on its own engine URL, and uses `suspendOnClose: true`. Qlik
//! expires the session under the open socket, then the gateway restarts: each time enigma.js
//! `resume()`s on the same URL (its token stale), with no login and the same gateway session,
//! and the app still answers. The browser side is tests/browser/enigma_resume.mjs
//! (page: tests/browser/resume/page.js); screenshots go to target/tmp/enigma-resume/.

use std::path::Path;
use std::time::Duration;

use crate::common::browser::{check_prerequisites, page_site, BrowserScript};
use crate::common::redis_server::{free_port, key_file, RedisServer};
use crate::common::*;

const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

/// How many `login` audit lines a gateway process logged.
fn logins(log: &str) -> usize {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "login")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enigma_resumes_with_its_own_csrf_token_across_qlik_expiry_and_a_gateway_restart() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    check_prerequisites(root, &[("browser", "enigma.js"), ("browser", "esbuild")]);
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let sim = qlik_sim::Sim::start(qlik_sim::SimOptions::default(), &dir.path().join("pki"))
        .await
        .unwrap();
    let site = page_site("tests/browser/resume/index.html");
    let key = key_file(dir.path(), "session.key");
    let setup = Setup {
        session: format!(
            "store = \"redis\"\nredis_url = \"{}\"\nencryption_key_file = \"{}\"\n",
            redis.url(),
            key.display()
        ),
        mashup: format!("dir = \"{}\"", site.path().display()),
        ..Setup::default()
    };
    // One fixed port: the page reconnects to where the gateway was.
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let toml = config_toml(&sim, &setup, addr).replace("store = \"memory\"\n", "");
    let mut gateway = Some(Binary::start(dir.path(), &toml, &[]).await);
    let url = gateway.as_ref().map(Binary::url).unwrap_or_default();

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("enigma-resume");
    let mut script = BrowserScript::start(
        "tests/browser/enigma_resume.mjs",
        &[
            ("GATEWAY_URL", url.into()),
            ("MASHUP_DIR", site.path().into()),
        ],
        &shots,
        PHASE_TIMEOUT,
    );
    let mut logs = Vec::new();
    let mut page_token = String::new();
    while let Some(phase) = script.next_phase().await {
        match phase["phase"].as_str() {
            Some("open") => {
                page_token = phase["token"].as_str().unwrap_or_default().to_string();
                sim.control().clear_requests();
                sim.control().expire_all_sessions();
            }
            Some("resumed-1") => {
                let (status, log) = gateway.take().expect("running").stop().await;
                assert!(status.success(), "the gateway stopped cleanly:\n{log}");
                logs.push(log);
                gateway = Some(Binary::start(dir.path(), &toml, &[]).await);
            }
            _ => {}
        }
        script.answer().await;
    }
    let result = script.finish().await;
    eprintln!("{result}");
    let (_, log) = gateway.take().expect("running").stop().await;
    logs.push(log);
    // One login, on the first visit; the restarted gateway found the session in Redis.
    assert_eq!(logins(&logs[0]), 1, "{}", logs[0]);
    assert_eq!(logins(&logs[1]), 0, "{}", logs[1]);
    // Every upgrade since the expiry carried the URL's token (stale: Qlik's session is new)
    // in the page's URL, and one token, the gateway's, at Qlik.
    let upgrades: Vec<_> = sim
        .control()
        .requests()
        .into_iter()
        .filter(|r| r.websocket)
        .collect();
    assert!(upgrades.len() >= 2, "{upgrades:?}");
    for u in &upgrades {
        let query = u.query.clone().unwrap_or_default();
        let tokens: Vec<_> = url::form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == "qlik-csrf-token")
            .map(|(_, v)| v.into_owned())
            .collect();
        assert_eq!(tokens.len(), 1, "{query}");
        assert_ne!(
            tokens[0], page_token,
            "the stale token reached Qlik: {query}"
        );
    }
    let c = sim.control().counters();
    assert_eq!(c.ws_must_authenticate, 0, "{c:?}");
    assert!(c.sessions_expired >= 1, "{c:?}");
    for shot in [
        "resume-open.png",
        "resume-resumed-1.png",
        "resume-resumed-2.png",
    ] {
        assert!(shots.join(shot).is_file(), "{shot} saved");
    }
    drop(redis);
}
