//! `[qlik]` as written: serde structs that mirror the TOML keys one to one.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A key that takes one value or a list (`proxy_url` of several Qlik proxy nodes).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
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
    pub proxy_url: OneOrMany,
    pub qps_api_url: OneOrMany,
    #[serde(default, with = "humantime_serde")]
    pub health_interval: Option<Duration>,
    #[serde(default)]
    pub virtual_proxy: String,
    #[serde(default = "defaults::mode")]
    pub mode: String,
    pub session_cookie: Option<String>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub header_name: Option<String>,
    /// The engine directly (`wss://engine:4747`), bypassing the proxy for websockets.
    pub engine_url: Option<String>,
    /// Header mode: the value's form; `$ud` and `$id` stand for directory and user id.
    pub header_pattern: Option<String>,
    pub mount: Option<String>,
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "defaults::qps_timeout", with = "humantime_serde")]
    pub qps_timeout: Duration,
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
