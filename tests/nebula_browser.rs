//! nebula.js (`@nebula.js/stardust` + `@nebula.js/sn-bar-chart`) in headless Chromium renders a
//! bar chart of qlik-sim's Sales app through the gateway, with enigma.js in the page on a URL
//! relative to the page and no auth code; a click on a bar selects that region in Qlik and the
//! chart re-renders with one bar. The browser side is tests/browser/nebula.mjs (it bundles
//! tests/browser/nebula/page.js with esbuild); the screenshots go to target/tmp/nebula/.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::browser::{check_prerequisites, chromium, read_all};
use common::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const NODE_TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nebula_bar_chart_renders_and_selects_through_the_gateway() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    check_prerequisites(
        root,
        &[
            ("browser", "@nebula.js/stardust"),
            ("browser", "@nebula.js/sn-bar-chart"),
            ("browser", "enigma.js"),
            ("browser", "esbuild"),
        ],
    );
    let site = tempfile::tempdir().unwrap();
    std::fs::copy(
        root.join("tests/browser/nebula/index.html"),
        site.path().join("index.html"),
    )
    .unwrap();
    let env = Env::with(Setup {
        mashup: format!("dir = \"{}\"", site.path().display()),
        ..Setup::default()
    })
    .await;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nebula");
    std::fs::create_dir_all(&shots).unwrap();

    let mut child = tokio::process::Command::new("node")
        .arg("tests/browser/nebula.mjs")
        .current_dir(root)
        .env("GATEWAY_URL", &env.url)
        .env("MASHUP_DIR", site.path())
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
        let mut selected_in_qlik = None;
        while let Ok(Some(line)) = out.next_line().await {
            seen.push(line.clone());
            if line.contains("\"phase\":\"selected\"") {
                selected_in_qlik = Some(env.sim().control().selections());
                stdin
                    .write_all(b"go\n")
                    .await
                    .expect("answer the handshake");
            }
            if line.contains("\"result\"") {
                break;
            }
        }
        (seen, selected_in_qlik)
    };
    let Ok((seen, selected_in_qlik)) = tokio::time::timeout(NODE_TIMEOUT, run).await else {
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
    eprintln!("{result}");
    // The click reached Qlik: the page's engine session has Region = North selected.
    let selected = selected_in_qlik.expect("the page reported its selection");
    assert_eq!(selected.len(), 1, "one engine session: {selected:?}");
    assert_eq!(selected[0].app_id, qlik_sim::SALES_APP_ID);
    assert_eq!(
        selected[0].fields.get("Region"),
        Some(&vec!["North".to_string()]),
        "{selected:?}"
    );
    for shot in [
        "nebula-bars.png",
        "nebula-selecting.png",
        "nebula-selected.png",
    ] {
        assert!(shots.join(shot).is_file(), "{shot} saved");
    }
    assert_eq!(env.sim().control().counters().ws_must_authenticate, 0);
    env.stop().await;
}
