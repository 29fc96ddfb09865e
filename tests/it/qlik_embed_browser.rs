//! qlik-embed's loader and Single / App Integration iframes behind the gateway in headless Chromium.
//!
//! qlik-embed: the npm loader (`@qlik/embed-web-components` 1.6, unmodified) with
//! `data-auth-type="windowscookie"` and `data-login-uri`, against qlik-sim's STAND-IN
//! `{mount}/qlik-embed/main.js`. Qlik's qlik-embed runtime itself is not available here: what is
//! tested is the loader's authentication steps (no session: the gateway's login and back; a
//! session: main.js loads) and that `<qlik-embed>` props reach the runtime.
//!
//! Iframes: qlik-sim's Single and App Integration pages in a mashup page's iframes open the engine
//! websocket themselves and show live data (one selection, seen in both: one engine session);
//! Qlik's response has no frame-blocking header added; the gateway's own pages are never framed.
//! The browser sides are tests/browser/qlik-embed.mjs and iframes.mjs; screenshots go to
//! target/tmp/qlik-embed/.

use std::path::Path;
use std::time::Duration;

use crate::common::browser::{build_client_pages, check_prerequisites, run_browser_script};
use crate::common::*;

const TIMEOUT: Duration = Duration::from_secs(90);

async fn run(script: &str, mashup_extra: &str) -> (Env, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    check_prerequisites(
        root,
        &[
            ("browser", "@qlik/embed-web-components"),
            ("browser", "esbuild"),
        ],
    );
    let pages = build_client_pages(root);
    let env = Env::with(Setup {
        mashup: format!("dir = \"{}\"\n{mashup_extra}", pages.path().display()),
        ..Setup::default()
    })
    .await;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qlik-embed");
    let result = run_browser_script(root, script, &env.url, &shots, TIMEOUT, |_| None).await;
    println!("{result}");
    drop(pages);
    (env, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_qlik_embed_loader_logs_in_through_the_gateway_and_loads_main_js() {
    // The page is public so that the loader, not the gateway, meets the missing session.
    let (env, result) = run("qlik-embed.mjs", "public_paths = [\"/embed/\"]").await;
    assert!(result.contains("no session: "), "{result}");
    // Qlik's view: main.js was asked for with the user's Qlik session (and only then answered).
    let asked: Vec<_> = env
        .sim()
        .control()
        .requests()
        .into_iter()
        .filter(|r| r.path == "/mashup/qlik-embed/main.js")
        .collect();
    assert!(
        asked.len() >= 2,
        "the loader's fetch and the script: {asked:?}"
    );
    let session = &env.sim().control().sessions()[0].session_id;
    assert!(asked
        .iter()
        .all(|r| r.headers["cookie"].join("; ").contains(session.as_str())));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_and_app_integration_iframes_show_live_data_and_gateway_pages_are_never_framed() {
    let (env, result) = run("iframes.mjs", "").await;
    assert!(result.contains("not framed"), "{result}");
    // The frame's own websocket reached Qlik with a CSRF token the gateway owns.
    let c = env.sim().control().counters();
    assert!(c.ws_upgrades >= 1, "{c:?}");
    assert_eq!(c.ws_must_authenticate, 0, "{c:?}");
    env.stop().await;
}
