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
}

/// Everything that configures a [`crate::Sim`].
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Address all three listeners bind to.
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
    /// Append `-HTTP` to the cookie name when the proxy runs over plain http.
    pub http_cookie_suffix: bool,
    /// Proxy session inactivity timeout.
    pub inactivity_timeout: Duration,
    /// Extra Origin hosts allowed to open engine websockets (the proxy's own host always is).
    pub host_allow_list: Vec<String>,
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
            http_cookie_suffix: false,
            inactivity_timeout: Duration::from_secs(30 * 60),
            host_allow_list: Vec::new(),
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
