//! Kerberos login when the disk under the gateway's files is full: the replay cache, and the
//! private keytab copy in `$TMPDIR`. Each test mounts its own tiny tmpfs (root), fills it to the
//! last page and frees it again, against a real MIT KDC and the real gateway binary.

use crate::common::disk::SmallDisk;
use crate::common::kdc::{self, login_with, refused, wait_for_login, Kdc, SERVICE};
use crate::common::*;

/// Big enough for a replay cache's first table (16 KiB) and a keytab copy, small enough to fill
/// in an instant.
const DISK: &str = "256k";

async fn sim_for(kdc: &Kdc) -> qlik_sim::Sim {
    qlik_sim::Sim::start(qlik_sim::SimOptions::default(), &kdc.path("pki"))
        .await
        .expect("qlik-sim starts")
}

/// The log lines that contain `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[tokio::test]
async fn negotiate_login_with_the_replay_cache_on_a_full_disk() {
    let disk = SmallDisk::mount(DISK);
    let kdc = Kdc::start();
    let sim = sim_for(&kdc).await;
    let rcache = disk.path().join("rcache");
    let toml = kdc::gateway_toml(
        &kdc,
        &sim,
        &kdc.keytab(),
        &format!("replay_cache = \"file2:{}\"", rcache.display()),
    );
    let gw = Binary::start(kdc.dir.path(), &toml, &kdc.os_env()).await;
    // Start-up creates the cache file empty. MIT's file2 cache is a sparse hash table that takes
    // a 4 KiB page at a time, so a login whose record lands in a page it already has would still
    // be recorded on a full disk (and rightly accepted). Filling the disk while the file has no
    // page makes the very first record fail.
    assert_eq!(std::fs::metadata(&rcache).unwrap().len(), 0);
    disk.fill();

    let cc = kdc.ccache("alice", None, &["HTTP/localhost"]);
    let r = login_with(&gw.url(), &kdc::spnego_token(&cc, SERVICE)).await;
    let retry_after = r.headers().get("retry-after").cloned();
    assert_eq!(refused(r, 503).await, "negotiate_replay_cache_full");
    assert!(
        retry_after.is_some(),
        "a 503 says when to come back: {retry_after:?}"
    );
    assert_eq!(
        sim.control().counters().sessions_created,
        0,
        "no Qlik session for a login that could not be recorded"
    );

    // Space comes back: the next login works, and the cache catches replays again, without a
    // restart.
    disk.free();
    let token = kdc::spnego_token(&cc, SERVICE);
    let r = login_with(&gw.url(), &token).await;
    assert_eq!(r.status(), 302);
    assert!(cookie_from(&r).is_some());
    let r = login_with(&gw.url(), &token).await;
    assert_eq!(refused(r, 401).await, "negotiate_replay");

    let (_, log) = gw.stop().await;
    let full = lines_with(&log, "negotiate_replay_cache_full");
    assert_eq!(full.len(), 1, "one line for the one refused login:\n{log}");
    let line = full[0];
    assert!(line.contains("\"ERROR\""), "{line}");
    assert!(
        line.contains(&rcache.display().to_string()) && line.contains("free space"),
        "the line names the cache and the fix: {line}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn keytab_reload_with_tmpdir_on_a_full_disk() {
    let disk = SmallDisk::mount(DISK);
    let kdc = Kdc::start();
    let sim = sim_for(&kdc).await;
    let live = kdc.path("live.keytab");
    std::fs::copy(kdc.keytab(), &live).unwrap();
    let toml = kdc::gateway_toml(&kdc, &sim, &live, "keytab_poll_interval = \"50ms\"");
    let mut envs = kdc.os_env();
    envs.push(("TMPDIR", disk.path().into()));
    // Repeated failures are logged at debug level: the test counts them to know the poller has
    // tried again, and checks that the error itself came once.
    envs.push(("RUST_LOG", "info,qlik_gateway::net::reload=debug".into()));
    let tmpdir = disk.path().display().to_string();

    // Start-up with the temp directory full: the gateway refuses to start and says why.
    disk.fill();
    let cfg = kdc.path("full.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_qlik-gateway"))
        .arg("--config")
        .arg(&cfg)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&tmpdir) && err.contains("is full") && err.contains("TMPDIR"),
        "names the temp directory, that it is full, and the fix: {err}"
    );
    disk.free();

    let gw = Binary::start(kdc.dir.path(), &toml, &envs).await;
    let old = kdc.ccache("alice", None, &["HTTP/localhost"]);
    let r = login_with(&gw.url(), &kdc::spnego_token(&old, SERVICE)).await;
    assert_eq!(r.status(), 302);

    // The service key is rotated while the temp directory is full: the new keytab cannot be
    // copied, so the one in use stays.
    disk.fill();
    let rotated = kdc.rotate("rotated.keytab");
    std::fs::rename(&rotated, &live).unwrap();
    gw.wait_for_log("keytab changed but cannot be used", 1)
        .await;
    gw.wait_for_log("already reported", 3).await;
    let r = login_with(&gw.url(), &kdc::spnego_token(&old, SERVICE)).await;
    assert_eq!(r.status(), 302, "logins go on with the previous keytab");
    let new = kdc.ccache("alice", None, &["HTTP/localhost"]);
    let r = login_with(&gw.url(), &kdc::spnego_token(&new, SERVICE)).await;
    assert_eq!(refused(r, 401).await, "negotiate_no_key");

    // Space comes back: the next check takes the new keytab, which has only the new key.
    disk.free();
    assert_eq!(wait_for_login(&gw.url(), &new).await.status(), 302);
    let r = login_with(&gw.url(), &kdc::spnego_token(&old, SERVICE)).await;
    assert_eq!(refused(r, 401).await, "negotiate_no_key");

    let (status, log) = gw.stop().await;
    assert!(status.success(), "{status:?}");
    let failed = lines_with(&log, "keytab changed but cannot be used");
    assert_eq!(failed.len(), 1, "the failure is logged once:\n{log}");
    assert!(
        failed[0].contains(&tmpdir)
            && failed[0].contains("is full")
            && failed[0].contains("TMPDIR"),
        "{}",
        failed[0]
    );
    assert_eq!(lines_with(&log, "keytab reloaded").len(), 1, "{log}");
    sim.shutdown().await;
}
