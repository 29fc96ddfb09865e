//! `qlik-gateway doctor`: checks a live deployment the way the gateway uses it and prints, for
//! every failing check, the probable cause and the setting to change (in the QMC or in the
//! gateway's configuration).
//!
//! Checks, in order: configuration warnings; certificate files (pair, CA, expiry); per Qlik node:
//! the QPS API with mutual TLS and the xrfkey, a probe user's Qlik session (created, recognised
//! by the virtual proxy under the configured session cookie name, deleted again), the engine
//! websocket upgrade (host allow list, CSRF token); the clock against Qlik's; the keytab
//! (negotiate) or the IdP's discovery document (OIDC).
// A command's output, not logging: `doctor` is a command whose output is its report.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use http::{header, HeaderValue, Request};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;

use crate::config::{AuthConfig, Config, QlikConfig, QlikMode, QlikNodeConfig};
use crate::identity::Identity;
use crate::qlik::{QlikError, QpsClient};

/// Certificates expiring within this many days are a warning.
const EXPIRY_WARN_DAYS: i64 = 30;
/// Clock differences beyond this are a warning (Kerberos tolerates 5 minutes; tokens less).
const SKEW_WARN: Duration = Duration::from_secs(60);

/// Options of the `doctor` subcommand.
#[derive(Debug, Clone)]
pub struct Options {
    /// The user the probe session is created for.
    pub user_directory: String,
    pub user_id: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            user_directory: "QLIK-GATEWAY".into(),
            user_id: "doctor".into(),
        }
    }
}

impl Options {
    /// `DIR\id` (or `DIR/id`) as given to `--user`.
    pub fn parse_user(s: &str) -> Result<Self, String> {
        let (d, u) = s
            .split_once('\\')
            .or_else(|| s.split_once('/'))
            .ok_or_else(|| format!("--user {s:?}: write it as DIRECTORY\\userid"))?;
        if d.is_empty() || u.is_empty() {
            return Err(format!("--user {s:?}: write it as DIRECTORY\\userid"));
        }
        Ok(Self {
            user_directory: d.into(),
            user_id: u.into(),
        })
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One check: what was checked and, unless it passed, why and what to change.
#[derive(Debug, Clone)]
pub struct Check {
    pub status: Status,
    pub what: String,
    pub cause: Option<String>,
    /// The setting to change in the QMC.
    pub qmc: Option<String>,
    /// The setting to change in the gateway's configuration (or elsewhere).
    pub gateway: Option<String>,
}

impl Check {
    fn ok(what: impl Into<String>) -> Self {
        Self {
            status: Status::Ok,
            what: what.into(),
            cause: None,
            qmc: None,
            gateway: None,
        }
    }

    fn bad(status: Status, what: impl Into<String>, cause: impl Into<String>) -> Self {
        Self {
            status,
            what: what.into(),
            cause: Some(cause.into()),
            qmc: None,
            gateway: None,
        }
    }

    fn fail(what: impl Into<String>, cause: impl Into<String>) -> Self {
        Self::bad(Status::Fail, what, cause)
    }

    fn warn(what: impl Into<String>, cause: impl Into<String>) -> Self {
        Self::bad(Status::Warn, what, cause)
    }

    fn qmc(mut self, s: impl Into<String>) -> Self {
        self.qmc = Some(s.into());
        self
    }

    fn gw(mut self, s: impl Into<String>) -> Self {
        self.gateway = Some(s.into());
        self
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        write!(f, "{tag}  {}", self.what)?;
        if self.status != Status::Ok {
            if let Some(c) = &self.cause {
                write!(f, "\n      cause: {c}")?;
            }
            if let Some(q) = &self.qmc {
                write!(f, "\n      fix (QMC): {q}")?;
            }
            if let Some(g) = &self.gateway {
                write!(f, "\n      fix (gateway): {g}")?;
            }
        }
        Ok(())
    }
}

/// Every check run, printed as it completes.
#[derive(Default)]
pub struct Report {
    pub checks: Vec<Check>,
    /// Print each check to stdout as it is added.
    pub print: bool,
    /// `Date` headers seen from Qlik, with the local time when each arrived.
    dates: Vec<(String, SystemTime, SystemTime)>,
}

impl Report {
    fn push(&mut self, c: Check) {
        if self.print {
            println!("{c}");
        }
        self.checks.push(c);
    }

    /// Whether any check failed (exit code 1).
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    fn saw_date(&mut self, from: &str, headers: &http::HeaderMap) {
        if let Some(t) = headers
            .get(header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| httpdate::parse_http_date(s).ok())
        {
            self.dates.push((from.to_string(), t, SystemTime::now()));
        }
    }
}

/// Runs every check against the deployment `cfg` describes.
pub async fn run(cfg: &Config, config_path: &Path, opts: &Options, print: bool) -> Report {
    crate::net::tls::install_default_provider();
    let mut r = Report {
        print,
        ..Report::default()
    };
    r.push(Check::ok(format!(
        "configuration {} is valid",
        config_path.display()
    )));
    for w in &cfg.warnings {
        r.push(
            Check::warn(
                format!("configuration: {w}"),
                "found by the configuration check (check-config reports it too)",
            )
            .gw("change the key the warning names"),
        );
    }
    let certs_ok = certificates(cfg, &mut r);
    // What `check-config` and start-up build: the identity provider, session store, mashup.
    match crate::state::AppState::new(cfg.clone()) {
        Ok(_) => r.push(Check::ok(
            "the gateway's state builds (identity provider, session store, mashup)",
        )),
        Err(e) => r.push(
            Check::fail(
                "the gateway cannot start with this configuration",
                e.to_string(),
            )
            .gw("see the key or file the cause names"),
        ),
    }
    if certs_ok {
        for node in &cfg.qlik.nodes {
            check_node(cfg, node, opts, &mut r).await;
        }
    }
    clock(&mut r);
    match &cfg.auth {
        AuthConfig::Negotiate(n) => keytab(n, &mut r),
        AuthConfig::Oidc(o) => oidc(o, &mut r).await,
        _ => {}
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Certificate files

const EXPORT_QMC: &str = "Certificates → Export certificates: the machine name the gateway connects to, \"Include secret key\", format \"Platform independent PEM-format\"; copy client.pem, client_key.pem and root.pem";

/// Checks the certificate files; `false` when Qlik cannot be reached with them at all.
fn certificates(cfg: &Config, r: &mut Report) -> bool {
    let q = &cfg.qlik;
    let mut usable = true;
    let pair = (|| -> Result<(), String> {
        let chain = crate::net::tls::load_certs(&q.client_cert).map_err(|e| e.to_string())?;
        let key = crate::net::tls::load_key(&q.client_key).map_err(|e| e.to_string())?;
        let signing = crate::net::tls::provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("{}: {e}", q.client_key.display()))?;
        rustls::sign::CertifiedKey::new(chain, signing)
            .keys_match()
            .map_err(|e| format!("{e}"))
    })();
    match pair {
        Ok(()) => r.push(Check::ok(format!(
            "client certificate {} and key {} belong together",
            q.client_cert.display(),
            q.client_key.display()
        ))),
        Err(e) => {
            usable = false;
            r.push(
                Check::fail(
                    "client certificate and key (qlik.client_cert, qlik.client_key)",
                    format!("{e}; the key is not this certificate's, or a file is not PEM"),
                )
                .qmc(EXPORT_QMC)
                .gw("point qlik.client_cert at client.pem and qlik.client_key at client_key.pem of the same export"),
            );
        }
    }
    match crate::net::tls::root_store(&q.ca_cert, false) {
        Ok(_) => r.push(Check::ok(format!(
            "CA certificate {} parses",
            q.ca_cert.display()
        ))),
        Err(e) => {
            usable = false;
            r.push(
                Check::fail("CA certificate (qlik.ca_cert)", e.to_string())
                    .qmc(EXPORT_QMC)
                    .gw("point qlik.ca_cert at root.pem of the export"),
            );
        }
    }
    let mut files: Vec<(&str, &Path)> = vec![
        ("qlik.client_cert", &q.client_cert),
        ("qlik.ca_cert", &q.ca_cert),
    ];
    if let Some(t) = &cfg.server.tls {
        files.push(("server.tls.cert", &t.cert));
    }
    let now = chrono::Utc::now().timestamp();
    for (key, path) in files {
        let Ok(certs) = crate::net::tls::load_certs(path) else {
            continue;
        };
        for der in certs.iter().take(if key == "qlik.ca_cert" { 8 } else { 1 }) {
            let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
                r.push(Check::fail(
                    format!("{key} {}", path.display()),
                    "a certificate in the file is not valid X.509",
                ));
                continue;
            };
            let subject = cert.subject().to_string();
            let not_after = cert.validity().not_after.timestamp();
            let not_before = cert.validity().not_before.timestamp();
            let date = fmt_date(not_after);
            let days = (not_after - now) / 86_400;
            let what = format!("{key} \"{subject}\"");
            let fix_qmc = if key == "server.tls.cert" {
                None
            } else {
                Some(format!(
                    "{EXPORT_QMC} (after renewing the certificates of the site if they expire)"
                ))
            };
            let fix_gw = format!("replace the file {}", path.display());
            let c = if not_after < now {
                usable &= key == "server.tls.cert";
                Check::fail(
                    format!("{what} expired on {date}"),
                    "an expired certificate is refused in every TLS handshake",
                )
            } else if not_before > now {
                Check::fail(
                    format!("{what} is not valid before {}", fmt_date(not_before)),
                    "the certificate is not valid yet: this host's clock, or the issuer's, is wrong",
                )
            } else if days < EXPIRY_WARN_DAYS {
                Check::warn(
                    format!("{what} expires in {days} days ({date})"),
                    format!("the certificate expires within {EXPIRY_WARN_DAYS} days; then every call to Qlik fails"),
                )
            } else {
                r.push(Check::ok(format!("{what} valid until {date}")));
                continue;
            };
            let c = match fix_qmc {
                Some(f) => c.qmc(f),
                None => c,
            };
            r.push(c.gw(fix_gw));
        }
    }
    usable
}

fn fmt_date(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| ts.to_string())
}

// ---------------------------------------------------------------------------------------------
// One Qlik node

struct Node<'a> {
    q: &'a QlikConfig,
    proxy_url: &'a reqwest::Url,
    qps_url: &'a reqwest::Url,
    http: reqwest::Client,
    qps: QpsClient,
    /// `Host` of the proxy.
    host: String,
    /// `Origin` the gateway sends on upgrades (the proxy's own).
    origin: String,
}

fn vp_name(q: &QlikConfig) -> String {
    if q.virtual_proxy.is_empty() {
        "the default virtual proxy (no prefix)".into()
    } else {
        format!("virtual proxy \"{}\"", q.virtual_proxy)
    }
}

fn vp_qmc(q: &QlikConfig) -> String {
    if q.virtual_proxy.is_empty() {
        "Virtual proxies → the one with an empty prefix".into()
    } else {
        format!("Virtual proxies → prefix \"{}\"", q.virtual_proxy)
    }
}

async fn check_node(cfg: &Config, n: &QlikNodeConfig, opts: &Options, r: &mut Report) {
    let q = &cfg.qlik;
    let qps = match QpsClient::for_node(q, &n.qps_api_url) {
        Ok(c) => c,
        Err(e) => {
            r.push(Check::fail("QPS API client", e.to_string()).qmc(EXPORT_QMC));
            return;
        }
    };
    let http = match proxy_client(q) {
        Ok(c) => c,
        Err(e) => {
            r.push(Check::fail("Qlik proxy client", e));
            return;
        }
    };
    let node = Node {
        q,
        proxy_url: &n.proxy_url,
        qps_url: &n.qps_api_url,
        http,
        qps,
        host: crate::net::upstream::host_header(&n.proxy_url),
        origin: n.proxy_url.origin().ascii_serialization(),
    };
    if !qps_reachable(&node, r).await {
        return;
    }
    let identity = Identity {
        user_directory: opts.user_directory.clone(),
        user_id: opts.user_id.clone(),
        attributes: Vec::new(),
    };
    // The probe session's cookie value, deleted at the end whatever happened in between.
    let mut created: Option<String> = None;
    let accepted = probe_session(&node, &identity, &mut created, r).await;
    if let Some(cookie) = accepted {
        websocket(&node, &identity, cookie.as_deref(), r).await;
    }
    if let Some(id) = created {
        match node.qps.delete_session(&id).await {
            Ok(()) => r.push(Check::ok(format!(
                "probe session of {}\\{} deleted (DELETE /qps/…/session)",
                identity.user_directory, identity.user_id
            ))),
            Err(e) => r.push(
                Check::fail("deleting the probe session", e.to_string())
                    .gw("the session ends with the virtual proxy's session inactivity timeout"),
            ),
        }
    }
}

fn proxy_client(q: &QlikConfig) -> Result<reqwest::Client, String> {
    let roots = crate::net::tls::root_store(&q.ca_cert, true).map_err(|e| e.to_string())?;
    let tls =
        crate::net::tls::client_config(roots, None, &[b"http/1.1"]).map_err(|e| e.to_string())?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(q.connect_timeout)
        .timeout(q.qps_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

async fn qps_reachable(node: &Node<'_>, r: &mut Report) -> bool {
    let url = node.qps_url.origin().ascii_serialization();
    let mtls = format!("QPS API {url} reachable with mutual TLS");
    match node.qps.probe().await {
        Ok(()) => {
            r.push(Check::ok(mtls));
            r.push(Check::ok(format!("QPS API {url} accepts the xrfkey")));
            true
        }
        Err(QlikError::XrfkeyRejected) => {
            r.push(Check::ok(mtls));
            r.push(
                Check::fail(
                    format!("QPS API {url} rejected the xrfkey"),
                    "403 \"XSRF prevention check failed\": something between the gateway and QPS (a reverse proxy, load balancer or API gateway) drops or rewrites the xrfkey query parameter or the X-Qlik-Xrfkey header",
                )
                .gw("point qlik.qps_api_url straight at the node's QPS port 4243, or let that intermediary pass the query string and X-Qlik-* headers unchanged"),
            );
            false
        }
        Err(QlikError::Tls { detail, .. }) => {
            r.push(
                Check::fail(
                    format!("QPS API {url}: TLS handshake failed ({detail})"),
                    "the client certificate is not trusted by this Qlik site (exported from another site or an old export), or qlik.ca_cert is not the root that signed the QPS certificate",
                )
                .qmc(EXPORT_QMC)
                .gw("set qlik.client_cert, qlik.client_key and qlik.ca_cert to client.pem, client_key.pem and root.pem of an export from this site"),
            );
            false
        }
        Err(e @ (QlikError::Unreachable { .. } | QlikError::Timeout { .. })) => {
            r.push(
                Check::fail(format!("QPS API {url} unreachable"), e.to_string())
                    .qmc("Proxies → this node → Authentication listen port / REST API listen port (4243 by default); the Windows firewall on the node must let the gateway in")
                    .gw("check qlik.qps_api_url (host and port 4243)"),
            );
            false
        }
        Err(e) => {
            r.push(Check::fail(format!("QPS API {url}"), e.to_string()));
            false
        }
    }
}

/// What `/{vp}/qps/user` said.
enum UserAnswer {
    Authenticated(String),
    Inactive(String),
    NotFound,
    Error(String),
}

async fn qps_user(
    node: &Node<'_>,
    cookie: Option<(&str, &str)>,
    extra: Option<(&http::HeaderName, HeaderValue)>,
    r: &mut Report,
) -> UserAnswer {
    let mut url = node.proxy_url.clone();
    url.set_path(&format!("{}/qps/user", node.q.upstream_prefix()));
    let mut req = node
        .http
        .get(url)
        .header(header::ACCEPT, "application/json");
    if let Some((n, v)) = cookie {
        req = req.header(header::COOKIE, format!("{n}={v}"));
    }
    if let Some((n, v)) = extra {
        req = req.header(n, v);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let why = crate::net::error_chain::tls_cause(&e)
                .map(|t| format!("TLS: {t}"))
                .unwrap_or_else(|| crate::net::error_chain::root_cause(&e));
            return UserAnswer::Error(why);
        }
    };
    r.saw_date("the Qlik proxy", resp.headers());
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return UserAnswer::NotFound;
    }
    if status.is_redirection() || status == reqwest::StatusCode::UNAUTHORIZED {
        return UserAnswer::Inactive(format!("HTTP {status} (a login redirect)"));
    }
    let body: serde_json::Value = match resp.json().await {
        Ok(v) => v,
        Err(e) => return UserAnswer::Error(format!("HTTP {status}, not JSON: {e}")),
    };
    let get = |k: &str| {
        body.as_object().and_then(|o| {
            o.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .and_then(|(_, v)| v.as_str())
        })
    };
    match (get("userId"), get("userDirectory")) {
        (Some(id), Some(dir)) => UserAnswer::Authenticated(format!("{dir}\\{id}")),
        _ => UserAnswer::Inactive(format!(
            "\"session\": \"{}\"",
            get("session").unwrap_or("?")
        )),
    }
}

/// Creates the probe user's Qlik session as the gateway would and checks that the virtual proxy
/// recognises it. `Some(cookie)`: accepted (cookie `None` in header mode without a cookie).
async fn probe_session(
    node: &Node<'_>,
    identity: &Identity,
    created: &mut Option<String>,
    r: &mut Report,
) -> Option<Option<String>> {
    let q = node.q;
    let user = format!("{}\\{}", identity.user_directory, identity.user_id);
    let cookie_name = q.session_cookie.as_str();
    let header_check = |answer: UserAnswer, r: &mut Report| -> bool {
        match answer {
            UserAnswer::Authenticated(who) => {
                r.push(Check::ok(format!(
                    "{} at {} authenticates {who} by its header",
                    vp_name(q),
                    node.proxy_url
                )));
                true
            }
            other => {
                r.push(common_failure(node, other).unwrap_or_else(
                    || {
                        Check::fail(
                            format!("{} did not accept the user header", vp_name(q)),
                            "the virtual proxy is not a header-authentication one, or its header name or pattern differs from qlik.mode",
                        )
                        .qmc(format!("{} → Authentication → Header authentication static/dynamic user directory, Header authentication header name", vp_qmc(q)))
                    },
                ));
                false
            }
        }
    };
    let cookie_value = match &q.mode {
        QlikMode::Session => {
            let sid = uuid::Uuid::new_v4().to_string();
            match node.qps.create_session(identity, &sid).await {
                Ok(()) => {
                    *created = Some(sid.clone());
                    r.push(Check::ok(format!(
                        "QPS created a session for the probe user {user}"
                    )));
                    sid
                }
                Err(e) => {
                    r.push(
                        Check::fail(format!("creating a session for {user}"), e.to_string())
                            .qmc(format!("{} must exist and be linked to this node's proxy (Associated items → Proxies)", vp_qmc(q)))
                            .gw("check qlik.virtual_proxy"),
                    );
                    return None;
                }
            }
        }
        QlikMode::Ticket => match ticket_cookie(node, identity, r).await {
            Some(v) => {
                *created = Some(v.clone());
                v
            }
            None => return None,
        },
        QlikMode::Header(h) => {
            let Some(v) = h.value(&identity.user_directory, &identity.user_id) else {
                r.push(Check::fail(
                    "user header",
                    format!("{user} cannot be sent in a header"),
                ));
                return None;
            };
            let answer = qps_user(node, None, Some((&h.name, v)), r).await;
            return header_check(answer, r).then_some(None);
        }
    };
    let answer = qps_user(node, Some((cookie_name, &cookie_value)), None, r).await;
    match answer {
        UserAnswer::Authenticated(who) => {
            r.push(Check::ok(format!(
                "{} at {} accepts the session cookie {cookie_name} (/qps/user: {who})",
                vp_name(q),
                node.proxy_url
            )));
            Some(Some(cookie_value))
        }
        UserAnswer::Inactive(said) => {
            let http = node.proxy_url.scheme() == "http";
            let suffixed = format!("{cookie_name}-HTTP");
            let what = format!(
                "{} did not recognise the session cookie {cookie_name} ({said})",
                vp_name(q)
            );
            if http && !cookie_name.ends_with("-HTTP") {
                let again = qps_user(node, Some((&suffixed, &cookie_value)), None, r).await;
                if matches!(again, UserAnswer::Authenticated(_)) {
                    r.push(
                        Check::fail(
                            what,
                            format!("qlik.proxy_url is plain http, and over http Qlik appends -HTTP to the session cookie header name: the proxy expects {suffixed}"),
                        )
                        .qmc(format!("nothing to change under {} → Session cookie header name (Qlik adds -HTTP itself over http); to do without the suffix, serve the proxy over https", vp_qmc(q)))
                        .gw(format!("set qlik.session_cookie = \"{suffixed}\", or use https in qlik.proxy_url")),
                    );
                    return None;
                }
            }
            let hint = if http && !cookie_name.ends_with("-HTTP") {
                format!(" (over plain http Qlik may expect {suffixed}: the -HTTP suffix)")
            } else {
                String::new()
            };
            r.push(
                Check::fail(
                    what,
                    format!("the virtual proxy's session cookie header name is not {cookie_name}{hint}, or qlik.virtual_proxy names another virtual proxy than the one whose sessions QPS created"),
                )
                .qmc(format!("{} → Session cookie header name: make it and qlik.session_cookie the same", vp_qmc(q)))
                .gw("set qlik.session_cookie to the virtual proxy's Session cookie header name"),
            );
            None
        }
        other => {
            r.push(
                common_failure(node, other)
                    .unwrap_or_else(|| Check::fail("probe session", "unexpected answer")),
            );
            None
        }
    }
}

/// Checks for answers that mean the proxy or the prefix is wrong; `None` for "inactive".
fn common_failure(node: &Node<'_>, a: UserAnswer) -> Option<Check> {
    let q = node.q;
    match a {
        UserAnswer::NotFound => Some(
            Check::fail(
                format!(
                    "{}{}/qps/user answered 404",
                    node.proxy_url.as_str().trim_end_matches('/'),
                    q.upstream_prefix()
                ),
                format!(
                    "no virtual proxy with the prefix \"{}\" on this proxy",
                    q.virtual_proxy
                ),
            )
            .qmc(format!(
                "{} → Prefix, and Associated items → Proxies must include this node",
                vp_qmc(q)
            ))
            .gw("set qlik.virtual_proxy to the virtual proxy's prefix"),
        ),
        UserAnswer::Error(e) => Some(
            Check::fail(format!("Qlik proxy {} unreachable", node.proxy_url), e)
                .qmc("Proxies → this node → Service listen port HTTPS (443) / HTTP (80)")
                .gw("check qlik.proxy_url, and qlik.ca_cert for the proxy's certificate"),
        ),
        _ => None,
    }
}

/// Ticket mode: a ticket from QPS redeemed at the virtual proxy; the session cookie it sets.
async fn ticket_cookie(node: &Node<'_>, identity: &Identity, r: &mut Report) -> Option<String> {
    let q = node.q;
    let ticket = match node.qps.request_ticket(identity).await {
        Ok(t) => t,
        Err(e) => {
            r.push(
                Check::fail("requesting a ticket for the probe user", e.to_string()).qmc(format!(
                    "{} must exist and be linked to this node's proxy",
                    vp_qmc(q)
                )),
            );
            return None;
        }
    };
    let mut url = node.proxy_url.clone();
    url.set_path(&format!("{}/qps/user", q.upstream_prefix()));
    url.query_pairs_mut().append_pair("qlikTicket", &ticket);
    let resp = match node
        .http
        .get(url)
        .header(header::ACCEPT, "application/json")
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            r.push(
                common_failure(
                    node,
                    UserAnswer::Error(crate::net::error_chain::root_cause(&e)),
                )
                .unwrap_or_else(|| Check::fail("ticket redemption", "unreachable")),
            );
            return None;
        }
    };
    r.saw_date("the Qlik proxy", resp.headers());
    let mut other = None;
    for v in resp.headers().get_all(header::SET_COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        match crate::qlik::cookies::qlik_session_set_cookie(s, &q.session_cookie) {
            crate::qlik::cookies::QlikSetCookie::Ours(v) if !v.is_empty() => {
                r.push(Check::ok(format!(
                    "the ticket was redeemed; the proxy set {}",
                    q.session_cookie
                )));
                return Some(v.to_string());
            }
            crate::qlik::cookies::QlikSetCookie::Other(n) => other = Some(n.to_string()),
            _ => {}
        }
    }
    let status = resp.status();
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        r.push(common_failure(node, UserAnswer::NotFound).unwrap_or_else(|| Check::fail("", "")));
        return None;
    }
    r.push(match other {
        Some(n) => Check::fail(
            format!("the proxy set the session cookie {n}, not {}", q.session_cookie),
            format!("the virtual proxy's session cookie header name is {n}{}", if n.ends_with("-HTTP") { " (Qlik appends -HTTP over plain http)" } else { "" }),
        )
        .qmc(format!("{} → Session cookie header name", vp_qmc(q)))
        .gw(format!("set qlik.session_cookie = \"{n}\"")),
        None => Check::fail(
            format!("redeeming a ticket at {} set no session cookie (HTTP {status})", vp_name(q)),
            "the virtual proxy does not accept tickets (not ticket authentication), or the prefix is wrong",
        )
        .qmc(format!("{} → Authentication method: Ticket", vp_qmc(q))),
    });
    None
}

// ---------------------------------------------------------------------------------------------
// The engine websocket

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

async fn websocket(node: &Node<'_>, identity: &Identity, cookie: Option<&str>, r: &mut Report) {
    let q = node.q;
    if q.engine_url.is_some() {
        r.push(Check::ok(
            "engine websockets go to qlik.engine_url directly: the proxy's websocket checks do not apply",
        ));
        return;
    }
    let prefix = q.upstream_prefix();
    let cookie_header = cookie.map(|v| format!("{}={v}", q.session_cookie));
    let user_header = match &q.mode {
        QlikMode::Header(h) => h
            .value(&identity.user_directory, &identity.user_id)
            .map(|v| (h.name.clone(), v)),
        _ => None,
    };
    // The CSRF token, fetched as the gateway fetches it.
    let mut token = None;
    if let Some(c) = &cookie_header {
        let mut url = node.proxy_url.clone();
        url.set_path(&format!("{prefix}/qps/csrftoken"));
        match node.http.get(url).header(header::COOKIE, c).send().await {
            Ok(resp) => {
                r.saw_date("the Qlik proxy", resp.headers());
                if let Some(t) = resp
                    .headers()
                    .get("qlik-csrf-token")
                    .and_then(|v| v.to_str().ok())
                {
                    token = Some(t.to_string());
                    r.push(Check::ok(
                        "the proxy issued a websocket CSRF token (/qps/csrftoken)",
                    ));
                } else if resp.status().is_redirection()
                    || resp.status() == reqwest::StatusCode::UNAUTHORIZED
                {
                    r.push(
                        Check::fail(
                            format!("/qps/csrftoken answered HTTP {} for the probe session", resp.status()),
                            "the proxy does not recognise the session when asked for the websocket CSRF token",
                        )
                        .qmc(format!("{} → Session cookie header name", vp_qmc(q))),
                    );
                    return;
                } else {
                    r.push(Check::ok(format!(
                        "no websocket CSRF token (/qps/csrftoken: HTTP {}; Qlik before November 2024)",
                        resp.status()
                    )));
                }
            }
            Err(e) => {
                r.push(Check::fail(
                    "fetching the websocket CSRF token",
                    crate::net::error_chain::root_cause(&e),
                ));
                return;
            }
        }
    }
    let mut target = format!("{prefix}/app/engineData");
    if let Some(t) = &token {
        let enc = percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC);
        target = format!("{target}?qlik-csrf-token={enc}");
    }
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&node.host) {
        headers.insert(header::HOST, v);
    }
    if let Ok(v) = HeaderValue::from_str(&node.origin) {
        headers.insert(header::ORIGIN, v);
    }
    if let Some(c) = cookie_header
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        headers.insert(header::COOKIE, c);
    }
    if let Some((n, v)) = user_header {
        headers.insert(n, v);
    }
    let what = format!(
        "engine websocket upgrade at {}{prefix}/app/engineData",
        node.proxy_url.as_str().trim_end_matches('/'),
    );
    match dial(q, node, &target, headers).await {
        Ok(mut ws) => {
            // Qlik tells at once (or after the first frame) whether the socket is authenticated.
            let mut must_auth = false;
            if let Ok(Some(Ok(tungstenite::Message::Text(t)))) =
                tokio::time::timeout(Duration::from_secs(2), ws.next()).await
            {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(t.as_str()) {
                    must_auth = v["method"] == "OnAuthenticationInformation"
                        && v["params"]["mustAuthenticate"] == true;
                }
            }
            let _ = ws.close(None).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
            if must_auth {
                r.push(
                    Check::fail(
                        format!("{what}: Qlik says mustAuthenticate"),
                        "the websocket was opened but the proxy did not recognise the session on it",
                    )
                    .qmc(format!("{} → Session cookie header name", vp_qmc(q))),
                );
            } else {
                r.push(Check::ok(format!("{what} accepted (101)")));
            }
        }
        Err(Refused::Status(403, body)) => {
            let host = node.proxy_url.host_str().unwrap_or_default().to_string();
            let lower = body.to_ascii_lowercase();
            let csrf = lower.contains("hijacking") || lower.contains("csrf");
            let origin = lower.contains("origin") || lower.contains("host");
            let mut c = if csrf && !origin {
                Check::fail(
                    format!("{what} refused (403: {})", body.trim()),
                    "the proxy refused the websocket CSRF token (qlik-csrf-token): a proxy in between strips the query string, or /qps/csrftoken is served by another node than the websocket",
                )
                .qmc(format!("{} → Load balancing: the gateway must reach the node that issued the token", vp_qmc(q)))
            } else {
                Check::fail(
                    format!("{what} refused (403{})", if body.trim().is_empty() { String::new() } else { format!(": {}", body.trim()) }),
                    format!("Origin {} is not in the virtual proxy's host allow list (Qlik compares the Origin host with the allow list and its own node name){}", node.origin, if origin { "" } else { ", or the websocket CSRF token was refused" }),
                )
                .qmc(format!("{} → Advanced → Host allow list: add {host} (the host the gateway uses in qlik.proxy_url)", vp_qmc(q)))
            };
            c = c.gw("qlik.proxy_url should name the Qlik node as Qlik knows it (its host name), or that name be in the host allow list");
            r.push(c);
        }
        Err(Refused::Status(s, body)) => r.push(Check::fail(
            format!("{what} refused (HTTP {s}: {})", body.trim()),
            "the proxy did not upgrade the connection",
        )
        .qmc(format!("{} → check that websockets reach the engine (Proxies → this node → Load balancing nodes)", vp_qmc(q)))),
        Err(Refused::Other(e)) => r.push(Check::fail(format!("{what} failed"), e)
            .gw("check qlik.proxy_url and that nothing in between blocks websockets")),
    }
}

enum Refused {
    Status(u16, String),
    Other(String),
}

type Ws = tokio_tungstenite::WebSocketStream<Pin<Box<dyn Io>>>;

async fn dial(
    q: &QlikConfig,
    node: &Node<'_>,
    target: &str,
    mut headers: http::HeaderMap,
) -> Result<Ws, Refused> {
    let base = node.proxy_url;
    let tls = base.scheme() == "https";
    let host = base.host_str().unwrap_or("localhost").to_string();
    let port = base
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let other = |e: String| Refused::Other(e);
    let tcp = tokio::time::timeout(q.connect_timeout, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| other(format!("connect to {host}:{port} timed out")))?
        .map_err(|e| other(format!("connect to {host}:{port}: {e}")))?;
    let io: Pin<Box<dyn Io>> = if tls {
        let roots =
            crate::net::tls::root_store(&q.ca_cert, true).map_err(|e| other(e.to_string()))?;
        let cfg = crate::net::tls::client_config(roots, None, &[b"http/1.1"])
            .map_err(|e| other(e.to_string()))?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| other(e.to_string()))?;
        let s = tokio::time::timeout(
            q.connect_timeout,
            tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
        )
        .await
        .map_err(|_| other("TLS handshake timed out".into()))?
        .map_err(|e| other(format!("TLS: {e}")))?;
        Box::pin(s)
    } else {
        Box::pin(tcp)
    };
    let scheme = if tls { "wss" } else { "ws" };
    let mut req = Request::get(format!("{scheme}://{}{target}", node.host))
        .body(())
        .map_err(|e| other(e.to_string()))?;
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
    if let Ok(k) = HeaderValue::from_str(&tungstenite::handshake::client::generate_key()) {
        headers.insert("sec-websocket-key", k);
    }
    *req.headers_mut() = headers;
    match tokio::time::timeout(q.response_timeout, tokio_tungstenite::client_async(req, io)).await {
        Err(_) => Err(other(format!("no answer within {:?}", q.response_timeout))),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).chars().take(200).collect())
                .unwrap_or_default();
            Err(Refused::Status(resp.status().as_u16(), body))
        }
        Ok(Err(e)) => Err(other(format!("websocket handshake: {e}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Clock, keytab, OIDC

fn clock(r: &mut Report) {
    let Some((from, theirs, ours)) = r.dates.first().cloned() else {
        return;
    };
    let (ahead, d) = match theirs.duration_since(ours) {
        Ok(d) => ("ahead of", d),
        Err(e) => ("behind", e.duration()),
    };
    let secs = d.as_secs();
    if d > SKEW_WARN {
        r.push(
            Check::warn(
                format!("clock: {from} is {secs} s {ahead} this host"),
                "clock skew breaks Kerberos (5 minutes tolerated), token lifetimes and cookie expiry",
            )
            .gw("synchronise this host and the Qlik nodes with the domain's time source (NTP)"),
        );
    } else {
        r.push(Check::ok(format!(
            "clock: within {secs} s of {from} (Date header)"
        )));
    }
}

fn keytab(n: &crate::config::NegotiateConfig, r: &mut Report) {
    use crate::auth::negotiate::keytab as kt;
    match kt::read(&n.keytab) {
        Ok(keys) if !keys.is_empty() => {
            let want = n
                .service_principal
                .clone()
                .unwrap_or_else(|| format!("HTTP/{}", n.public_host));
            let has = keys.iter().any(|k| {
                let base = k
                    .principal
                    .rsplit_once('@')
                    .map_or(k.principal.as_str(), |(p, _)| p);
                k.principal.eq_ignore_ascii_case(&want) || base.eq_ignore_ascii_case(&want)
            });
            if has {
                r.push(Check::ok(format!(
                    "keytab {} has {want} (principals: {})",
                    n.keytab.display(),
                    kt::principal_list(&keys)
                )));
            } else {
                r.push(
                    Check::fail(
                        format!("keytab {} has no key for {want}", n.keytab.display()),
                        format!("it has keys for {}", kt::principal_list(&keys)),
                    )
                    .gw(format!("setspn -S {want} <service account>; ktpass for that principal; or set auth.negotiate.service_principal")),
                );
            }
        }
        Ok(_) => r.push(Check::fail(
            format!("keytab {}", n.keytab.display()),
            "the keytab holds no keys",
        )),
        Err(e) => r.push(
            Check::fail(format!("keytab {}", n.keytab.display()), e.to_string())
                .gw("check auth.negotiate.keytab and its file permissions"),
        ),
    }
}

async fn oidc(o: &crate::config::OidcConfig, r: &mut Report) {
    let url = format!(
        "{}/.well-known/openid-configuration",
        o.issuer.as_str().trim_end_matches('/')
    );
    let roots = match &o.ca_cert {
        Some(ca) => crate::net::tls::root_store(ca, true),
        None => Ok(crate::net::tls::system_roots()),
    };
    let client = roots
        .map_err(|e| e.to_string())
        .and_then(|roots| {
            crate::net::tls::client_config(roots, None, &[b"http/1.1"]).map_err(|e| e.to_string())
        })
        .and_then(|tls| {
            reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .timeout(o.timeout)
                .build()
                .map_err(|e| e.to_string())
        });
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            r.push(Check::fail("OIDC client", e).gw("check auth.oidc.ca_cert"));
            return;
        }
    };
    let result = async {
        let resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| crate::net::error_chain::root_cause(&e))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let v: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
        let issuer = v["issuer"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        if issuer != o.issuer.as_str().trim_end_matches('/') {
            return Err(format!("the document names issuer {issuer:?}"));
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => r.push(Check::ok(format!("OIDC discovery {url}"))),
        Err(e) => {
            r.push(Check::fail(format!("OIDC discovery {url}"), e).gw(
                "check auth.oidc.issuer (exactly as the IdP names itself) and auth.oidc.ca_cert",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_probe_user() {
        let o = Options::parse_user("DEV\\bob").unwrap();
        assert_eq!(
            (o.user_directory.as_str(), o.user_id.as_str()),
            ("DEV", "bob")
        );
        let o = Options::parse_user("DEV/bob").unwrap();
        assert_eq!(o.user_id, "bob");
        assert!(Options::parse_user("bob").is_err());
        assert!(Options::parse_user("\\bob").is_err());
    }

    #[test]
    fn prints_cause_and_fixes_indented() {
        let c = Check::fail("QPS API x", "because")
            .qmc("Virtual proxies → y")
            .gw("set qlik.z");
        assert_eq!(
            c.to_string(),
            "FAIL  QPS API x\n      cause: because\n      fix (QMC): Virtual proxies → y\n      fix (gateway): set qlik.z"
        );
        assert_eq!(Check::ok("fine").to_string(), "ok    fine");
        assert!(Check::warn("soon", "x")
            .to_string()
            .starts_with("warn  soon\n      cause: x"));
    }
}
