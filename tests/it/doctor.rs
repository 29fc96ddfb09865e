//! `qlik-gateway doctor` against qlik-sim in each misconfiguration: every failing check names
//! the cause and the setting to change, and the probe session never outlives the run.

use crate::common::{config_toml, Setup};
use qlik_sim::{QpsFault, Sim, SimOptions};

struct Run {
    code: i32,
    out: String,
}

/// Starts the sim of `setup`, runs `doctor` with the config `setup` describes (edited by `edit`).
async fn doctor_with(
    setup: Setup,
    edit: impl Fn(String) -> String,
    before: impl Fn(&Sim),
) -> (Run, Sim, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(setup.sim.clone(), &dir.path().join("pki"))
        .await
        .expect("sim starts");
    before(&sim);
    let toml = edit(config_toml(&sim, &setup, "127.0.0.1:0".parse().unwrap()));
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, &toml).expect("write config");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_qlik-gateway"));
    for (k, _) in std::env::vars() {
        if k.starts_with("QLIK_GATEWAY") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg("doctor")
        .arg("--config")
        .arg(&cfg)
        .output()
        .await
        .expect("run qlik-gateway doctor");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    (
        Run {
            code: out.status.code().unwrap_or(-1),
            out: text,
        },
        sim,
        dir,
    )
}

async fn doctor(setup: Setup) -> (Run, Sim, tempfile::TempDir) {
    doctor_with(setup, |t| t, |_| {}).await
}

/// The FAIL line containing `needle` with its cause and fix lines.
fn failure(out: &str, needle: &str) -> String {
    let lines: Vec<&str> = out.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("FAIL") && out_block(&lines, i).contains(needle) {
            return out_block(&lines, i);
        }
    }
    panic!("no FAIL mentioning {needle:?} in:\n{out}");
}

fn out_block(lines: &[&str], i: usize) -> String {
    let mut b = lines[i].to_string();
    for l in &lines[i + 1..] {
        if !l.starts_with("      ") {
            break;
        }
        b.push('\n');
        b.push_str(l);
    }
    b
}

fn assert_cleaned_up(sim: &Sim) {
    assert!(
        sim.control().sessions().is_empty(),
        "the probe session is deleted: {:?}",
        sim.control().sessions()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn all_ok_on_a_default_sim_and_the_probe_session_is_deleted() {
    let (run, sim, _dir) = doctor(Setup::default()).await;
    assert_eq!(run.code, 0, "{}", run.out);
    assert!(!run.out.contains("FAIL"), "{}", run.out);
    for expected in [
        "ok    configuration",
        "belong together",
        "reachable with mutual TLS",
        "accepts the xrfkey",
        "QPS created a session for the probe user QLIK-GATEWAY\\doctor",
        "accepts the session cookie X-Qlik-Session-mashup",
        "websocket CSRF token",
        "engine websocket upgrade",
        "accepted (101)",
        "probe session of QLIK-GATEWAY\\doctor deleted",
        "ok    clock: within",
        "valid until",
    ] {
        assert!(
            run.out.contains(expected),
            "missing {expected:?} in:\n{}",
            run.out
        );
    }
    assert_cleaned_up(&sim);
    // The probe user really had a session at the proxy (created, then deleted).
    let requests = sim.control().requests();
    assert!(
        requests.iter().any(|r| r.websocket),
        "a websocket was opened"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_session_cookie_name() {
    let setup = Setup {
        sim: SimOptions {
            session_cookie: "X-Qlik-Session-other".into(),
            ..SimOptions::default()
        },
        ..Setup::default()
    };
    let (run, sim, _dir) = doctor(setup).await;
    assert_eq!(run.code, 1, "{}", run.out);
    let f = failure(&run.out, "X-Qlik-Session-mashup");
    assert!(f.contains("Session cookie header name"), "{f}");
    assert!(
        f.contains("fix (QMC): Virtual proxies → prefix \"mashup\""),
        "{f}"
    );
    assert!(f.contains("qlik.session_cookie"), "{f}");
    assert_cleaned_up(&sim);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_proxy_needs_the_http_suffix() {
    let setup = Setup {
        sim: SimOptions {
            proxy_tls: false,
            http_cookie_suffix: true,
            ..SimOptions::default()
        },
        ..Setup::default()
    };
    let (run, sim, _dir) = doctor(setup).await;
    assert_eq!(run.code, 1, "{}", run.out);
    let f = failure(&run.out, "-HTTP");
    assert!(f.contains("X-Qlik-Session-mashup-HTTP"), "{f}");
    assert!(
        f.contains("fix (gateway): set qlik.session_cookie = \"X-Qlik-Session-mashup-HTTP\""),
        "{f}"
    );
    assert_cleaned_up(&sim);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_proxy_with_the_suffix_configured_is_ok() {
    let setup = Setup {
        sim: SimOptions {
            proxy_tls: false,
            http_cookie_suffix: true,
            ..SimOptions::default()
        },
        ..Setup::default()
    };
    let (run, sim, _dir) = doctor_with(
        setup,
        |t| {
            t.replace(
                "\"X-Qlik-Session-mashup\"",
                "\"X-Qlik-Session-mashup-HTTP\"",
            )
        },
        |_| {},
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.out);
    assert_cleaned_up(&sim);
}

#[tokio::test(flavor = "multi_thread")]
async fn xrfkey_rejected() {
    let (run, _sim, _dir) = doctor_with(
        Setup::default(),
        |t| t,
        |sim| sim.control().set_fault(Some(QpsFault::RejectXrfkey)),
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.out);
    let f = failure(&run.out, "xrfkey");
    assert!(f.contains("X-Qlik-Xrfkey"), "{f}");
    assert!(f.contains("fix (gateway)"), "{f}");
}

#[tokio::test(flavor = "multi_thread")]
async fn untrusted_client_certificate() {
    let setup = Setup {
        untrusted_client_cert: true,
        ..Setup::default()
    };
    let (run, sim, _dir) = doctor(setup).await;
    assert_eq!(run.code, 1, "{}", run.out);
    let f = failure(&run.out, "TLS");
    assert!(f.contains("not trusted by this Qlik site"), "{f}");
    assert!(
        f.contains("fix (QMC): Certificates → Export certificates"),
        "{f}"
    );
    assert_cleaned_up(&sim);
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_qps_port() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let setup = Setup {
        qps_api_url: Some(format!("https://127.0.0.1:{port}")),
        ..Setup::default()
    };
    let (run, _sim, _dir) = doctor(setup).await;
    assert_eq!(run.code, 1, "{}", run.out);
    let f = failure(&run.out, "unreachable");
    assert!(f.contains("4243"), "{f}");
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_refused_by_the_host_allow_list() {
    // Qlik knows itself by its node name only; the gateway reaches it as 127.0.0.1.
    let mut sim = SimOptions {
        own_host_names: vec!["qlik-node1.example.local".into()],
        ..SimOptions::default()
    };
    let (run, s, _dir) = doctor(Setup {
        sim: sim.clone(),
        ..Setup::default()
    })
    .await;
    assert_eq!(run.code, 1, "{}", run.out);
    let f = failure(&run.out, "Host allow list");
    assert!(f.contains("403"), "{f}");
    assert!(f.contains("add 127.0.0.1"), "{f}");
    assert_cleaned_up(&s);

    // With the address in the allow list, it passes.
    sim.host_allow_list = vec!["127.0.0.1".into()];
    let (run, _s, _dir) = doctor(Setup {
        sim,
        ..Setup::default()
    })
    .await;
    assert_eq!(run.code, 0, "{}", run.out);
}

/// A CA and a client certificate valid from yesterday to `days` from now (negative: expired).
fn client_cert(dir: &std::path::Path, days: i64) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ymd = |d: chrono::DateTime<chrono::Utc>| {
        use chrono::Datelike;
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    let now = chrono::Utc::now();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.not_before = ymd(now - chrono::Duration::days(days.abs() + 30));
    leaf.not_after = ymd(now + chrono::Duration::days(days));
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let c = dir.join(format!("client-{days}.pem"));
    let k = dir.join(format!("client-{days}_key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c.display().to_string(), k.display().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn expiring_and_expired_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    for (days, status, words) in [(10, "warn", "expires in"), (-3, "FAIL", "expired on")] {
        let (c, k) = client_cert(certs.path(), days);
        let (run, _sim, _dir) = doctor_with(
            Setup::default(),
            |t| {
                let mut out = String::new();
                for line in t.lines() {
                    if line.starts_with("client_cert = ") {
                        out.push_str(&format!("client_cert = \"{c}\"\n"));
                    } else if line.starts_with("client_key = ") {
                        out.push_str(&format!("client_key = \"{k}\"\n"));
                    } else {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
                out
            },
            |_| {},
        )
        .await;
        assert_eq!(run.code, 1, "{}", run.out);
        let line = run
            .out
            .lines()
            .find(|l| l.starts_with(status) && l.contains("qlik.client_cert") && l.contains(words))
            .unwrap_or_else(|| panic!("no {status} line with {words:?}:\n{}", run.out));
        assert!(line.contains(words), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_config_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"nope\"\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_qlik-gateway"))
        .args(["doctor", "--config"])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
