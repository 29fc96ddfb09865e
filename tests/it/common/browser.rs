//! What the Chromium tests share: where the browser is, the check that everything they need was
//! installed (they fail, never skip, without it), and collecting a child's output.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// `$CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Panics naming what is missing and how to get it: Chromium, playwright-core, and each
/// `tests/<dir>/node_modules/<package>` in `npm`.
pub fn check_prerequisites(root: &Path, npm: &[(&str, &str)]) {
    let browser = chromium();
    assert!(
        browser.is_file(),
        "{} is missing: run ./scripts/test.sh, which installs Chromium (apt-get install chromium)",
        browser.display()
    );
    for (dir, package) in [("browser", "playwright-core")].iter().chain(npm) {
        assert!(
            root.join(format!("tests/{dir}/node_modules/{package}"))
                .is_dir(),
            "tests/{dir}/node_modules is missing: run ./scripts/test.sh, which installs it \
             (npm ci --prefix tests/{dir})"
        );
    }
}

/// Reads a child's pipe to the end in the background.
pub fn read_all<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    mut r: R,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Builds the client-library test pages (tests/browser/build-pages.mjs: examples/qlik-api
/// bundled, the qlik-embed loader, the iframe page) into a new directory for `[mashup] dir`.
pub fn build_client_pages(root: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("node")
        .arg("tests/browser/build-pages.mjs")
        .arg(dir.path())
        .current_dir(root)
        .status()
        .expect("node runs");
    assert!(status.success(), "tests/browser/build-pages.mjs failed");
    dir
}

/// Runs `node tests/browser/{script}` with `GATEWAY_URL`, `CHROMIUM` and `SHOTS` (made if
/// missing), and `timeout` for all of it. Each line it prints goes to `on_line`, and what that
/// returns is written to its stdin (the handshake of scripts that let the test act mid-way).
/// Panics unless it ends with a `{"result":{"ok":true,…}}` line; returns that line.
pub async fn run_browser_script(
    root: &Path,
    script: &str,
    gateway_url: &str,
    shots: &Path,
    timeout: std::time::Duration,
    mut on_line: impl FnMut(&str) -> Option<&'static str>,
) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    std::fs::create_dir_all(shots).expect("screenshot dir");
    let mut child = tokio::process::Command::new("node")
        .arg(format!("tests/browser/{script}"))
        .current_dir(root)
        .env("GATEWAY_URL", gateway_url)
        .env("CHROMIUM", chromium())
        .env("SHOTS", shots)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let stderr = read_all(child.stderr.take().expect("stderr"));
    let run = async {
        while let Ok(Some(line)) = out.next_line().await {
            if line.contains("\"result\"") {
                return line;
            }
            if let Some(answer) = on_line(&line) {
                stdin
                    .write_all(answer.as_bytes())
                    .await
                    .expect("answer the script");
            }
        }
        String::new()
    };
    let Ok(result) = tokio::time::timeout(timeout, run).await else {
        let _ = child.kill().await;
        panic!(
            "{script} did not finish within {timeout:?}; screenshots in {}",
            shots.display()
        );
    };
    let status = child.wait().await.expect("node exits");
    let err = stderr.await.unwrap_or_default();
    assert!(
        status.success() && result.contains("\"ok\":true"),
        "{script} failed: {result}\nstderr:\n{err}\nscreenshots in {}",
        shots.display()
    );
    result
}

/// A `tests/browser/*.mjs` script (run by node from the repository root, with `CHROMIUM` and
/// `SHOTS` set) speaking the handshake of tests/browser/pages.mjs: `{"phase":…}` lines the
/// driver answers with a line on stdin, then one `{"result":…}` line.
pub struct BrowserScript {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    stderr: tokio::task::JoinHandle<String>,
    result: Option<serde_json::Value>,
    shots: PathBuf,
    /// A safety net per phase, so a stuck page fails the test instead of hanging it.
    timeout: std::time::Duration,
}

impl BrowserScript {
    /// Starts `script` with `envs`; screenshots go to `shots` (created).
    pub fn start(
        script: &str,
        envs: &[(&str, std::ffi::OsString)],
        shots: &Path,
        timeout: std::time::Duration,
    ) -> BrowserScript {
        std::fs::create_dir_all(shots).expect("screenshot dir");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .current_dir(root)
            .env("CHROMIUM", chromium())
            .env("SHOTS", shots)
            .envs(envs.iter().map(|(k, v)| (*k, v)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take().expect("stdin");
        let out = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let stderr = read_all(child.stderr.take().expect("stderr"));
        BrowserScript {
            child,
            stdin,
            out,
            stderr,
            result: None,
            shots: shots.to_path_buf(),
            timeout,
        }
    }

    /// The next `{"phase":…}` line, or `None` once the result came or the script ended.
    pub async fn next_phase(&mut self) -> Option<serde_json::Value> {
        while self.result.is_none() {
            let line = match tokio::time::timeout(self.timeout, self.out.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(_) => return None,
                Err(_) => {
                    let _ = self.child.kill().await;
                    panic!(
                        "the browser script said nothing for {:?}; screenshots in {}",
                        self.timeout,
                        self.shots.display()
                    );
                }
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v.get("phase").is_some() {
                return Some(v);
            }
            if let Some(r) = v.get("result") {
                self.result = Some(r.clone());
            }
        }
        None
    }

    /// Answers the last phase: the page goes on.
    pub async fn answer(&mut self) {
        self.stdin
            .write_all(b"go\n")
            .await
            .expect("answer the handshake");
    }

    /// Waits for the script's end; panics with its result, stderr and the screenshots'
    /// directory unless it succeeded. Returns the result.
    pub async fn finish(mut self) -> serde_json::Value {
        while self.next_phase().await.is_some() {}
        let status = self.child.wait().await.expect("node exits");
        let err = (&mut self.stderr).await.unwrap_or_default();
        let result = self.result.take().unwrap_or_default();
        assert!(
            status.success() && result["ok"] == true,
            "browser test failed: {result}\nstderr:\n{err}\nscreenshots in {}",
            self.shots.display()
        );
        result
    }
}

/// A `[mashup]` dir holding a copy of `index_html` (a path from the repository root); the
/// browser script bundles the page's module into it (tests/browser/pages.mjs `bundlePage`).
pub fn page_site(index_html: &str) -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let site = tempfile::tempdir().expect("tempdir");
    std::fs::copy(root.join(index_html), site.path().join("index.html"))
        .expect("copy the page's index.html");
    site
}
