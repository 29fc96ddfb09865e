//! Start-up options of the simulator: one knob per behaviour that `qlik-reference.md` marks as
//! UNCONFIRMED, so tests can exercise every plausible variant.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Casing of the JSON keys in QPS API replies (the wire casing is UNCONFIRMED, §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Casing {
    /// `UserDirectory`, `UserId`, `SessionId`, `Ticket`, … (what the documented clients read).
    #[default]
    Pascal,
    /// `userDirectory`, `userId`, `sessionId`, `ticket`, … (the OpenAPI examples).
    Camel,
}

/// When the proxy sends `OnAuthenticationInformation` on an engine websocket (§4, UNCONFIRMED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthInfoTiming {
    /// Right after the upgrade (community reports).
    #[default]
    Immediate,
    /// Only after the client's first frame (Qlik documentation).
    AfterFirstFrame,
    /// Never: the engine answers calls but sends no greeting, so a proxy that waits for one
    /// keeps waiting (the benchmark's settle-phase memory rows).
    Never,
}

/// A header-authentication virtual proxy (§3 "Header auth"): the user comes in a request
/// header on every request instead of a ticket or a QPS session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderAuth {
    /// The header name, e.g. `hdr-usr` (case-insensitive on the wire). It must not contain
    /// `X-Qlik-Security`, `X-Qlik-User`, `X-Qlik-ProxySession`, `X-Qlik-ProxyId`,
    /// `X-Qlik-Trace`, `X-Qlik-App` or `X-Qlik-Capabilities`.
    pub header: String,
    /// `None`: the static form, value `UserDirectory=<dir>; UserId=<id>` (parts may be
    /// URL-encoded). `Some(pattern)`: the dynamic form, a pattern with `$ud` and `$id` such as
    /// `$ud\\$id` (Qlik's notation: `\\` is one literal backslash, so the value is `DIR\user`),
    /// `$id@$ud` or `$ud::$id`.
    pub dynamic_pattern: Option<String>,
}

impl HeaderAuth {
    /// The static form on header `header`.
    pub fn static_form(header: &str) -> Self {
        HeaderAuth {
            header: header.to_string(),
            dynamic_pattern: None,
        }
    }

    /// The dynamic form on header `header` with `pattern` (e.g. `$ud\\$id`).
    pub fn dynamic(header: &str, pattern: &str) -> Self {
        HeaderAuth {
            header: header.to_string(),
            dynamic_pattern: Some(pattern.to_string()),
        }
    }
}

/// Which copy of a query parameter sent twice Qlik reads (UNCONFIRMED for `qlik-csrf-token`,
/// `qlik-clients.md`): tests run both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicateParam {
    /// The first copy (.NET's `QueryString[name]` joins copies; a parser that stops at the first).
    #[default]
    First,
    /// The last copy (a parser that lets later copies overwrite earlier ones).
    Last,
}

/// Qlik losing sessions at random (a soak's chaos): every `every`, each live proxy session
/// ends with probability `fraction`, as an inactivity timeout ends it (its websockets get
/// `OnSessionTimedOut`, then close; later requests with its cookie are unauthenticated).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomExpiry {
    /// Time between two draws.
    pub every: Duration,
    /// Probability, 0.0 to 1.0, that a session ends at one draw.
    pub fraction: f64,
}

/// Everything that configures a [`crate::Sim`].
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Address every listener binds to.
    pub bind: IpAddr,
    /// Port of the proxy listener (0 = ephemeral).
    pub proxy_port: u16,
    /// Port of the QPS API listener (0 = ephemeral).
    pub qps_port: u16,
    /// Port of the control listener (0 = ephemeral).
    pub control_port: u16,
    /// Virtual proxy prefix; "" is the default virtual proxy (no prefix in paths).
    pub virtual_proxy: String,
    /// The virtual proxy's session cookie header name.
    pub session_cookie: String,
    /// Serve the proxy listener over https (server certificate from the sim's CA).
    pub proxy_tls: bool,
    /// Casing of QPS API JSON replies.
    pub reply_casing: Casing,
    /// When `OnAuthenticationInformation` is sent on engine websockets.
    pub auth_info_timing: AuthInfoTiming,
    /// Close the websocket after sending `mustAuthenticate: true`.
    pub close_after_must_authenticate: bool,
    /// Require the `qlik-csrf-token` query parameter on engine websocket upgrades.
    pub require_csrf_token: bool,
    /// Which copy of a duplicated `qlik-csrf-token` parameter is checked.
    pub duplicate_param: DuplicateParam,
    /// Append `-HTTP` to the cookie name when the proxy runs over plain http.
    pub http_cookie_suffix: bool,
    /// Proxy session inactivity timeout.
    pub inactivity_timeout: Duration,
    /// Extra Origin hosts allowed to open engine websockets (the proxy's own host always is).
    pub host_allow_list: Vec<String>,
    /// The host names the node knows as its own (Qlik: the node's server name), allowed as
    /// `Origin` without being in [`SimOptions::host_allow_list`]. Empty: whatever host the
    /// request's `Host` header names, `localhost` and the loopback addresses.
    pub own_host_names: Vec<String>,
    /// Make the virtual proxy a header-authentication one (`None`: ticket/session only).
    pub header_auth: Option<HeaderAuth>,
    /// Port of the direct engine listener (port 4747 on a real node: mutual TLS and
    /// `X-Qlik-User`); `None` = no such listener, `Some(0)` = ephemeral.
    pub engine_port: Option<u16>,
    /// End random proxy sessions periodically (`None`: only inactivity and the control API do).
    pub random_expiry: Option<RandomExpiry>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            proxy_port: 0,
            qps_port: 0,
            control_port: 0,
            virtual_proxy: "mashup".to_string(),
            session_cookie: "X-Qlik-Session-mashup".to_string(),
            proxy_tls: true,
            reply_casing: Casing::Pascal,
            auth_info_timing: AuthInfoTiming::Immediate,
            close_after_must_authenticate: true,
            require_csrf_token: true,
            duplicate_param: DuplicateParam::First,
            http_cookie_suffix: false,
            inactivity_timeout: Duration::from_secs(30 * 60),
            host_allow_list: Vec::new(),
            own_host_names: Vec::new(),
            header_auth: None,
            engine_port: None,
            random_expiry: None,
        }
    }
}

impl SimOptions {
    /// The cookie name actually used on the wire (with `-HTTP` over plain http when enabled).
    pub fn effective_cookie_name(&self) -> String {
        if self.http_cookie_suffix && !self.proxy_tls {
            format!("{}-HTTP", self.session_cookie)
        } else {
            self.session_cookie.clone()
        }
    }

    /// `"/{vp}"`, or `""` for the default virtual proxy.
    pub fn prefix_path(&self) -> String {
        if self.virtual_proxy.is_empty() {
            String::new()
        } else {
            format!("/{}", self.virtual_proxy)
        }
    }
}
