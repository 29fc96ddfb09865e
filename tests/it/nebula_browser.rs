//! The nebula.js example (examples/nebula-mashup: `@nebula.js/stardust` +
//! `@nebula.js/sn-bar-chart`, enigma.js on a URL relative to the page, no auth code) in headless
//! Chromium renders a bar chart of qlik-sim's Sales app through the gateway; a click on a bar
//! and the toolbar's confirm select that region in Qlik, and the chart re-renders with one bar;
//! Qlik then expires the session and the page resumes and redraws every bar by itself.
//! The browser side is tests/browser/nebula.mjs (it bundles the example's src/main.js with
//! esbuild); the screenshots go to target/tmp/nebula/.

use std::path::Path;
use std::time::Duration;

use crate::common::browser::{check_prerequisites, page_site, BrowserScript};
use crate::common::*;

const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

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
    // No auth code in the example: nothing about tokens, tickets, cookies or Qlik's host.
    let source = std::fs::read_to_string(root.join("examples/nebula-mashup/src/main.js")).unwrap();
    let code: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
        .to_ascii_lowercase();
    for word in [
        "csrf",
        "xrfkey",
        "ticket",
        "cookie",
        "credentials",
        "x-qlik",
    ] {
        assert!(!code.contains(word), "the example's code mentions {word}");
    }
    let site = page_site("examples/nebula-mashup/index.html");
    let env = Env::with(Setup {
        mashup: format!("dir = \"{}\"", site.path().display()),
        ..Setup::default()
    })
    .await;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nebula");
    let mut script = BrowserScript::start(
        "tests/browser/nebula.mjs",
        &[
            ("GATEWAY_URL", env.url.clone().into()),
            ("MASHUP_DIR", site.path().into()),
        ],
        &shots,
        PHASE_TIMEOUT,
    );
    let mut selected_in_qlik = None;
    while let Some(phase) = script.next_phase().await {
        if phase["phase"] == "selected" {
            selected_in_qlik = Some(env.sim().control().selections());
            env.sim().control().expire_all_sessions();
        }
        script.answer().await;
    }
    let result = script.finish().await;
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
        "nebula-after-expiry.png",
    ] {
        assert!(shots.join(shot).is_file(), "{shot} saved");
    }
    let c = env.sim().control().counters();
    assert_eq!(c.ws_must_authenticate, 0, "{c:?}");
    assert!(c.sessions_expired >= 1, "{c:?}");
    env.stop().await;
}
