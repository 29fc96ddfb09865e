//! The one place where failures become responses: a status, a JSON body for programs or a short
//! HTML page for people, and exactly one log line naming the cause.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde_json::json;

use crate::auth::AuthError;
use crate::net::retry::{RetryClass, Retryable};
use crate::qlik::QlikError;
use crate::qlik_sessions::{CsrfError, LifecycleError};
use crate::session::StoreError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    /// No gateway session: the client must log in at `login_url`.
    #[error("not logged in")]
    Unauthenticated { login_url: String },
    /// The request is refused by policy (origin check, method).
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Qlik(#[from] QlikError),
    #[error(transparent)]
    Csrf(#[from] CsrfError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Qlik proxy or the mashup dev server could not be reached or failed mid-request.
    #[error("upstream {upstream}: {detail}")]
    Upstream {
        upstream: &'static str,
        detail: String,
    },
    /// The upstream did not answer in time.
    #[error("upstream {upstream} did not answer within {after:?}")]
    UpstreamTimeout {
        upstream: &'static str,
        after: std::time::Duration,
    },
    /// The request's path would mean another path to the upstream than it does here.
    #[error("refused path: {0}")]
    PathRefused(#[from] crate::request_target::PathRefusal),
    /// Qlik refused the websocket upgrade.
    #[error("the Qlik proxy refused the websocket upgrade with HTTP {status}")]
    UpgradeRefused { status: u16 },
    /// The session already has `limit` open websockets (`security.max_websockets_per_session`).
    #[error("websocket refused: the session of {user} already has {limit} open websockets (security.max_websockets_per_session)")]
    TooManyWebsockets { user: String, limit: usize },
    /// The user already has `limit` live gateway sessions (`session.max_sessions_per_user`).
    #[error("login refused: {user} already has {limit} live sessions (session.max_sessions_per_user); they end at logout or their idle timeout")]
    TooManySessions { user: String, limit: usize },
    /// A size limit (`server.max_*`) refused the request or the upstream's answer.
    #[error(transparent)]
    Limit(#[from] crate::limits::LimitError),
}

impl From<LifecycleError> for GatewayError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::Qlik(q) => Self::Qlik(q),
            LifecycleError::Store(s) => Self::Store(s),
            LifecycleError::SessionGone => Self::Unauthenticated {
                login_url: "/_gateway/login".into(),
            },
        }
    }
}

impl Retryable for GatewayError {
    fn retry_class(&self) -> RetryClass {
        match self {
            Self::Upstream { .. } | Self::UpstreamTimeout { .. } => RetryClass::OtherNode,
            _ => RetryClass::Never,
        }
    }
}

impl GatewayError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PathRefused(_) => StatusCode::BAD_REQUEST,
            Self::Auth(AuthError::UntrustedPeer { .. }) => StatusCode::BAD_REQUEST,
            Self::Auth(AuthError::BadHeaderValue { .. }) => StatusCode::BAD_REQUEST,
            Self::Auth(AuthError::MissingHeader { .. }) => StatusCode::UNAUTHORIZED,
            Self::Auth(AuthError::Negotiate(n)) => n.status(),
            Self::Auth(AuthError::Oidc(o)) => o.status(),
            Self::Auth(AuthError::NoCallback) => StatusCode::NOT_FOUND,
            Self::Auth(AuthError::UnacceptableIdentity { .. }) => StatusCode::FORBIDDEN,
            Self::Auth(AuthError::UnknownDomain { .. }) => StatusCode::FORBIDDEN,
            // Qlik did not answer: retrying later may help (503); it answered no: the setup (502).
            Self::Qlik(q) if q.is_node_failure() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Qlik(_) => StatusCode::BAD_GATEWAY,
            Self::Csrf(_) => StatusCode::BAD_GATEWAY,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::UpgradeRefused { .. } => StatusCode::BAD_GATEWAY,
            Self::TooManyWebsockets { .. } | Self::TooManySessions { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Limit(l) => l.status(),
        }
    }

    /// A short, fixed reason code (the JSON body's `error`, and a metric label).
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated { .. } => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::BadRequest(_) => "bad_request",
            Self::PathRefused(_) => "path_refused",
            Self::Auth(AuthError::UntrustedPeer { .. }) => "untrusted_identity_header",
            Self::Auth(AuthError::BadHeaderValue { .. }) => "bad_identity_header",
            Self::Auth(AuthError::MissingHeader { .. }) => "missing_identity_header",
            Self::Auth(AuthError::Negotiate(n)) => n.code(),
            Self::Auth(AuthError::Oidc(o)) => o.code(),
            Self::Auth(AuthError::NoCallback) => "not_found",
            Self::Auth(AuthError::UnacceptableIdentity { .. }) => "unacceptable_identity",
            Self::Auth(AuthError::UnknownDomain { .. }) => "unknown_domain",
            Self::Qlik(q) => q.code(),
            Self::Csrf(_) => "qlik_csrf_token",
            Self::Store(_) => "session_store",
            Self::Upstream { .. } => "upstream_unreachable",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::UpgradeRefused { .. } => "websocket_refused",
            Self::TooManyWebsockets { .. } => "too_many_websockets",
            Self::TooManySessions { .. } => "too_many_sessions",
            Self::Limit(l) => l.code(),
        }
    }

    /// What the user is told. Operator detail (paths, hosts) stays in the log.
    fn public_message(&self) -> String {
        match self {
            Self::Unauthenticated { .. } => "You are not logged in.".into(),
            Self::Forbidden(m) | Self::BadRequest(m) => m.clone(),
            Self::PathRefused(r) => format!("This address is not accepted: {r}."),
            Self::Auth(AuthError::UntrustedPeer { header, .. }) => {
                format!("The {header} header is not accepted from your address.")
            }
            Self::Auth(AuthError::Negotiate(n)) => n.public_message().into(),
            Self::Auth(AuthError::Oidc(o)) => o.public_message().into(),
            Self::Auth(AuthError::NoCallback) => "No such page.".into(),
            Self::Auth(AuthError::UnacceptableIdentity { field, rule }) => {
                format!("Your {field} cannot be used with Qlik Sense: it {rule}. Ask your administrator.")
            }
            Self::Auth(AuthError::UnknownDomain { domain, .. }) => {
                format!("Users of the domain {domain} are not allowed to use this site.")
            }
            Self::Auth(AuthError::MissingHeader { .. }) => {
                "The front proxy did not say who you are.".into()
            }
            Self::Auth(AuthError::BadHeaderValue { .. }) => {
                "The front proxy sent an unusable user name.".into()
            }
            Self::Qlik(q) if q.is_node_failure() => {
                "Qlik Sense is not answering right now. Please try again in a moment.".into()
            }
            Self::Qlik(_) | Self::Csrf(_) => {
                "The gateway could not open your Qlik Sense session. Your administrator can find the cause in the gateway log.".into()
            }
            Self::Store(_) => "The session store is not available. Please try again in a moment.".into(),
            Self::Upstream { .. } | Self::UpgradeRefused { .. } => {
                "The gateway could not reach the service behind it.".into()
            }
            Self::UpstreamTimeout { .. } => "The service behind the gateway did not answer in time.".into(),
            Self::TooManyWebsockets { limit, .. } => format!(
                "This login already has {limit} open connections to Qlik Sense, the most allowed. Close some tabs or apps and try again."
            ),
            Self::TooManySessions { limit, .. } => format!(
                "You are already signed in {limit} times, the most allowed. Sign out in another browser, or wait for an unused sign-in to expire, and try again."
            ),
            Self::Limit(l) => l.public_message(),
        }
    }

    fn log(&self) {
        let status = self.status();
        // Refused logins and refused requests are audit events (who tried what, and why not).
        let audit = matches!(self, Self::Auth(_) | Self::Forbidden(_));
        match self {
            Self::Unauthenticated { .. } => {}
            _ if status.is_server_error() => tracing::error!(code = self.code(), audit, "{self}"),
            _ => tracing::warn!(code = self.code(), audit, "{self}"),
        }
    }

    /// The response, HTML for a browser navigation, JSON otherwise. Logs the cause once.
    pub(crate) fn respond(self, wants_html: bool) -> Response {
        self.log();
        let status = self.status();
        let message = self.public_message();
        let mut resp = if let Self::Unauthenticated { login_url } = &self {
            json_body(
                status,
                json!({"error": self.code(), "message": message, "login_url": login_url}),
            )
        } else if wants_html {
            let page = format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\
                 <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\"><h1>{reason}</h1><p>{msg}</p>\
                 <p><a href=\"/\">Start again</a></p></body></html>",
                code = status.as_u16(),
                reason = status.canonical_reason().unwrap_or("Error"),
                msg = crate::html::escape(&message),
            );
            crate::html::page(status, page)
        } else {
            json_body(status, json!({"error": self.code(), "message": message}))
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        self.respond(false)
    }
}

/// A JSON response.
pub(crate) fn json_body(status: StatusCode, v: serde_json::Value) -> Response {
    let mut r = (status, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
