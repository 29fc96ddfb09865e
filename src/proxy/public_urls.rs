//! Qlik's own URLs, as the browser must see them: on the gateway's public origin.
//!
//! Qlik builds absolute URLs from its own host (`https://qlik-node:443/mashup/qps/user`). Those
//! that reach the browser would send it past the gateway to a host it cannot reach (or should
//! not): `Location`, `Content-Location` and `Refresh` headers, `logoutUri` / `loginUri` in
//! `OnAuthenticationInformation` and the JSON of `{mount}/qps/user`. Each is rewritten here to the
//! public origin and the mount. Other bodies are not rewritten (HTML and scripts that Qlik
//! serves use relative URLs).

use http::header::{self, HeaderMap, HeaderValue};
use serde_json::Value;

use crate::state::AppState;

/// `url` on the public origin when it is on a Qlik node's origin (any spelling of its default
/// port, any case of its host), under the virtual proxy mapped to the mount; `None` otherwise.
pub(crate) fn rewrite(state: &AppState, url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let origin = parsed.origin();
    let on_qlik = state
        .qlik
        .nodes()
        .all()
        .iter()
        .any(|n| n.proxy_url.origin() == origin);
    if !on_qlik {
        return None;
    }
    let mut rest = parsed.path().to_string();
    if let Some(q) = parsed.query() {
        rest.push('?');
        rest.push_str(q);
    }
    if let Some(f) = parsed.fragment() {
        rest.push('#');
        rest.push_str(f);
    }
    let prefix = state.upstream_prefix.as_str();
    let mount = state.cfg.qlik.mount.as_str();
    let mapped = match rest.strip_prefix(prefix) {
        Some(after) if after.is_empty() || after.starts_with(['/', '?', '#']) => {
            format!("{mount}{after}")
        }
        _ => rest,
    };
    Some(format!("{}{mapped}", state.cfg.server.public_origin))
}

/// `Content-Location` and `Refresh` (`5; url=…`) pointing at Qlik, pointed at the gateway.
/// (`Location` has its own rule: path-absolute ones are mapped too.)
pub(crate) fn rewrite_headers(state: &AppState, h: &mut HeaderMap) {
    if let Some(new) = h
        .get(header::CONTENT_LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| rewrite(state, v.trim()))
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        h.insert(header::CONTENT_LOCATION, new);
    }
    if let Some(new) = h
        .get(header::REFRESH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| rewrite_refresh(state, v))
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        h.insert(header::REFRESH, new);
    }
}

/// `Refresh: <seconds>; url=<url>` (the URL optionally quoted) with the URL rewritten.
fn rewrite_refresh(state: &AppState, v: &str) -> Option<String> {
    let (delay, rest) = v.split_once([';', ','])?;
    let rest = rest.trim_start();
    let (key, url) = rest.split_once('=')?;
    if !key.trim().eq_ignore_ascii_case("url") {
        return None;
    }
    let url = url.trim();
    let (quote, bare) = match url.chars().next() {
        Some(q @ ('\'' | '"')) => (Some(q), url.trim_matches(q)),
        _ => (None, url),
    };
    let new = rewrite(state, bare)?;
    Some(match quote {
        Some(q) => format!("{delay}; url={q}{new}{q}"),
        None => format!("{delay}; url={new}"),
    })
}

/// Every string in `v` that is a URL on Qlik's origin, rewritten; whether anything changed.
pub(crate) fn rewrite_json(state: &AppState, v: &mut Value) -> bool {
    match v {
        Value::String(s) => match rewrite(state, s) {
            Some(new) => {
                *s = new;
                true
            }
            None => false,
        },
        Value::Array(a) => a
            .iter_mut()
            .fold(false, |any, x| rewrite_json(state, x) | any),
        Value::Object(o) => o
            .values_mut()
            .fold(false, |any, x| rewrite_json(state, x) | any),
        _ => false,
    }
}

/// An engine notification with its URLs on the public origin, when it has any on Qlik's;
/// `None` when it is passed on as it is (every other frame: not parsed twice).
pub(crate) fn rewrite_notification(state: &AppState, text: &str) -> Option<String> {
    if !text.contains("Uri\"") {
        return None;
    }
    let mut v: Value = serde_json::from_str(text).ok()?;
    let params = v.get_mut("params")?;
    let mut changed = false;
    for key in ["logoutUri", "loginUri"] {
        if let Some(u) = params.get_mut(key) {
            changed |= rewrite_json(state, u);
        }
    }
    changed.then(|| v.to_string())
}
