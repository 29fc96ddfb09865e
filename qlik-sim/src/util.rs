//! Small helpers shared by the listeners: query and cookie parsing, random tokens, timestamps.

use http::HeaderMap;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::distr::{Alphanumeric, SampleString};
use std::collections::BTreeMap;

/// Characters left unescaped in a query component: RFC 3986 unreserved.
const QUERY_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `s` for use as a query parameter value.
pub(crate) fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, QUERY_COMPONENT).to_string()
}

/// Percent-decodes a path segment (lossy on invalid UTF-8).
pub(crate) fn decode_component(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Parses `a=1&b=2` into decoded pairs, in order (`+` means space).
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                decode_component(&k.replace('+', " ")),
                decode_component(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// The first value of the query parameter `name`, matched case-insensitively.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query_pairs(query)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Every cookie sent in the `Cookie` headers, in order.
pub(crate) fn cookies(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect()
}

/// Headers as lowercase name → values (header names are already lowercase in `http`).
pub(crate) fn header_map(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        out.entry(name.as_str().to_ascii_lowercase())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    out
}

/// A random string of `len` characters from `[0-9a-zA-Z]`.
pub(crate) fn random_alnum(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// The current UTC time as RFC 3339 (as in the proxy's fatal messages).
pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// True when `s` is exactly 16 characters of `[0-9a-zA-Z]` (an xrfkey or a ticket).
pub(crate) fn is_key16(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_queries() {
        let q = query_pairs(Some("a=1&XrfKey=abc&c=%2Fx+y&d"));
        assert_eq!(q[2], ("c".to_string(), "/x y".to_string()));
        assert_eq!(q[3], ("d".to_string(), String::new()));
        assert_eq!(
            query_param(Some("a=1&XrfKey=abc"), "xrfkey").as_deref(),
            Some("abc")
        );
        assert!(is_key16(&random_alnum(16)));
        assert!(!is_key16("abc"));
        assert_eq!(encode_component("a b/c"), "a%20b%2Fc");
    }
}
