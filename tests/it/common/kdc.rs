//! A throwaway MIT Kerberos realm on loopback (Debian's krb5-kdc), made in a temp dir per test,
//! and the clients that log in against it: kinit/kvno for tickets, a Rust GSSAPI initiator and
//! `curl --negotiate`.

#![allow(unused_imports)]

use std::ffi::CString;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::ptr;
use std::time::{Duration, Instant};

use libgssapi::context::{ClientCtx, CtxFlags};
use libgssapi::credential::Cred;
use libgssapi::name::Name;
use libgssapi::oid::{Oid, GSS_NT_KRB5_PRINCIPAL};

pub const REALM: &str = "TEST.LOCAL";
pub const PASSWORD: &str = "userpw123";

/// A running KDC for realm `TEST.LOCAL` with principals `alice`, `Bob`, `HTTP/localhost` and
/// `HTTP/other.localhost`; `http.keytab` holds `HTTP/localhost`, `other.keytab` the other one,
/// `both.keytab` both.
pub struct Kdc {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl Kdc {
    pub fn start() -> Kdc {
        let dir = tempfile::tempdir().expect("tempdir");
        // The port is picked free and then handed to krb5kdc; if another process takes it in
        // between, the KDC exits and the next port is tried.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            write_realm(dir.path(), port);
            let mut child = Command::new(sbin("krb5kdc"))
                .args(["-n", "-P"])
                .arg(dir.path().join("kdc.pid"))
                .envs(env_for(dir.path()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("krb5kdc starts (apt-get install krb5-kdc)");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Kdc { dir, port, child };
                }
                if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                // A readiness poll of a child process (sync code, bounded by the loop's deadline).
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!(
            "the KDC did not start; see {}",
            dir.path().join("kdc.log").display()
        );
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `KRB5_CONFIG` and `KRB5_KDC_PROFILE` for client and admin tools.
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        env_for(self.dir.path())
    }

    /// [`Kdc::env`] for [`super::Binary::start`].
    pub fn os_env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        self.env().into_iter().map(|(k, v)| (k, v.into())).collect()
    }

    pub fn keytab(&self) -> PathBuf {
        self.path("http.keytab")
    }

    /// Runs a `kadmin.local` query, panicking with its output on failure.
    pub fn kadmin(&self, query: &str) {
        run(Command::new(sbin("kadmin.local"))
            .arg("-q")
            .arg(query)
            .envs(self.env()));
    }

    /// A fresh credential cache for `user` (password login), with an optional ticket lifetime
    /// (`"3s"`), holding a service ticket for each of `services`.
    pub fn ccache(&self, user: &str, lifetime: Option<&str>, services: &[&str]) -> PathBuf {
        let cc = self.path(&format!(
            "cc-{user}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let mut kinit = Command::new("kinit");
        if let Some(l) = lifetime {
            kinit.args(["-l", l]);
        }
        kinit
            .arg(format!("{user}@{REALM}"))
            .envs(self.env())
            .env("KRB5CCNAME", format!("FILE:{}", cc.display()))
            .stdin(Stdio::piped());
        let mut child = kinit.stdout(Stdio::null()).spawn().expect("kinit");
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            let _ = writeln!(stdin, "{PASSWORD}");
        }
        assert!(
            child.wait().expect("kinit").success(),
            "kinit {user} failed"
        );
        for s in services {
            run(Command::new("kvno")
                .arg(s)
                .envs(self.env())
                .env("KRB5CCNAME", format!("FILE:{}", cc.display())));
        }
        cc
    }
}

impl Drop for Kdc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sbin(name: &str) -> PathBuf {
    let p = Path::new("/usr/sbin").join(name);
    if p.exists() {
        p
    } else {
        PathBuf::from(name)
    }
}

fn env_for(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("KRB5_CONFIG", dir.join("krb5.conf")),
        ("KRB5_KDC_PROFILE", dir.join("kdc.conf")),
    ]
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run kerberos tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_realm(d: &Path, port: u16) {
    let _ = std::fs::remove_file(d.join("principal"));
    std::fs::write(
        d.join("krb5.conf"),
        format!(
            "[libdefaults]\n  default_realm = {REALM}\n  dns_lookup_realm = false\n  dns_lookup_kdc = false\n  rdns = false\n  dns_canonicalize_hostname = false\n  udp_preference_limit = 1\n\
             [realms]\n  {REALM} = {{\n    kdc = 127.0.0.1:{port}\n  }}\n[domain_realm]\n  localhost = {REALM}\n  .localhost = {REALM}\n"
        ),
    )
    .expect("krb5.conf");
    let dd = d.display();
    std::fs::write(
        d.join("kdc.conf"),
        format!(
            "[kdcdefaults]\n  kdc_listen = 127.0.0.1:{port}\n  kdc_tcp_listen = 127.0.0.1:{port}\n\
             [realms]\n  {REALM} = {{\n    database_name = {dd}/principal\n    key_stash_file = {dd}/stash\n    acl_file = {dd}/kadm5.acl\n    supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n  }}\n\
             [logging]\n  kdc = FILE:{dd}/kdc.log\n"
        ),
    )
    .expect("kdc.conf");
    std::fs::write(d.join("kadm5.acl"), "").expect("acl");
    if d.join("http.keytab").exists() {
        return;
    }
    let env = env_for(d);
    run(Command::new(sbin("kdb5_util"))
        .args(["create", "-s", "-r", REALM, "-P", "masterpw123"])
        .envs(env.clone()));
    for q in [
        format!("addprinc -pw {PASSWORD} alice"),
        format!("addprinc -pw {PASSWORD} Bob"),
        "addprinc -randkey HTTP/localhost".to_string(),
        "addprinc -randkey HTTP/other.localhost".to_string(),
        format!("ktadd -k {dd}/http.keytab HTTP/localhost"),
        format!("ktadd -k {dd}/other.keytab HTTP/other.localhost"),
        format!("ktadd -norandkey -k {dd}/both.keytab HTTP/localhost HTTP/other.localhost"),
    ] {
        run(Command::new(sbin("kadmin.local"))
            .arg("-q")
            .arg(&q)
            .envs(env.clone()));
    }
}

/// GSSAPI initiator credentials from the credential cache at `ccache` (not the process-wide
/// `KRB5CCNAME`, so tests can run side by side).
// The test-side GSSAPI initiator: the same raw call the gateway's acceptor makes (the workspace
// denies `unsafe` everywhere else).
#[allow(unsafe_code)]
pub fn initiator_cred(ccache: &Path) -> Cred {
    let cc = CString::new(format!("FILE:{}", ccache.display())).expect("path");
    let mut elements = [libgssapi_sys::gss_key_value_element_desc {
        key: c"ccache".as_ptr(),
        value: cc.as_ptr(),
    }];
    let store = libgssapi_sys::gss_key_value_set_desc {
        count: 1,
        elements: elements.as_mut_ptr(),
    };
    let mut minor = 0;
    let mut cred: libgssapi_sys::gss_cred_id_t = ptr::null_mut();
    // SAFETY: all pointers outlive the call; null name/mechs/outputs mean default/not wanted.
    let major = unsafe {
        libgssapi_sys::gss_acquire_cred_from(
            &mut minor,
            ptr::null_mut(),
            libgssapi_sys::_GSS_C_INDEFINITE,
            ptr::null_mut(),
            libgssapi_sys::GSS_C_INITIATE as libgssapi_sys::gss_cred_usage_t,
            &store,
            &mut cred,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    assert_eq!(
        major, 0,
        "acquiring initiator credentials from {ccache:?}: minor {minor}"
    );
    // SAFETY: a fresh handle owned by the returned Cred.
    unsafe { Cred::from_c(cred) }
}

pub use libgssapi::oid::{GSS_MECH_KRB5, GSS_MECH_SPNEGO};
/// `GSS_C_DCE_STYLE`: the three-leg Kerberos exchange (AP-REQ, AP-REP, AP-REP).
pub const DCE_STYLE: u32 = 0x1000;

/// A client context for `service` (`HTTP/localhost@TEST.LOCAL`) with mutual authentication.
pub fn client_ctx(ccache: &Path, service: &str, mech: Oid<'static>, extra_flags: u32) -> ClientCtx {
    let name = Name::new(service.as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL)).expect("service name");
    ClientCtx::new(
        Some(initiator_cred(ccache)),
        name,
        CtxFlags::GSS_C_MUTUAL_FLAG | CtxFlags::from_bits_retain(extra_flags),
        Some(mech),
    )
}

/// The first SPNEGO token for `service`, base64 for an `Authorization: Negotiate` header.
pub fn spnego_token(ccache: &Path, service: &str) -> String {
    let mut ctx = client_ctx(ccache, service, GSS_MECH_SPNEGO, 0);
    let tok = ctx
        .step(None, None)
        .expect("gss_init_sec_context")
        .expect("a token");
    b64(&tok)
}

pub fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

/// The service principal the gateway's keytab (`http.keytab`) serves.
pub const SERVICE: &str = "HTTP/localhost@TEST.LOCAL";

/// The `[auth]` section for a Negotiate gateway with `keytab`; `extra` lines go under
/// `[auth.negotiate]`.
pub fn negotiate_toml(kdc: &Kdc, keytab: &Path, extra: &str) -> String {
    // Each test's own replay cache, so tokens of parallel tests never meet.
    let replay_cache = if extra.contains("replay_cache") {
        String::new()
    } else {
        format!(
            "replay_cache = \"file2:{}\"\n",
            kdc.path("rcache").display()
        )
    };
    format!(
        "[auth]\nprovider = \"negotiate\"\n[auth.negotiate]\nkeytab = \"{}\"\n{replay_cache}{extra}\n",
        keytab.display(),
    )
}

/// A whole gateway config (for the binary) against `sim`, public host `localhost`.
pub fn gateway_toml(kdc: &Kdc, sim: &qlik_sim::Sim, keytab: &Path, extra: &str) -> String {
    let setup = super::Setup {
        auth: Some(negotiate_toml(kdc, keytab, extra)),
        public_host: Some("localhost".into()),
        ..super::Setup::default()
    };
    super::config_toml(sim, &setup, "127.0.0.1:0".parse().expect("address"))
}

/// `GET /_gateway/login?return_to=/mashup/hub/` with `Authorization: Negotiate <token>`.
pub async fn login_with(url: &str, token: &str) -> reqwest::Response {
    super::http_client()
        .get(format!("{url}/_gateway/login?return_to=/mashup/hub/"))
        .header("authorization", format!("Negotiate {token}"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("login request")
}

/// The JSON error code of a refused login, after checking its status and that it does not
/// challenge again (a browser must show the page, not loop or prompt).
pub async fn refused(resp: reqwest::Response, status: u16) -> String {
    assert_eq!(resp.status(), status);
    assert!(
        resp.headers().get("www-authenticate").is_none(),
        "a refused login must not challenge again: {:?}",
        resp.headers()
    );
    assert!(resp.headers().get("set-cookie").is_none());
    let v: serde_json::Value = resp.json().await.expect("JSON error");
    assert!(!v["message"].as_str().unwrap_or_default().is_empty(), "{v}");
    v["error"].as_str().expect("error code").to_string()
}

/// Logs in with fresh tokens until the gateway accepts one (the keytab reload is asynchronous).
pub async fn wait_for_login(url: &str, cc: &Path) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = login_with(url, &spnego_token(cc, SERVICE)).await;
        if r.status() == 302 || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Kdc {
    /// Rotates the service key at the KDC (a new kvno) and returns a keytab `name` with only
    /// the new key.
    pub fn rotate(&self, name: &str) -> PathBuf {
        let fresh = self.path(name);
        self.kadmin(&format!("ktadd -k {} HTTP/localhost", fresh.display()));
        fresh
    }
}
