//! `qlik-gateway check-config`: a bad configuration names the key and the fix; env overrides work.

use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qlik-gateway"));
    // Overrides from the developer's shell must not leak into these tests.
    for (k, _) in std::env::vars() {
        if k.starts_with("QLIK_GATEWAY") {
            c.env_remove(k);
        }
    }
    c
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        std::fs::write(dir.path().join("client.pem"), ca.cert.pem()).expect("write");
        std::fs::write(
            dir.path().join("client_key.pem"),
            ca.signing_key.serialize_pem(),
        )
        .expect("write");
        std::fs::write(dir.path().join("root.pem"), ca.cert.pem()).expect("write");
        std::fs::write(dir.path().join("not-a-cert.pem"), "hello").expect("write");
        Files { dir }
    }

    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A valid config with `edit` applied to its text.
    fn config(&self, edit: impl Fn(String) -> String) -> std::path::PathBuf {
        let text = format!(
            r#"[server]
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"

[session]
idle_timeout = "30m"

[auth]
provider = "static"
[auth.static]
user_directory = "DEV"
user_id = "alice"

[qlik]
proxy_url = "https://qlik.example.com"
qps_api_url = "https://qlik.example.com:4243"
virtual_proxy = "mashup"
client_cert = "{c}"
client_key = "{k}"
ca_cert = "{r}"
"#,
            c = self.p("client.pem"),
            k = self.p("client_key.pem"),
            r = self.p("root.pem")
        );
        let path = self.dir.path().join("gw.toml");
        std::fs::write(&path, edit(text)).expect("write config");
        path
    }
}

fn check(path: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut c = bin();
    c.args(["check-config", "--config"]).arg(path);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run qlik-gateway");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn valid_config_passes() {
    let f = Files::new();
    let (code, out) = check(&f.config(|t| t), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("configuration ok"), "{out}");
}

#[test]
fn missing_proxy_url_names_the_key() {
    let f = Files::new();
    let (code, out) = check(
        &f.config(|t| t.replace("proxy_url = \"https://qlik.example.com\"\n", "")),
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("qlik.proxy_url") && out.contains("missing"),
        "{out}"
    );
}

#[test]
fn unreadable_certificate_names_key_and_path() {
    let f = Files::new();
    let (code, out) = check(&f.config(|t| t.replace("client.pem", "nope.pem")), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("qlik.client_cert") && out.contains("nope.pem"),
        "{out}"
    );
}

#[test]
fn a_file_that_is_not_pem_is_refused() {
    let f = Files::new();
    let (code, out) = check(
        &f.config(|t| t.replace("client.pem", "not-a-cert.pem")),
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("not-a-cert.pem") && out.contains("no PEM certificate"),
        "{out}"
    );
}

#[test]
fn bad_duration_names_the_key() {
    let f = Files::new();
    let (code, out) = check(
        &f.config(|t| t.replace("\"30m\"", "\"thirty minutes\"")),
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("session.idle_timeout") && out.contains("duration"),
        "{out}"
    );
}

#[test]
fn unknown_key_is_named() {
    let f = Files::new();
    let (code, out) = check(&f.config(|t| t.replace("listen =", "lisen =")), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("server.lisen") && out.contains("unknown key"),
        "{out}"
    );
}

#[test]
fn environment_overrides_file_keys() {
    let f = Files::new();
    let cfg = f.config(|t| t.replace("proxy_url = \"https://qlik.example.com\"\n", ""));
    let (code, out) = check(
        &cfg,
        &[("QLIK_GATEWAY__QLIK__PROXY_URL", "https://qlik.example.com")],
    );
    assert_eq!(code, 0, "env should supply qlik.proxy_url: {out}");
    let (code, out) = check(
        &f.config(|t| t),
        &[("QLIK_GATEWAY__SESSION__IDLE_TIMEOUT", "soon")],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("session.idle_timeout"), "{out}");
}

#[test]
fn config_path_from_environment_and_missing_file() {
    let f = Files::new();
    let path = f.config(|t| t);
    let out = bin()
        .arg("check-config")
        .env("QLIK_GATEWAY_CONFIG", &path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, out) = check(Path::new("/nonexistent/gw.toml"), &[]);
    assert_eq!(code, 2);
    assert!(out.contains("/nonexistent/gw.toml"), "{out}");
}

#[test]
fn example_config_parses_key_for_key() {
    // Every key in the example must be one the gateway knows; only its file paths are fictional.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/qlik-gateway.example.toml"
    ))
    .expect("example");
    let f = Files::new();
    let text = text
        .replace("/etc/qlik-gateway/qlik/client.pem", &f.p("client.pem"))
        .replace(
            "/etc/qlik-gateway/qlik/client_key.pem",
            &f.p("client_key.pem"),
        )
        .replace("/etc/qlik-gateway/qlik/root.pem", &f.p("root.pem"))
        .replace("/etc/qlik-gateway/tls/fullchain.pem", &f.p("client.pem"))
        .replace("/etc/qlik-gateway/tls/privkey.pem", &f.p("client_key.pem"));
    let mashup = f.dir.path().join("dist");
    std::fs::create_dir_all(&mashup).expect("mkdir");
    std::fs::write(mashup.join("index.html"), "<!doctype html>").expect("write");
    let text = text.replace("/srv/mashup/dist", &mashup.display().to_string());
    let path = f.dir.path().join("example.toml");
    std::fs::write(&path, text).expect("write");
    let (code, out) = check(&path, &[]);
    assert_eq!(code, 0, "{out}");
}

/// `[auth]` replaced by an OIDC block with `body` as its keys.
fn with_oidc(t: String, body: &str) -> String {
    t.replace(
        "[auth]\nprovider = \"static\"\n[auth.static]\nuser_directory = \"DEV\"\nuser_id = \"alice\"\n",
        &format!("[auth]\nprovider = \"oidc\"\n[auth.oidc]\n{body}\n"),
    )
}

#[test]
fn oidc_settings_are_checked_key_by_key() {
    let f = Files::new();
    std::fs::write(f.dir.path().join("secret"), "s3cret\n").unwrap();
    let ok = "issuer = \"https://idp.example.com\"\nclient_id = \"gw\"\nuser_directory = \"CORP\"";
    // The IdP is not contacted by check-config: it may be down while the gateway is deployed.
    let (code, out) = check(&f.config(|t| with_oidc(t, ok)), &[]);
    assert_eq!(code, 0, "{out}");
    for (body, key, words) in [
        (
            "client_id = \"gw\"\nuser_directory = \"CORP\"",
            "auth.oidc.issuer",
            "missing",
        ),
        (
            "issuer = \"https://idp.example.com\"\nuser_directory = \"CORP\"",
            "auth.oidc.client_id",
            "missing",
        ),
        (
            "issuer = \"https://idp.example.com\"\nclient_id = \"gw\"",
            "auth.oidc.user_directory",
            "split_user_id",
        ),
        (
            &format!("{ok}\nclient_secret_file = \"/nonexistent/secret\""),
            "auth.oidc.client_secret_file",
            "/nonexistent/secret",
        ),
        (
            &format!("{ok}\nclient_auth = \"client_secret_post\""),
            "auth.oidc.client_secret_file",
            "client_secret_post",
        ),
        (
            &format!("{ok}\nclient_auth = \"private_key_jwt\""),
            "auth.oidc.private_key_file",
            "missing",
        ),
        (
            &format!("{ok}\nclient_auth = \"mtls\""),
            "auth.oidc.client_auth",
            "mtls",
        ),
        (
            &format!("{ok}\nuser_directory_claim = \"tenant\""),
            "auth.oidc.user_directory_claim",
            "not both",
        ),
        (
            &format!("{ok}\nredirect_path = \"callback\""),
            "auth.oidc.redirect_path",
            "path",
        ),
        (
            &format!("{ok}\nredirect_path = \"/_gateway/me\""),
            "auth.oidc.redirect_path",
            "taken",
        ),
        (
            &format!("{ok}\nredirect_path = \"/mashup/cb\""),
            "auth.oidc.redirect_path",
            "taken",
        ),
        (
            &format!("{ok}\nsurprise = 1"),
            "auth.oidc.surprise",
            "unknown",
        ),
    ] {
        let (code, out) = check(&f.config(|t| with_oidc(t, body)), &[]);
        assert_eq!(code, 2, "{body}: {out}");
        assert!(out.contains(key) && out.contains(words), "{body}: {out}");
    }
    let secret = f.p("secret");
    let (code, out) = check(
        &f.config(|t| with_oidc(t, &format!("{ok}\nclient_secret_file = \"{secret}\""))),
        &[],
    );
    assert_eq!(code, 0, "{out}");
}
