//! Real enigma.js (tests/js, run with node's test runner) against the gateway and qlik-sim.

use std::path::Path;
use std::process::Command;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enigma_js_through_the_gateway() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/js/node_modules/enigma.js").is_dir()
            && root.join("tests/js/node_modules/ws").is_dir(),
        "tests/js/node_modules is missing: run `npm ci --prefix tests/js` first"
    );
    let env = Env::start().await;
    let cookie = env.login().await;
    let mut cmd = Command::new("node");
    // One file at a time: they share this gateway session, and one file's simulated timeouts
    // would end the other's Qlik session mid-test.
    cmd.arg("--test")
        .arg("--test-concurrency=1")
        .arg("tests/js/")
        .current_dir(root)
        .env("GATEWAY_URL", &env.url)
        .env("GATEWAY_COOKIE", &cookie)
        .env("SIM_CONTROL_URL", env.sim().control_url())
        .env("SALES_APP_ID", qlik_sim::SALES_APP_ID);
    // node blocks; the gateway keeps running on the runtime's other worker.
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("could not run node (is Node.js 18+ installed?): {e}"));
    assert!(status.success(), "node --test tests/js/ failed: {status}");
    let c = env.sim().control().counters();
    // One Qlik session for the login, and exactly one renewal per Qlik session Qlik ended (timed
    // out, closed or logged out); one lives at the end.
    assert_eq!(
        c.sessions_created,
        1 + c.sessions_expired + c.sessions_deleted,
        "{c:?}"
    );
    assert!(
        c.sessions_expired >= 1,
        "the JS tests time a session out: {c:?}"
    );
    assert_eq!(env.sim().control().sessions().len(), 1);
    // Not once was the user sent to a login (Qlik may have asked the gateway, after the Qlik
    // logout, whose stale session is renewed on the reconnect; the JS tests check what enigma.js saw).
    assert_eq!(env.state.stats.login_prompts(), 0);
    let fatal = env.state.stats.snapshot().fatal_notifications;
    assert!(fatal["OnSessionTimedOut"] >= 1, "{fatal:?}");
    env.stop().await;
}
