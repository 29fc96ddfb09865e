//! `@qlik/api` 2.19 (examples/qlik-api, bundled with esbuild) behind the gateway in headless
//! Chromium, with no authentication code in the page: authType "windowscookie", host = the
//! gateway's origin + mount, loginUri = `/_gateway/login?return_to={location}`.
//! Open the app, a layout and a selection; a Capability-API-style QRS call with its xrfkey pair;
//! Qlik drops every session and the page keeps working with no login; the gateway session ends
//! (logout in another tab) and the page goes through the login back to where it was.
//! The browser side is tests/browser/qlik-api.mjs; screenshots go to target/tmp/qlik-api/.

use std::path::Path;
use std::time::Duration;

use crate::common::browser::{build_client_pages, check_prerequisites, run_browser_script};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qlik_api_works_through_the_gateway_across_expiry_and_logout() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    check_prerequisites(root, &[("browser", "@qlik/api"), ("browser", "esbuild")]);
    let pages = build_client_pages(root);
    let env = Env::with(Setup {
        mashup: format!("dir = \"{}\"", pages.path().display()),
        ..Setup::default()
    })
    .await;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qlik-api");
    let control = env.sim().control();
    let mut expired = 0;
    let result = run_browser_script(
        root,
        "qlik-api.mjs",
        &env.url,
        &shots,
        Duration::from_secs(120),
        |line| {
            line.contains("\"phase\":\"live\"").then(|| {
                expired = control.sessions().len();
                control.expire_all_sessions();
                "go\n"
            })
        },
    )
    .await;
    println!("{result}");
    assert!(expired >= 1, "Qlik had the user's session: {result}");
    // Qlik's view: its sessions were re-created by the gateway; no engine socket was ever
    // unauthenticated; the xrfkey pair arrived as the page sent it.
    let c = env.sim().control().counters();
    assert_eq!(c.ws_must_authenticate, 0, "{c:?}");
    assert!(c.sessions_expired >= 1 && c.sessions_created >= 2, "{c:?}");
    let qrs = env
        .sim()
        .control()
        .requests()
        .into_iter()
        .find(|r| r.path == "/mashup/qrs/about")
        .expect("the QRS call reached Qlik");
    assert_eq!(qrs.query.as_deref(), Some("xrfkey=Ab3dEf6hIj9lMn0p"));
    assert_eq!(qrs.headers["x-qlik-xrfkey"], ["Ab3dEf6hIj9lMn0p"]);
    // The classic session's resume() asked the locale API first, and Qlik answered it.
    assert!(
        env.sim()
            .control()
            .requests()
            .iter()
            .any(|r| r.path == "/mashup/api/v1/user-locale"),
        "resume() checks api/v1/user-locale"
    );
    for shot in [
        "qlik-api-live.png",
        "qlik-api-after-qlik-expiry.png",
        "qlik-api-after-login.png",
    ] {
        assert!(shots.join(shot).is_file(), "{shot} saved");
    }
    env.stop().await;
}
