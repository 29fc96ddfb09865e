//! `[qlik]`: how the gateway reaches Qlik and how it gives Qlik the user. [`raw`] mirrors the
//! file, `check` ([`validate`]) turns it into [`QlikConfig`].

mod check;
pub mod raw;

use std::path::PathBuf;
use std::time::Duration;

pub use check::validate;

/// How the gateway reaches Qlik.
#[derive(Debug, Clone)]
pub struct QlikConfig {
    /// The first node's proxy (the only one on a single-node site).
    pub proxy_url: reqwest::Url,
    /// The first node's QPS API.
    pub qps_api_url: reqwest::Url,
    /// Every proxy node with its QPS API, in configuration order.
    pub nodes: Vec<QlikNodeConfig>,
    /// How often each node's QPS API is checked; failing nodes get no new sessions.
    pub health_interval: Duration,
    /// The virtual proxy prefix, without slashes; empty for the default virtual proxy.
    pub virtual_proxy: String,
    /// How users get their Qlik session.
    pub mode: QlikMode,
    /// The name of Qlik's session cookie for the virtual proxy (configured or Qlik's default).
    pub session_cookie: String,
    /// The client certificate (PEM) for the QPS API and the direct engine.
    pub client_cert: PathBuf,
    /// The key of that certificate (PEM).
    pub client_key: PathBuf,
    /// The Qlik root CA (PEM) trusted for Qlik's TLS certificates.
    pub ca_cert: PathBuf,
    /// `qlik.header_name` as configured; in header mode also in [`QlikMode::Header`].
    pub header_name: Option<http::HeaderName>,
    /// Engine websockets go here directly (`wss://engine:4747`) instead of through the proxy.
    pub engine_url: Option<reqwest::Url>,
    /// Path prefix on the gateway's origin under which Qlik appears (`/mashup`), never ending in `/`.
    pub mount: String,
    /// The TCP connect timeout towards Qlik.
    pub connect_timeout: Duration,
    /// The timeout for each QPS API call.
    pub qps_timeout: Duration,
    /// The time Qlik may take to start answering a proxied request.
    pub response_timeout: Duration,
}

impl QlikConfig {
    /// The virtual proxy's path prefix on the Qlik proxy (`/mashup`, or `` for the default proxy).
    pub fn upstream_prefix(&self) -> String {
        if self.virtual_proxy.is_empty() {
            String::new()
        } else {
            format!("/{}", self.virtual_proxy)
        }
    }
}

/// One Qlik proxy node: its proxy (where browsers' requests go) and its QPS API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QlikNodeConfig {
    /// Where browsers' requests to this node go.
    pub proxy_url: reqwest::Url,
    /// This node's QPS API.
    pub qps_api_url: reqwest::Url,
}

/// `qlik.mode`: how the gateway gives Qlik the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QlikMode {
    /// `POST /qps/{vp}/session` with a session id the gateway makes.
    Session,
    /// `POST /qps/{vp}/ticket`, redeemed by the gateway itself.
    Ticket,
    /// A header-authentication virtual proxy: the user in a header on every request.
    Header(HeaderAuth),
}

/// The header of a header-authentication virtual proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderAuth {
    /// The header the virtual proxy reads the user from.
    pub name: http::HeaderName,
    /// `None`: the static form `UserDirectory=<dir>; UserId=<id>`; else a dynamic pattern with
    /// `$ud` and `$id` (e.g. `$ud\\$id`), as configured on the virtual proxy.
    pub pattern: Option<String>,
}

impl HeaderAuth {
    /// The header value for a user; `None` when it cannot be sent (empty, control characters).
    ///
    /// Both values are percent-encoded, as the direct-engine path does: Qlik URL-decodes the
    /// header, so a raw `adm%69n` would be served as `admin` and a `;` or `=` would add fields.
    /// The pattern is substituted in one pass, so a directory containing `$id` stays literal.
    pub fn value(&self, user_directory: &str, user_id: &str) -> Option<http::HeaderValue> {
        let ok = |s: &str| !s.is_empty() && !s.chars().any(char::is_control);
        if !ok(user_directory) || !ok(user_id) {
            return None;
        }
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let (ud, id) = (enc(user_directory), enc(user_id));
        let v = match &self.pattern {
            None => format!("UserDirectory={ud}; UserId={id}"),
            // Qlik documents the pattern as `$ud\\$id`, the doubled backslash meaning one.
            Some(p) => substitute(&p.replace("\\\\", "\\"), &ud, &id),
        };
        http::HeaderValue::from_str(&v).ok()
    }
}

/// Replaces `$ud` and `$id` in one left-to-right pass over `pattern`.
fn substitute(pattern: &str, ud: &str, id: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + ud.len() + id.len());
    let mut rest = pattern;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$ud") {
            out.push_str(ud);
            rest = t;
        } else if let Some(t) = tail.strip_prefix("$id") {
            out.push_str(id);
            rest = t;
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::HeaderAuth;

    fn auth(pattern: Option<&str>) -> HeaderAuth {
        HeaderAuth {
            name: http::HeaderName::from_static("hdr-usr"),
            pattern: pattern.map(str::to_string),
        }
    }

    #[test]
    fn values_in_every_form() {
        let v = |p: Option<&str>, d: &str, u: &str| {
            auth(p).value(d, u).map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            v(None, "DEV", "alice").as_deref(),
            Some("UserDirectory=DEV; UserId=alice")
        );
        assert_eq!(
            v(Some("$ud\\\\$id"), "DEV", "alice").as_deref(),
            Some("DEV\\alice"),
            "Qlik's documented form"
        );
        assert_eq!(
            v(Some("$ud\\$id"), "DEV", "alice").as_deref(),
            Some("DEV\\alice")
        );
        assert_eq!(
            v(Some("$id"), "DEV", "alice").as_deref(),
            Some("alice"),
            "static user directory"
        );
        assert_eq!(
            v(None, "DEV", "ålice").as_deref(),
            Some("UserDirectory=DEV; UserId=%C3%A5lice"),
            "non-ASCII is percent-encoded"
        );
        assert_eq!(
            v(None, "DEV", "a;UserId=admin").as_deref(),
            Some("UserDirectory=DEV; UserId=a%3BUserId%3Dadmin"),
            "no smuggling in the static form"
        );
        assert_eq!(
            v(None, "CORP", "adm%69n").as_deref(),
            Some("UserDirectory=CORP; UserId=adm%2569n"),
            "a percent-escape in a name is not decoded into another user by Qlik"
        );
        assert_eq!(
            v(None, "CORP", " admin").as_deref(),
            Some("UserDirectory=CORP; UserId=%20admin")
        );
        assert_eq!(
            v(Some("$ud\\\\$id"), "X$idY", "bob").as_deref(),
            Some("X%24idY\\bob"),
            "one pass over the pattern: a directory containing $id is not substituted again"
        );
        assert_eq!(super::substitute("$ud/$id/$x", "D", "U"), "D/U/$x");
        assert_eq!(v(Some("$id"), "DEV", "a\nb"), None);
    }
}
