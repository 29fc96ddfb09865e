//! The mashup developer's loop: the React example's Vite dev server behind the gateway
//! (`mashup.upstream`) in headless Chromium; an edit to a source file reaches the open page through
//! the HMR websocket, which the gateway proxies on its own origin.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::browser::{check_prerequisites, chromium, read_all};
use crate::common::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const NODE_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_edit_reaches_the_page_through_the_gateway() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    check_prerequisites(root, &[("../examples/react-mashup", "vite")]);
    let example = root.join("examples/react-mashup");

    // A copy of the example, so the edit never touches the repository.
    let work = tempfile::tempdir().unwrap();
    for f in ["index.html", "vite.config.js", "package.json"] {
        std::fs::copy(example.join(f), work.path().join(f)).unwrap();
    }
    copy_dir(&example.join("src"), &work.path().join("src"));
    std::os::unix::fs::symlink(
        example.join("node_modules"),
        work.path().join("node_modules"),
    )
    .unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut vite = tokio::process::Command::new("node")
        .arg(example.join("node_modules/vite/bin/vite.js"))
        .current_dir(work.path())
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        // Keep Vite's dependency cache in the copy, not in the shared node_modules.
        .env("VITE_CACHE_DIR", work.path().join(".vite"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("vite starts");
    let vite_err = read_all(vite.stderr.take().expect("stderr"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = vite.try_wait() {
            panic!(
                "vite exited ({status}): {}",
                vite_err.await.unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "vite did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let env = Env::with(Setup {
        mashup: format!("upstream = \"http://127.0.0.1:{port}\""),
        ..Setup::default()
    })
    .await;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mashup");
    std::fs::create_dir_all(&shots).unwrap();
    let mut child = tokio::process::Command::new("node")
        .arg("tests/browser/mashup_hmr.mjs")
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
    let app = work.path().join("src/App.jsx");
    let run = async {
        let mut result = String::new();
        while let Ok(Some(line)) = out.next_line().await {
            if line.contains("\"phase\":\"loaded\"") {
                let text = std::fs::read_to_string(&app).unwrap();
                assert!(text.contains("Sales by region</h1>"), "the heading to edit");
                std::fs::write(
                    &app,
                    text.replace("Sales by region</h1>", "Sales by region (edited)</h1>"),
                )
                .unwrap();
                stdin.write_all(b"go\n").await.unwrap();
            }
            if line.contains("\"result\"") {
                result = line;
                break;
            }
        }
        result
    };
    let result = tokio::time::timeout(NODE_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("the HMR test did not finish in {NODE_TIMEOUT:?}"));
    let status = child.wait().await.unwrap();
    let err = stderr.await.unwrap_or_default();
    assert!(
        status.success() && result.contains("\"ok\":true"),
        "{result}\n{err}"
    );
    let _ = vite.kill().await;
    env.stop().await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
