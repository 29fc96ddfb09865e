//! The React example mashup (examples/react-mashup, built) behind the gateway in headless
//! Chromium: login → engine data → selections → Qlik expires every session under the open page →
//! the page keeps working with no login and no reload → a second user → logout.
//! The browser side is tests/browser/mashup.mjs; screenshots go to target/tmp/mashup/.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::browser::{check_prerequisites, chromium, read_all};
use crate::common::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const NODE_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_react_mashup_works_end_to_end_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    check_prerequisites(root, &[]);
    let dist = root.join("examples/react-mashup/dist");
    assert!(
        dist.join("index.html").is_file(),
        "{} is missing: run ./scripts/test.sh, which builds the example (npm ci && npm run build in examples/react-mashup)",
        dist.display()
    );
    let env = Env::with(Setup {
        auth: Some(
            "[auth]\nprovider = \"trusted_header\"\n[auth.trusted_header]\nheader = \"X-Remote-User\"\ntrusted_proxies = [\"127.0.0.1/32\"]\nuser_directory = \"CORP\"\n"
                .into(),
        ),
        mashup: format!("dir = \"{}\"", dist.display()),
        ..Setup::default()
    })
    .await;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mashup");
    std::fs::create_dir_all(&shots).unwrap();

    let mut child = tokio::process::Command::new("node")
        .arg("tests/browser/mashup.mjs")
        .current_dir(root)
        .env("GATEWAY_URL", &env.url)
        .env("CHROMIUM", chromium())
        .env("SHOTS", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let stderr = read_all(child.stderr.take().expect("stderr"));
    let run = async {
        let mut seen = Vec::new();
        while let Ok(Some(line)) = out.next_line().await {
            seen.push(line.clone());
            if line.contains("\"phase\":\"live\"") {
                // The page is live: Qlik loses every session under it.
                let before = env.sim().control().counters().sessions_created;
                env.sim().control().expire_all_sessions();
                assert!(before >= 1);
                stdin
                    .write_all(b"go\n")
                    .await
                    .expect("answer the handshake");
            }
            if line.contains("\"result\"") {
                break;
            }
        }
        seen
    };
    let Ok(seen) = tokio::time::timeout(NODE_TIMEOUT, run).await else {
        let _ = child.kill().await;
        panic!(
            "the browser test did not finish within {NODE_TIMEOUT:?}; screenshots in {}",
            shots.display()
        );
    };
    let status = child.wait().await.expect("node exits");
    let err = stderr.await.unwrap_or_default();
    let result = seen
        .iter()
        .rev()
        .find(|l| l.contains("\"result\""))
        .cloned()
        .unwrap_or_default();
    assert!(
        status.success() && result.contains("\"ok\":true"),
        "browser test failed: {result}\nstderr:\n{err}\nscreenshots in {}",
        shots.display()
    );
    // Qlik's view: both users had sessions; none ever had to authenticate.
    let c = env.sim().control().counters();
    assert_eq!(c.ws_must_authenticate, 0, "{c:?}");
    assert!(c.sessions_expired >= 1 && c.sessions_created >= 3, "{c:?}");
    for shot in [
        "mashup-live.png",
        "mashup-after-expiry.png",
        "mashup-bob.png",
        "mashup-logged-out.png",
    ] {
        assert!(shots.join(shot).is_file(), "{shot} saved");
    }
    env.stop().await;
}
