//! A real OpenID Provider for tests (node-oidc-provider, `tests/oidc/provider.mjs`) and a
//! browser-like HTTP client that walks its login and logout pages.
//!
//! ```ignore
//! let idp = Idp::start(json!([Idp::client("gw", Some("gw-secret"), &redirect_uri, &after_logout)])).await;
//! let mut browser = Browser::new();
//! let flow = browser
//!     .login_flow(&start_url, Act::login("alice", "alice-pw"), &Stop::after(&redirect_uri))
//!     .await;
//! assert_eq!(flow.status(), 302, "{flow}");
//! ```
//!
//! The provider's accounts: `alice` / `alice-pw` and `bob` / `bob-pw` (see [`ALICE`], [`BOB`]).
//! PKCE (S256) is required for every client. Scopes: openid, profile (name,
//! preferred_username, upn), email, groups, upn; the claims are in the ID token as well.

use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderMap, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// `(username, password)` of the provider's first account: sub `alice-sub`, preferred_username
/// `alice`, upn/email `alice@corp.example.com`, name `Alice Example`, groups `Sales`, `Qlik Admins`.
pub const ALICE: (&str, &str) = ("alice", "alice-pw");
/// `(username, password)` of the second account: sub `bob-sub`, preferred_username `CORP\bob`,
/// upn/email `bob@corp.example.com`, name `Bob Example`, groups `Staff`.
pub const BOB: (&str, &str) = ("bob", "bob-pw");

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HOPS: usize = 30;

/// A running `node tests/oidc/provider.mjs` on an ephemeral loopback port; killed on drop.
pub struct Idp {
    /// `http://127.0.0.1:PORT` (no trailing slash), also the `iss` of its tokens.
    pub issuer: String,
    pub port: u16,
    child: tokio::process::Child,
    log: Arc<Mutex<String>>,
}

impl Idp {
    /// Starts the provider with `clients`, a JSON array of client metadata (see [`Idp::client`]).
    pub async fn start(clients: Value) -> Idp {
        Self::start_with(clients, &[]).await
    }

    /// Like [`Idp::start`] with extra environment for the provider, e.g.
    /// `("TTL", r#"{"IdToken": 5, "Session": 10}"#)` (seconds, merged into oidc-provider's `ttl`).
    pub async fn start_with(clients: Value, env: &[(&str, &str)]) -> Idp {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("tests/oidc");
        assert!(
            dir.join("node_modules/oidc-provider/package.json")
                .is_file(),
            "tests/oidc/node_modules is missing: run ./scripts/test.sh, which installs it \
             (or `npm ci --prefix tests/oidc`)"
        );
        assert!(
            clients.is_array(),
            "Idp::start takes a JSON array of clients"
        );
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("provider.mjs"))
            .current_dir(&dir)
            .env("PORT", "0")
            .env("CLIENTS", clients.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("could not run node (is Node.js 18+ installed?): {e}"));

        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let err_log = log.clone();
        let stderr_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]);
                err_log.lock().unwrap().push_str(&text);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = tokio::time::timeout(READY_TIMEOUT, async {
            while let Ok(Some(line)) = stdout.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if let (Some(issuer), Some(port)) = (v["issuer"].as_str(), v["port"].as_u64()) {
                        return Some((issuer.to_string(), port as u16));
                    }
                }
                log.lock().unwrap().push_str(&format!("{line}\n"));
            }
            None
        })
        .await;
        let (issuer, port) = match ready {
            Ok(Some(ready)) => ready,
            Ok(None) => {
                let status = child.wait().await;
                let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
                panic!(
                    "the test OpenID Provider exited before listening ({status:?}):\n{}",
                    log.lock().unwrap()
                );
            }
            Err(_) => {
                let _ = child.start_kill();
                panic!(
                    "the test OpenID Provider did not listen within {READY_TIMEOUT:?}:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        let out_log = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                out_log.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Idp {
            issuer,
            port,
            child,
            log,
        }
    }

    /// Client metadata for [`Idp::start`] / [`Idp::add_clients`]: a confidential client
    /// (`client_secret_basic`) when `secret` is given, else a public one (`none`).
    pub fn client(
        client_id: &str,
        secret: Option<&str>,
        redirect_uri: &str,
        post_logout_redirect_uri: &str,
    ) -> Value {
        let mut c = serde_json::json!({
            "client_id": client_id,
            "redirect_uris": [redirect_uri],
            "post_logout_redirect_uris": [post_logout_redirect_uri],
            "response_types": ["code"],
            "grant_types": ["authorization_code"],
            "token_endpoint_auth_method": "none",
        });
        if let Some(s) = secret {
            c["client_secret"] = s.into();
            c["token_endpoint_auth_method"] = "client_secret_basic".into();
        }
        c
    }

    /// `issuer` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// `/.well-known/openid-configuration`.
    pub async fn discovery(&self) -> Value {
        self.get_json("/.well-known/openid-configuration").await
    }

    /// The published JWKS.
    pub async fn jwks(&self) -> Value {
        self.get_json("/jwks").await
    }

    /// The `kid`s in the JWKS, the signing key first.
    pub async fn kids(&self) -> Vec<String> {
        self.jwks().await["keys"]
            .as_array()
            .expect("jwks keys")
            .iter()
            .map(|k| k["kid"].as_str().expect("kid").to_string())
            .collect()
    }

    /// Generates a new RS256 key that signs every ID token from now on and puts it first in the
    /// JWKS; the old keys stay published unless `drop_old`. Returns the new `kid`.
    pub async fn rotate_keys(&self, drop_old: bool) -> String {
        let path = if drop_old {
            "/test/rotate-keys?drop_old=1"
        } else {
            "/test/rotate-keys"
        };
        let v = self.post_json(path, None).await;
        v["kid"].as_str().expect("kid").to_string()
    }

    /// Adds clients (an object or an array), replacing those with the same `client_id`; useful
    /// when a redirect URI is known only after the provider started.
    pub async fn add_clients(&self, clients: Value) {
        self.post_json("/test/clients", Some(clients)).await;
    }

    /// Everything the provider wrote to stderr (and stray stdout) so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The provider's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn get_json(&self, path: &str) -> Value {
        let resp = super::http_client()
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()));
        self.json(path, resp).await
    }

    async fn post_json(&self, path: &str, body: Option<Value>) -> Value {
        let mut req = super::http_client().post(self.url(path));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.log()));
        self.json(path, resp).await
    }

    async fn json(&self, path: &str, resp: reqwest::Response) -> Value {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "{path}: {status} {text}\n{}",
            self.log()
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    }
}

/// What to do on a login form.
#[derive(Clone, Debug)]
pub enum Act {
    /// Submit these credentials (once; if the form comes back, the flow stops there).
    Login { username: String, password: String },
    /// Press Cancel (`deny=1`): the provider answers the client with `error=access_denied`.
    Deny,
    /// Never submit a login form: stop at it (e.g. to assert that single sign-on happened).
    Nothing,
}

impl Act {
    pub fn login(username: &str, password: &str) -> Act {
        Act::Login {
            username: username.into(),
            password: password.into(),
        }
    }
}

/// Where a flow stops besides at a page that is neither a redirect nor a form to submit.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    before: Vec<String>,
    after: Vec<String>,
}

impl Stop {
    /// Follow everything.
    pub fn none() -> Stop {
        Stop::default()
    }

    /// Don't request a URL starting with `prefix`: the flow ends with the redirect to it (e.g. a
    /// fake relying party's redirect_uri, which nothing serves).
    pub fn before(prefix: &str) -> Stop {
        Stop::none().and_before(prefix)
    }

    /// Request a URL starting with `prefix`, then end with its response whatever it is (e.g. the
    /// gateway's callback, to assert on its 302 and Set-Cookie).
    pub fn after(prefix: &str) -> Stop {
        Stop::none().and_after(prefix)
    }

    pub fn and_before(mut self, prefix: &str) -> Stop {
        self.before.push(prefix.into());
        self
    }

    pub fn and_after(mut self, prefix: &str) -> Stop {
        self.after.push(prefix.into());
        self
    }
}

/// One request of a flow.
#[derive(Clone, Debug)]
pub struct Hop {
    pub method: &'static str,
    pub url: String,
    pub status: u16,
    /// The `Location`, made absolute.
    pub location: Option<String>,
}

/// A response with its body read.
#[derive(Clone, Debug)]
pub struct Page {
    /// The URL that answered.
    pub url: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// The `Location` header made absolute against [`Page::url`].
    pub fn location(&self) -> Option<String> {
        let loc = self.headers.get(LOCATION)?.to_str().ok()?;
        Some(resolve(&self.url, loc))
    }

    /// A query parameter of the `Location` (e.g. `code`, `state`, `error`, `iss`).
    pub fn location_param(&self, name: &str) -> Option<String> {
        query_param(&self.location()?, name)
    }

    /// The `Set-Cookie` values of this response.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }
}

/// The requests a [`Browser`] made and the response it stopped at.
#[derive(Clone, Debug)]
pub struct Flow {
    pub hops: Vec<Hop>,
    pub last: Page,
}

impl Flow {
    pub fn status(&self) -> u16 {
        self.last.status.as_u16()
    }

    /// The last response's `Location`, absolute.
    pub fn location(&self) -> Option<String> {
        self.last.location()
    }

    /// A query parameter of the last response's `Location`.
    pub fn param(&self, name: &str) -> Option<String> {
        self.last.location_param(name)
    }

    /// Whether any request of the flow went to a URL starting with `prefix` with `method`.
    pub fn visited(&self, method: &str, prefix: &str) -> bool {
        self.hops
            .iter()
            .any(|h| h.method == method && h.url.starts_with(prefix))
    }
}

impl fmt::Display for Flow {
    /// The chain, one request a line, then the last body (for assertion messages).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for h in &self.hops {
            write!(f, "{} {} -> {}", h.method, h.url, h.status)?;
            if let Some(l) = &h.location {
                write!(f, " -> {l}")?;
            }
            writeln!(f)?;
        }
        write!(f, "last body:\n{}", self.last.body)
    }
}

/// A cookie-keeping HTTP client that follows redirects and submits forms like a browser
/// without JavaScript would, plus auto-submitting the forms a browser's script would submit.
///
/// Cookies are kept per host like a browser (RFC 6265: the port does not separate them, so the
/// provider's and a gateway's cookies on 127.0.0.1 are both sent to either), with Domain, Path,
/// Secure, Max-Age and Expires honoured.
pub struct Browser {
    pub client: reqwest::Client,
    jar: Vec<StoredCookie>,
    /// Headers for the next request only (Fetch Metadata of a navigation, for instance).
    next_headers: Vec<(String, String)>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    /// A browser on the harness's client (no redirects followed by reqwest, rustls provider
    /// installed).
    pub fn new() -> Browser {
        Self::with_client(super::http_client())
    }

    /// `client` must not follow redirects itself (`redirect::Policy::none()`).
    pub fn with_client(client: reqwest::Client) -> Browser {
        Browser {
            client,
            jar: Vec::new(),
            next_headers: Vec::new(),
        }
    }

    /// Sends `headers` with the next request only.
    pub fn next_request_with(&mut self, headers: &[(&str, &str)]) {
        self.next_headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// One GET, no redirects followed, cookies sent and kept.
    pub async fn get(&mut self, url: &str) -> Page {
        self.send("GET", url, None, None).await
    }

    /// One form POST with a same-origin `Origin`, no redirects followed, cookies sent and kept.
    pub async fn post_form(&mut self, url: &str, fields: &[(&str, &str)]) -> Page {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let origin = origin_of(url);
        self.send("POST", url, Some(&fields), origin.as_deref())
            .await
    }

    /// GET `start_url` and follow redirects and auto-submitting forms until a page that is
    /// neither, or `stop`. A login form ends the flow (see [`Browser::login_flow`]).
    pub async fn follow(&mut self, start_url: &str, stop: &Stop) -> Flow {
        self.login_flow(start_url, Act::Nothing, stop).await
    }

    /// GET `start_url` (e.g. the gateway's login URL or the provider's authorization URL) and
    /// follow redirects; on the provider's login form do `act`; auto-submit forms that a browser
    /// would submit by script (logout confirmation, `form_post`). Ends at the first response
    /// that is not a redirect and has no form to submit, at a redirect to a `stop.before`
    /// prefix (not requested), or at the response of a `stop.after` URL.
    pub async fn login_flow(&mut self, start_url: &str, act: Act, stop: &Stop) -> Flow {
        self.run("GET", start_url, None, None, act, stop).await
    }

    /// POST `fields` to `url` from a page of the same origin (a same-origin `Origin` header, as
    /// the gateway's `POST /_gateway/logout` requires), then go on like [`Browser::follow`].
    pub async fn post_flow(&mut self, url: &str, fields: &[(&str, &str)], stop: &Stop) -> Flow {
        let fields = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let origin = origin_of(url);
        self.run("POST", url, Some(fields), origin, Act::Nothing, stop)
            .await
    }

    async fn run(
        &mut self,
        mut method: &'static str,
        start_url: &str,
        mut body: Option<Vec<(String, String)>>,
        mut origin: Option<String>,
        act: Act,
        stop: &Stop,
    ) -> Flow {
        let mut hops = Vec::new();
        let mut url = start_url.to_string();
        let mut acted = false;
        loop {
            if hops.len() >= MAX_HOPS {
                let chain: Vec<String> = hops
                    .iter()
                    .map(|h: &Hop| format!("{} {} -> {}", h.method, h.url, h.status))
                    .collect();
                panic!("more than {MAX_HOPS} requests:\n{}", chain.join("\n"));
            }
            let page = self
                .send(method, &url, body.as_ref(), origin.as_deref())
                .await;
            let location = page.location();
            hops.push(Hop {
                method,
                url: url.clone(),
                status: page.status.as_u16(),
                location: location.clone(),
            });
            let done = |hops: Vec<Hop>, last: Page| Flow { hops, last };
            if stop.after.iter().any(|p| url.starts_with(p)) {
                return done(hops, page);
            }
            if page.status.is_redirection() {
                let Some(next) = location else {
                    return done(hops, page);
                };
                if stop.before.iter().any(|p| next.starts_with(p)) {
                    return done(hops, page);
                }
                // 307/308 repeat the request (a browser then sends `Origin: null` when the
                // redirect changes the origin); the others turn it into a GET.
                if matches!(page.status.as_u16(), 307 | 308) {
                    if origin.is_some() && origin_of(&next) != origin_of(&url) {
                        origin = Some("null".into());
                    }
                } else {
                    method = "GET";
                    body = None;
                    origin = None;
                }
                url = next;
                continue;
            }
            let forms = parse_forms(&page.body);
            if let Some(form) = forms.iter().find(|f| f.has_field("username")) {
                if acted {
                    return done(hops, page);
                }
                let mut fields = form.hidden_fields();
                match &act {
                    Act::Nothing => return done(hops, page),
                    Act::Login { username, password } => {
                        fields.push(("username".into(), username.clone()));
                        fields.push(("password".into(), password.clone()));
                        if let Some(b) = form.buttons.iter().find(|b| b.0 != "deny") {
                            fields.push(b.clone());
                        }
                    }
                    Act::Deny => {
                        fields.push(("username".into(), String::new()));
                        fields.push(("password".into(), String::new()));
                        fields.push(("deny".into(), "1".into()));
                    }
                }
                acted = true;
                origin = origin_of(&page.url);
                (method, url, body) = form.submission(&page.url, fields);
                continue;
            }
            // Pages whose script submits their form on load: oidc-provider's logout
            // confirmation (our logoutSource) and its form_post / no-session logout pages.
            if page.body.contains("document.forms[0].submit()") && !forms.is_empty() {
                let form = &forms[0];
                let fields = form.hidden_fields();
                origin = origin_of(&page.url);
                (method, url, body) = form.submission(&page.url, fields);
                continue;
            }
            return done(hops, page);
        }
    }

    /// Follows an RP-initiated logout (`end_session_endpoint?id_token_hint=..&
    /// post_logout_redirect_uri=..&state=..`, or a gateway logout URL that redirects there):
    /// the provider's confirmation form is submitted with `logout=yes`, which ends the provider
    /// session, then it redirects (303) to the post_logout_redirect_uri.
    pub async fn logout_flow(&mut self, start_url: &str, stop: &Stop) -> Flow {
        self.login_flow(start_url, Act::Nothing, stop).await
    }

    /// The `Cookie` header this browser would send to `url`.
    pub fn cookie_header(&self, url: &str) -> Option<String> {
        let u = Url::parse(url).expect("absolute url");
        let host = u.host_str()?.to_ascii_lowercase();
        let secure = u.scheme() == "https";
        let now = cookie::time::OffsetDateTime::now_utc();
        let pairs: Vec<String> = self
            .jar
            .iter()
            .filter(|c| c.matches(&host, u.path(), secure, now))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    /// The value of cookie `name` as sent to `url`.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        self.cookie_header(url)?.split("; ").find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| v.to_string())
        })
    }

    /// Forgets every cookie (a new browser profile).
    pub fn clear_cookies(&mut self) {
        self.jar.clear();
    }

    async fn send(
        &mut self,
        method: &'static str,
        url: &str,
        form: Option<&Vec<(String, String)>>,
        origin: Option<&str>,
    ) -> Page {
        let mut req = match method {
            "GET" => self.client.get(url),
            "POST" => self.client.post(url),
            m => panic!("unsupported method {m}"),
        };
        req = req.header("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
        for (k, v) in std::mem::take(&mut self.next_headers) {
            req = req.header(k, v);
        }
        if let Some(c) = self.cookie_header(url) {
            req = req.header(COOKIE, c);
        }
        if let (Some(o), "POST") = (origin, method) {
            req = req.header(ORIGIN, o);
        }
        if let Some(fields) = form {
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form_urlencode(fields));
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"));
        self.store_cookies(url, &headers);
        Page {
            url: url.to_string(),
            status,
            headers,
            body,
        }
    }

    fn store_cookies(&mut self, url: &str, headers: &HeaderMap) {
        let u = Url::parse(url).expect("absolute url");
        let Some(host) = u.host_str().map(str::to_ascii_lowercase) else {
            return;
        };
        let now = cookie::time::OffsetDateTime::now_utc();
        for v in headers.get_all(SET_COOKIE) {
            let Ok(Ok(c)) = v.to_str().map(cookie::Cookie::parse) else {
                continue;
            };
            let (domain, host_only) = match c.domain() {
                Some(d) => {
                    let d = d.trim_start_matches('.').to_ascii_lowercase();
                    if !domain_matches(&host, &d) {
                        continue; // a cookie for another site: rejected like a browser does
                    }
                    (d, false)
                }
                None => (host.clone(), true),
            };
            let path = match c.path() {
                Some(p) if p.starts_with('/') => p.to_string(),
                _ => default_path(u.path()),
            };
            let expires = match c.max_age() {
                Some(age) => Some(now + age),
                None => c.expires_datetime(),
            };
            self.jar
                .retain(|s| !(s.name == c.name() && s.domain == domain && s.path == path));
            if expires.is_some_and(|e| e <= now) {
                continue; // a deletion
            }
            self.jar.push(StoredCookie {
                name: c.name().to_string(),
                value: c.value().to_string(),
                domain,
                host_only,
                path,
                secure: c.secure().unwrap_or(false),
                expires,
            });
        }
    }
}

/// One-shot [`Browser::login_flow`] on `client` (which must not follow redirects) with a fresh
/// cookie jar: `deny` presses Cancel instead of submitting the credentials.
pub async fn login_flow(
    client: &reqwest::Client,
    start_url: &str,
    username: &str,
    password: &str,
    deny: bool,
    stop: &Stop,
) -> Flow {
    let act = if deny {
        Act::Deny
    } else {
        Act::login(username, password)
    };
    Browser::with_client(client.clone())
        .login_flow(start_url, act, stop)
        .await
}

/// PKCE: a random `code_verifier` and its S256 `code_challenge`.
pub fn pkce_pair() -> (String, String) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let verifier =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The header and payload of a JWT, decoded without any validation.
pub fn jwt_parts(jwt: &str) -> (Value, Value) {
    use base64::Engine as _;
    let mut parts = jwt.split('.');
    let mut decode = |what: &str| -> Value {
        let part = parts
            .next()
            .unwrap_or_else(|| panic!("JWT without {what}: {jwt}"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap_or_else(|e| panic!("JWT {what} is not base64url: {e}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT {what} is not JSON: {e}"))
    };
    let header = decode("header");
    let payload = decode("payload");
    (header, payload)
}

/// `application/x-www-form-urlencoded` serialisation of `fields`.
pub fn form_urlencode(fields: &[(String, String)]) -> String {
    let mut u = Url::parse("http://form.invalid/").expect("url");
    u.query_pairs_mut().extend_pairs(fields);
    u.query().unwrap_or_default().to_string()
}

/// A query parameter of an absolute URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `scheme://host:port` of an absolute URL.
fn origin_of(url: &str) -> Option<String> {
    Some(Url::parse(url).ok()?.origin().ascii_serialization())
}

fn resolve(base: &str, location: &str) -> String {
    match Url::parse(base).and_then(|b| b.join(location)) {
        Ok(u) => u.to_string(),
        Err(_) => location.to_string(),
    }
}

#[derive(Clone, Debug)]
struct StoredCookie {
    name: String,
    value: String,
    domain: String,
    host_only: bool,
    path: String,
    secure: bool,
    expires: Option<cookie::time::OffsetDateTime>,
}

impl StoredCookie {
    fn matches(
        &self,
        host: &str,
        path: &str,
        secure: bool,
        now: cookie::time::OffsetDateTime,
    ) -> bool {
        let host_ok = if self.host_only {
            host == self.domain
        } else {
            domain_matches(host, &self.domain)
        };
        host_ok
            && path_matches(path, &self.path)
            && (secure || !self.secure)
            && self.expires.is_none_or(|e| e > now)
    }
}

fn domain_matches(host: &str, domain: &str) -> bool {
    host == domain
        || (host.ends_with(domain)
            && host[..host.len() - domain.len()].ends_with('.')
            && host.parse::<std::net::IpAddr>().is_err())
}

fn path_matches(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie)
            && (cookie.ends_with('/') || request[cookie.len()..].starts_with('/')))
}

fn default_path(request: &str) -> String {
    match request.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => request[..i].into(),
    }
}

/// An HTML form, as far as the tests need it.
#[derive(Clone, Debug, Default)]
struct Form {
    action: Option<String>,
    method: String,
    /// `(name, value, type)` of every `<input>`.
    inputs: Vec<(String, String, String)>,
    /// `(name, value)` of every named submit `<button>`.
    buttons: Vec<(String, String)>,
}

impl Form {
    fn has_field(&self, name: &str) -> bool {
        self.inputs.iter().any(|(n, _, _)| n == name)
    }

    fn hidden_fields(&self) -> Vec<(String, String)> {
        self.inputs
            .iter()
            .filter(|(_, _, t)| t == "hidden")
            .map(|(n, v, _)| (n.clone(), v.clone()))
            .collect()
    }

    fn submission(
        &self,
        page_url: &str,
        fields: Vec<(String, String)>,
    ) -> (&'static str, String, Option<Vec<(String, String)>>) {
        let target = match self.action.as_deref() {
            Some(a) if !a.is_empty() => resolve(page_url, a),
            _ => page_url.to_string(),
        };
        if self.method == "post" {
            ("POST", target, Some(fields))
        } else {
            let mut u = Url::parse(&target).expect("form action url");
            u.set_query(Some(&form_urlencode(&fields)));
            ("GET", u.to_string(), None)
        }
    }
}

/// The forms of a page: a small tag scanner (no nesting, no scripts), enough for the provider's
/// pages and the gateway's.
fn parse_forms(html: &str) -> Vec<Form> {
    let mut forms = Vec::new();
    let mut current: Option<Form> = None;
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let Some(end) = rest.find('>') else { break };
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        let name_end = tag
            .find(|c: char| c.is_whitespace() || c == '/')
            .unwrap_or(tag.len());
        let name = tag[..name_end].to_ascii_lowercase();
        let attrs = parse_attrs(&tag[name_end..]);
        let attr = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match name.as_str() {
            "form" => {
                if let Some(f) = current.take() {
                    forms.push(f);
                }
                current = Some(Form {
                    action: attr("action"),
                    method: attr("method")
                        .unwrap_or_else(|| "get".into())
                        .to_ascii_lowercase(),
                    ..Form::default()
                });
            }
            "/form" => {
                if let Some(f) = current.take() {
                    forms.push(f);
                }
            }
            "input" => {
                if let (Some(f), Some(n)) = (current.as_mut(), attr("name")) {
                    let ty = attr("type")
                        .unwrap_or_else(|| "text".into())
                        .to_ascii_lowercase();
                    f.inputs.push((n, attr("value").unwrap_or_default(), ty));
                }
            }
            "button" => {
                let ty = attr("type")
                    .unwrap_or_else(|| "submit".into())
                    .to_ascii_lowercase();
                if let (Some(f), Some(n), "submit") = (current.as_mut(), attr("name"), ty.as_str())
                {
                    f.buttons.push((n, attr("value").unwrap_or_default()));
                }
            }
            _ => {}
        }
    }
    if let Some(f) = current.take() {
        forms.push(f);
    }
    forms
}

/// `name="value" name='value' name=value name` → (lowercase name, unescaped value).
fn parse_attrs(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let s = s.trim_end_matches('/');
    let mut chars = s.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() || c == '/' {
            chars.next();
            continue;
        }
        let mut j = i;
        while let Some(&(k, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            j = k + c.len_utf8();
            chars.next();
        }
        let name = s[i..j].to_ascii_lowercase();
        while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek().is_some_and(|&(_, c)| c == '=') {
            chars.next();
            while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
                chars.next();
            }
            match chars.peek().copied() {
                Some((k, q @ ('"' | '\''))) => {
                    chars.next();
                    let mut e = s.len();
                    for (m, c) in chars.by_ref() {
                        if c == q {
                            e = m;
                            break;
                        }
                    }
                    value = s[k + 1..e].to_string();
                }
                Some((k, _)) => {
                    let mut e = s.len();
                    while let Some(&(m, c)) = chars.peek() {
                        if c.is_whitespace() {
                            e = m;
                            break;
                        }
                        chars.next();
                    }
                    value = s[k..e].to_string();
                }
                None => {}
            }
        }
        out.push((name, html_unescape(&value)));
    }
    out
}

fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';').filter(|&e| e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
