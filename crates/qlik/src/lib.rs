//! The Qlik client: the QPS API, Qlik's nodes and their health, the calls on the proxy's own
//! endpoints, Qlik's cookie rules, xrfkeys and the typed `[qlik]` settings.
//!
//! A crate of its own (`qlik_gateway::qlik` inside the gateway): it imports only the network layer
//! (`qlik-gateway-net`) and the shared types (`qlik-gateway-core`), so the compiler keeps it from
//! knowing about gateway sessions or identity providers; each user's Qlik session is kept by the
//! gateway's `qlik_sessions`. Its log lines keep the targets they had as a module
//! (`qlik_gateway::qlik::…`), which operators' `RUST_LOG` filters name.

pub mod config;
pub mod cookies;
pub mod metrics;
pub mod nodes;
pub mod proxy_api;
pub mod qps;
pub mod xrfkey;

use std::time::Duration;

use qlik_gateway_net::retry::{RetryClass, Retryable};

pub use qps::QpsClient;

/// A failure talking to Qlik's QPS API, each with the operator's fix in its message.
#[derive(Debug, thiserror::Error)]
pub enum QlikError {
    /// The TLS handshake with the QPS API failed (wrong client certificate or CA).
    #[error("TLS with the QPS API at {url} failed ({detail}); check that qlik.client_cert/client_key are the certificates exported from this Qlik site and qlik.ca_cert is its root.pem")]
    Tls {
        /// The QPS URL called.
        url: String,
        /// The TLS error, from its root cause.
        detail: String,
    },
    /// QPS answered 403 to the xrfkey check.
    #[error("the QPS API rejected the xrfkey (403 XSRF prevention check failed); something between the gateway and QPS drops the xrfkey query parameter or the X-Qlik-Xrfkey header")]
    XrfkeyRejected,
    /// No connection to the QPS API.
    #[error("the QPS API at {url} is unreachable ({detail}); check qlik.qps_api_url and that port 4243 is open from the gateway")]
    Unreachable {
        /// The QPS URL called.
        url: String,
        /// The connection error, from its root cause.
        detail: String,
    },
    /// The QPS API did not answer within `qlik.qps_timeout`.
    #[error("the QPS API at {url} did not answer within {after:?}; check the Qlik proxy service, or raise qlik.qps_timeout")]
    Timeout {
        /// The QPS URL called.
        url: String,
        /// The timeout that passed.
        after: Duration,
    },
    /// QPS answered with an error status.
    #[error("{call} answered HTTP {status}: {body}")]
    Status {
        /// Which call (`"ticket request"`, `"session creation"`, …).
        call: &'static str,
        /// The HTTP status.
        status: u16,
        /// The start of the body QPS sent.
        body: String,
    },
    /// QPS answered 2xx with a body that is not what its API documents.
    #[error("{call} gave an unusable reply: {detail}")]
    BadReply {
        /// Which call.
        call: &'static str,
        /// What was wrong with the reply.
        detail: String,
    },
    /// A ticket could not be redeemed at the Qlik proxy for a session cookie.
    #[error("redeeming a QPS ticket at the Qlik proxy failed twice: {detail}; check that qlik.virtual_proxy is a ticket virtual proxy, qlik.session_cookie its session cookie header name, and qlik.proxy_url reachable from the gateway")]
    Redemption {
        /// What the proxy answered, or why it could not.
        detail: String,
    },
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
