//! `[qlik]` as written: serde structs that mirror the TOML keys one to one.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A key that takes one value or a list (`proxy_url` of several Qlik proxy nodes).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// A list of values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list, one element for a single value.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// `[qlik]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQlik {
    /// qlik.proxy_url: the Qlik proxy node(s) serving the virtual proxy.
    pub proxy_url: OneOrMany,
    /// qlik.qps_api_url: the QPS API of each proxy node, in proxy_url's order.
    pub qps_api_url: OneOrMany,
    /// qlik.health_interval: how often each node's QPS API is checked (several nodes only).
    #[serde(default, with = "humantime_serde")]
    pub health_interval: Option<Duration>,
    /// qlik.virtual_proxy: the virtual proxy prefix ("" for the default virtual proxy).
    #[serde(default)]
    pub virtual_proxy: String,
    /// qlik.mode: how users get a Qlik session ("session", "ticket" or "header").
    #[serde(default = "defaults::mode")]
    pub mode: String,
    /// qlik.session_cookie: the virtual proxy's session cookie header name (default `X-Qlik-Session-<prefix>`).
    pub session_cookie: Option<String>,
    /// qlik.client_cert: the client certificate exported from the QMC (PEM).
    pub client_cert: Option<PathBuf>,
    /// qlik.client_key: the key of that certificate (PEM).
    pub client_key: Option<PathBuf>,
    /// qlik.ca_cert: the Qlik root CA exported from the QMC (PEM).
    pub ca_cert: Option<PathBuf>,
    /// qlik.header_name: header mode: the virtual proxy's authentication header name.
    pub header_name: Option<String>,
    /// qlik.engine_url: the engine directly (`wss://engine:4747`), bypassing the proxy for websockets.
    pub engine_url: Option<String>,
    /// Header mode: the value's form; `$ud` and `$id` stand for directory and user id.
    pub header_pattern: Option<String>,
    /// qlik.mount: where Qlik appears on the gateway's origin (default "/" + virtual_proxy).
    pub mount: Option<String>,
    /// qlik.connect_timeout: the TCP connect timeout towards Qlik.
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// qlik.qps_timeout: the timeout for each QPS API call.
    #[serde(default = "defaults::qps_timeout", with = "humantime_serde")]
    pub qps_timeout: Duration,
    /// qlik.response_timeout: the time Qlik may take to start answering a proxied request.
    #[serde(default = "defaults::response_timeout", with = "humantime_serde")]
    pub response_timeout: Duration,
}

mod defaults {
    use std::time::Duration;

    pub(super) fn mode() -> String {
        "session".into()
    }
    pub(super) fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn qps_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn response_timeout() -> Duration {
        Duration::from_secs(120)
    }
}
