//! The Qlik client: the QPS API, Qlik's nodes and their health, the calls on the proxy's own
//! endpoints, Qlik's cookie rules, xrfkeys and the typed `[qlik]` settings. Nothing here knows about gateway sessions or identity providers;
//! each user's Qlik session is kept by `qlik_sessions`.

pub(crate) mod config;
pub(crate) mod cookies;
pub(crate) mod metrics;
pub(crate) mod nodes;
pub(crate) mod proxy_api;
pub(crate) mod qps;
pub(crate) mod xrfkey;

use std::time::Duration;

use crate::net::retry::{RetryClass, Retryable};

pub(crate) use qps::QpsClient;

/// A failure talking to Qlik's QPS API, each with the operator's fix in its message.
#[derive(Debug, thiserror::Error)]
pub enum QlikError {
    #[error("TLS with the QPS API at {url} failed ({detail}); check that qlik.client_cert/client_key are the certificates exported from this Qlik site and qlik.ca_cert is its root.pem")]
    Tls { url: String, detail: String },
    #[error("the QPS API rejected the xrfkey (403 XSRF prevention check failed); something between the gateway and QPS drops the xrfkey query parameter or the X-Qlik-Xrfkey header")]
    XrfkeyRejected,
    #[error("the QPS API at {url} is unreachable ({detail}); check qlik.qps_api_url and that port 4243 is open from the gateway")]
    Unreachable { url: String, detail: String },
    #[error("the QPS API at {url} did not answer within {after:?}; check the Qlik proxy service, or raise qlik.qps_timeout")]
    Timeout { url: String, after: Duration },
    #[error("{call} answered HTTP {status}: {body}")]
    Status {
        call: &'static str,
        status: u16,
        body: String,
    },
    #[error("{call} gave an unusable reply: {detail}")]
    BadReply { call: &'static str, detail: String },
    #[error("redeeming a QPS ticket at the Qlik proxy failed twice: {detail}; check that qlik.virtual_proxy is a ticket virtual proxy, qlik.session_cookie its session cookie header name, and qlik.proxy_url reachable from the gateway")]
    Redemption { detail: String },
}

impl QlikError {
    /// A short reason code for the JSON body and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Tls { .. } => "qps_tls",
            Self::XrfkeyRejected => "qps_xrfkey",
            Self::Unreachable { .. } => "qps_unreachable",
            Self::Timeout { .. } => "qps_timeout",
            Self::Status { .. } => "qps_status",
            Self::BadReply { .. } => "qps_bad_reply",
            Self::Redemption { .. } => "qlik_ticket_redemption",
        }
    }
}

impl Retryable for QlikError {
    fn retry_class(&self) -> RetryClass {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } => RetryClass::OtherNode,
            _ => RetryClass::Never,
        }
    }
}
