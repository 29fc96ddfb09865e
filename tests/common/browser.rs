//! What the Chromium tests share: where the browser is, the check that everything they need was
//! installed (they fail, never skip, without it), and collecting a child's output.

use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

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
