//! What of a request's target may reach an upstream: the path only when it stays under the
//! upstream's prefix after the decoding Qlik's proxy applies, the query without Qlik tickets.
//!
//! Qlik's proxy runs on Windows http.sys, which percent-decodes the path, treats `\` (and `%5c`)
//! as `/`, decodes `%uNNNN`, and resolves dot segments before the proxy routes by virtual proxy
//! prefix. A path that looks like `/mashup/…` here can therefore be `/hub/…` or `/qrs/…` there.
//! Rather than re-encode such paths (and guess which of Qlik's layers decodes what), the gateway
//! refuses every path whose meaning depends on that decoding: an encoded separator, an encoded or
//! double-encoded dot segment, a backslash, a NUL or other control character, invalid or overlong
//! UTF-8, `%u` escapes. Plain paths, including raw dot segments that stay under the prefix, are
//! forwarded byte for byte.

use std::borrow::Cow;

/// Why a path may not be forwarded. Each names the construct, for the log line and the 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathRefusal {
    #[error("the path contains an encoded slash or backslash (%2F, %5C), which Qlik's proxy would read as a separator")]
    EncodedSeparator,
    #[error("the path contains a backslash, which Qlik's proxy reads as a separator")]
    Backslash,
    #[error("the path contains a percent-encoded dot segment (like %2e%2e), which Qlik's proxy would resolve")]
    EncodedDotSegment,
    #[error("the path contains a double-encoded dot segment or separator (like %252e%252e)")]
    DoubleEncoded,
    #[error("the path's dot segments lead outside {0}")]
    Escapes(&'static str),
    #[error("the path contains a NUL or another control character")]
    ControlCharacter,
    #[error("the path decodes to invalid or overlong UTF-8")]
    InvalidUtf8,
    #[error("the path contains a %u escape, which Qlik's proxy would decode")]
    PercentU,
    #[error("the path contains a % that does not start an escape (%XX)")]
    MalformedEscape,
}

/// How many rounds of decoding are looked through for a double-encoded dot segment or separator.
/// Two cover every layer that decodes once more than http.sys; more cost nothing on plain paths.
const DECODE_ROUNDS: usize = 4;

/// Checks `rest`, the part of a path below an upstream prefix (`""` or starting with `/`), where
/// `below` names that prefix for the refusal (`"the virtual proxy"`, `"the dev server's root"`).
///
/// Runs on every proxied request: a path without `%`, `\` or a segment starting with `.` is
/// accepted after one scan.
pub(crate) fn confine(rest: &str, below: &'static str) -> Result<(), PathRefusal> {
    let b = rest.as_bytes();
    let mut suspicious = false;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'\\' => return Err(PathRefusal::Backslash),
            0..=0x1f | 0x7f => return Err(PathRefusal::ControlCharacter),
            b'%' => suspicious = true,
            b'.' if i == 0 || b[i - 1] == b'/' => suspicious = true,
            _ => {}
        }
    }
    if !suspicious {
        return Ok(());
    }
    let decoded = decode_strict(b)?;
    let text = std::str::from_utf8(&decoded.bytes).map_err(|_| PathRefusal::InvalidUtf8)?;
    let mut depth = 0usize;
    for (seg, encoded) in text.split('/').zip(decoded.segment_encoded.iter()) {
        match seg {
            "." | ".." if *encoded => return Err(PathRefusal::EncodedDotSegment),
            "." | "" => {}
            ".." => {
                depth = depth.checked_sub(1).ok_or(PathRefusal::Escapes(below))?;
            }
            _ => depth += 1,
        }
    }
    // A further decoding round (a .NET layer behind http.sys, an extension's own unescape) must
    // not produce a separator, a control character or a new dot segment either.
    let mut level: Cow<'_, str> = Cow::Borrowed(text);
    for _ in 1..DECODE_ROUNDS {
        if !level.contains('%') {
            break;
        }
        // Escaped once (`%25u002f`), a %u escape is one decoding round away from its meaning.
        if has_percent_u(&level) {
            return Err(PathRefusal::DoubleEncoded);
        }
        let next = decode_lenient(level.as_bytes());
        if next.as_slice() == level.as_bytes() {
            break;
        }
        let before_dots = dot_segments(&level);
        let Ok(next) = String::from_utf8(next) else {
            return Err(PathRefusal::InvalidUtf8);
        };
        if next.bytes().any(|c| c == b'\\' || c < 0x20 || c == 0x7f)
            || next.matches('/').count() != level.matches('/').count()
            || dot_segments(&next) != before_dots
        {
            return Err(PathRefusal::DoubleEncoded);
        }
        level = Cow::Owned(next);
    }
    Ok(())
}

/// A `%uNNNN` escape (the `%u` form http.sys and .NET decode).
fn has_percent_u(s: &str) -> bool {
    s.as_bytes().windows(6).any(|w| {
        w[0] == b'%' && matches!(w[1], b'u' | b'U') && w[2..].iter().all(u8::is_ascii_hexdigit)
    })
}

fn dot_segments(s: &str) -> usize {
    s.split('/').filter(|p| *p == "." || *p == "..").count()
}

struct Decoded {
    bytes: Vec<u8>,
    /// Per `/`-separated segment of `bytes`: whether any of its bytes came from an escape.
    segment_encoded: Vec<bool>,
}

/// One round of http.sys-style decoding, refusing what makes the result ambiguous.
fn decode_strict(b: &[u8]) -> Result<Decoded, PathRefusal> {
    let mut bytes = Vec::with_capacity(b.len());
    let mut segment_encoded = vec![false];
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' {
            segment_encoded.push(false);
            bytes.push(c);
            i += 1;
            continue;
        }
        if c != b'%' {
            bytes.push(c);
            i += 1;
            continue;
        }
        if matches!(b.get(i + 1), Some(b'u' | b'U')) {
            return Err(PathRefusal::PercentU);
        }
        let (Some(h), Some(l)) = (
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathRefusal::MalformedEscape);
        };
        let v = h << 4 | l;
        match v {
            b'/' | b'\\' => return Err(PathRefusal::EncodedSeparator),
            0..=0x1f | 0x7f => return Err(PathRefusal::ControlCharacter),
            _ => {}
        }
        bytes.push(v);
        if let Some(last) = segment_encoded.last_mut() {
            *last = true;
        }
        i += 3;
    }
    Ok(Decoded {
        bytes,
        segment_encoded,
    })
}

/// One round of decoding for the look-through: a `%` that starts no escape is kept as it is
/// (percent-encoding's decoder, which is lenient in exactly that way).
fn decode_lenient(b: &[u8]) -> Vec<u8> {
    percent_encoding::percent_decode(b).collect()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Query parameters that carry a Qlik ticket. Qlik redeems a ticket on any proxied URL and sets its
/// session cookie, so a ticket from the browser would swap the Qlik user behind a gateway session.
/// The older documentation's spelling is refused too.
pub(crate) const TICKET_PARAMS: &[&str] = &["qlikticket", "x-qlik-ticket"];

/// What an engine websocket upgrade loses on the way to Qlik: tickets, and the client's own
/// websocket CSRF token. The gateway sets the token for the Qlik session it injects; a client's
/// token (Qlik's Nov 2024 guidance, `@qlik/api`, enigma.js `resume()` reusing an old URL) is for
/// a session the client never had, or one the gateway has since replaced, and Qlik would refuse
/// the upgrade with it (or read it instead of the gateway's, if it takes the first of two).
pub(crate) const UPGRADE_PARAMS: &[&str] = &["qlikticket", "x-qlik-ticket", "qlik-csrf-token"];

/// `query` without Qlik ticket parameters (any case, any percent-encoding of the name). Borrowed
/// when there is nothing to remove, which is every request a client library makes. (The proxy
/// strips them together with other parameters through [`strip_params`]; this is for the tests.)
#[cfg(test)]
pub(crate) fn strip_tickets(query: &str) -> Cow<'_, str> {
    strip_params(query, TICKET_PARAMS)
}

/// `query` without the parameters named in `names` (lower case), however Qlik's proxy would
/// spell them back: any case, any percent-encoding of the name, surrounding spaces.
pub(crate) fn strip_params<'a>(query: &'a str, names: &[&str]) -> Cow<'a, str> {
    let shortest = names.iter().map(|n| n.len()).min().unwrap_or(0);
    let dropped = |p: &str| is_param(p.split('=').next().unwrap_or(""), names, shortest);
    if !query.split('&').any(dropped) {
        return Cow::Borrowed(query);
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !dropped(p)).collect();
    Cow::Owned(kept.join("&"))
}

fn is_param(name: &str, names: &[&str], shortest: usize) -> bool {
    // Fast exit for the names seen on every request: an encoding only makes a name longer.
    if name.len() < shortest {
        return false;
    }
    let decoded = decode_query_name(name.as_bytes());
    let decoded = String::from_utf8_lossy(&decoded);
    let decoded = decoded.trim();
    names.iter().any(|t| decoded.eq_ignore_ascii_case(t))
}

/// A parameter name as Qlik's proxy (.NET's `UrlDecode`) reads it, in one pass: `+` is a space,
/// `%XX` a byte and `%uNNNN` a UTF-16 code unit; a `%` that starts neither stays as it is.
fn decode_query_name(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                if matches!(b.get(i + 1), Some(b'u' | b'U')) {
                    let unit = b.get(i + 2..i + 6).and_then(|h| {
                        h.iter()
                            .try_fold(0u32, |v, &c| Some(v << 4 | u32::from(hex(c)?)))
                    });
                    if let Some(c) = unit.and_then(char::from_u32) {
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                        i += 6;
                        continue;
                    }
                }
                match (
                    b.get(i + 1).and_then(|&c| hex(c)),
                    b.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VP: &str = "the virtual proxy";

    #[test]
    fn plain_paths_pass() {
        for p in [
            "",
            "/",
            "/app/engineData",
            "/resources/assets/external/requirejs/require.js",
            "/sense/app/3f2a/sheet/x/state/analysis",
            "/content/Default/R%C3%A9sum%C3%A9%20(1).png",
            "/api/v1/x;y=1",
            "/a/./b",
            "/a/../b",
            "/a/b/..",
            "/file.name/.hidden",
            "/100%25",
            "/a%2Eb",
            "/%41%42",
            "/100%25user",
        ] {
            assert_eq!(confine(p, VP), Ok(()), "{p}");
        }
    }

    #[test]
    fn the_issues_escapes_are_refused() {
        for (p, why) in [
            ("/%2e%2e/secret", PathRefusal::EncodedDotSegment),
            ("/.%2E/x", PathRefusal::EncodedDotSegment),
            ("/%2e%2e%5cx", PathRefusal::EncodedSeparator),
            ("/..\\x", PathRefusal::Backslash),
            ("/..%2f..%2fadmin", PathRefusal::EncodedSeparator),
        ] {
            assert_eq!(confine(p, VP), Err(why), "{p}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for (p, why) in [
            ("/../hub", PathRefusal::Escapes(VP)),
            ("/a/../../qrs/about", PathRefusal::Escapes(VP)),
            ("/a//../../x", PathRefusal::Escapes(VP)),
            ("/..", PathRefusal::Escapes(VP)),
            ("/%2e", PathRefusal::EncodedDotSegment),
            ("/a%2fb", PathRefusal::EncodedSeparator),
            ("/a%5Cb", PathRefusal::EncodedSeparator),
            ("/a%00b", PathRefusal::ControlCharacter),
            ("/a%0d%0aX-Qlik-User:x", PathRefusal::ControlCharacter),
            ("/%c0%ae%c0%ae/x", PathRefusal::InvalidUtf8),
            ("/%e0%80%ae/x", PathRefusal::InvalidUtf8),
            ("/%ff", PathRefusal::InvalidUtf8),
            ("/%u002e%u002e/x", PathRefusal::PercentU),
            ("/%U2216", PathRefusal::PercentU),
            ("/%252e%252e/x", PathRefusal::DoubleEncoded),
            ("/%25252e%25252e/x", PathRefusal::DoubleEncoded),
            ("/a%252fb", PathRefusal::DoubleEncoded),
            ("/a%255cb", PathRefusal::DoubleEncoded),
            ("/a%2500", PathRefusal::DoubleEncoded),
            // A double-encoded %u escape (found by the property tests).
            ("/.%2e%25u002f", PathRefusal::DoubleEncoded),
            ("/%25u002e%25u002e/x", PathRefusal::DoubleEncoded),
            ("/a%2525U005Cb", PathRefusal::DoubleEncoded),
            ("/a%zz", PathRefusal::MalformedEscape),
            ("/a%2", PathRefusal::MalformedEscape),
        ] {
            assert_eq!(confine(p, VP), Err(why), "{p}");
        }
    }

    #[test]
    fn upgrades_lose_the_clients_csrf_token_and_keep_everything_else() {
        for (q, want) in [
            (
                "reloadUri=https%3A%2F%2Fx&qlik-csrf-token=abc&ttl=60",
                "reloadUri=https%3A%2F%2Fx&ttl=60",
            ),
            (
                "QLIK-CSRF-TOKEN=a&qlik%2Dcsrf%2Dtoken=b&xrfkey=k",
                "xrfkey=k",
            ),
            (
                "identity=i&workloadType=w&qlikTicket=t",
                "identity=i&workloadType=w",
            ),
            ("qlik-csrf-tokens=1", "qlik-csrf-tokens=1"),
        ] {
            assert_eq!(strip_params(q, UPGRADE_PARAMS), want, "{q}");
            assert!(strip_tickets(q).contains("csrf") || !q.contains("csrf"));
        }
    }

    #[test]
    fn tickets_are_stripped_from_queries_in_any_spelling() {
        for (q, want) in [
            ("reloadUri=x&ttl=60", "reloadUri=x&ttl=60"),
            ("qlikTicket=abc", ""),
            ("a=1&QlikTicket=abc&b=2", "a=1&b=2"),
            ("QLIKTICKET=abc&qlikticket=def", ""),
            ("qlik%54icket=abc&a=1", "a=1"),
            ("%71likTicket=abc", ""),
            ("X-Qlik-Ticket=abc", ""),
            ("qlikTicket", ""),
            ("qlikTicketX=1", "qlikTicketX=1"),
            // Qlik's proxy decodes %uNNNN in names too (found by the property tests).
            ("QLI%u006bTICKET=abc&a=1", "a=1"),
            ("%u0071likTicket=abc", ""),
            ("x%u002Dqlik%U002dticket=abc", ""),
            ("qlik%u00", "qlik%u00"),
            ("", ""),
        ] {
            assert_eq!(strip_tickets(q), want, "{q}");
        }
        assert!(matches!(strip_tickets("a=1&b=2"), Cow::Borrowed(_)));
    }
}

/// Property tests (`PROPTEST_CASES` sets the case count; see the README's long run).
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    const VP: &str = "the virtual proxy";
    const PREFIX: &str = "/mashup";

    /// Pieces that mean something to some decoder, so that random paths hit the interesting cases.
    const TOKENS: &[&str] = &[
        "/",
        "/",
        "/",
        ".",
        "..",
        "a",
        "b",
        "~",
        "-",
        "_",
        "é",
        "+",
        ";",
        "%",
        "%%",
        "%2e",
        "%2E",
        "%252e",
        "%25",
        "%2525",
        "%2f",
        "%2F",
        "%5c",
        "%5C",
        "%252f",
        "%255c",
        "\\",
        "%41",
        "%C3%A9",
        "%u002e",
        "%U002F",
        "%c0%ae",
        "%c0%af",
        "%e0%80%ae",
        "%00",
        "%0a",
        "%7f",
        "\u{0}",
        "\t",
        "%g1",
        "%2",
        "%%2e",
        "%2%65",
        ".%2e",
        "%2e.",
        "u002e",
        "u002f",
        "u005c",
        "%25u",
        "%2525u",
    ];

    fn tokens() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(TOKENS), 0..14).prop_map(|t| t.concat())
    }

    fn any_rest() -> impl Strategy<Value = String> {
        prop_oneof![
            tokens().prop_map(|t| format!("/{t}")),
            tokens(),
            any::<String>(),
            "[ -~]{0,40}",
        ]
    }

    /// One round of decoding as http.sys and .NET do it: `%XX` and `%uNNNN`; a `%` that starts
    /// no escape stays. `None` when the bytes are not UTF-8 (the decoder's meaning is unknown).
    fn model_decode(s: &str) -> Option<String> {
        String::from_utf8(model_decode_bytes(s)).ok()
    }

    fn model_decode_bytes(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                if matches!(b.get(i + 1), Some(b'u' | b'U')) {
                    let h = s
                        .get(i + 2..i + 6)
                        .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                        .and_then(|h| u32::from_str_radix(h, 16).ok());
                    if let Some(c) = h.and_then(char::from_u32) {
                        out.extend_from_slice(c.to_string().as_bytes());
                        i += 6;
                        continue;
                    }
                }
                let h = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let (Some(v), false) = (h, s[i + 1..].starts_with(['+', '-'])) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        out
    }

    /// Whether `path`, with `\` read as `/` and dot segments resolved, stays under `PREFIX`;
    /// `keep_empty`: empty segments are segments (RFC 3986) rather than collapsed.
    fn model_under_prefix(path: &str, keep_empty: bool) -> bool {
        let path = path.replace('\\', "/");
        let mut stack: Vec<&str> = Vec::new();
        for seg in path.split('/').skip(1) {
            match seg {
                "." => {}
                ".." => {
                    if stack.pop().is_none() {
                        return false;
                    }
                }
                "" if !keep_empty => {}
                s => stack.push(s),
            }
        }
        stack.first() == Some(&&PREFIX[1..])
    }

    fn plain_path() -> impl Strategy<Value = String> {
        prop::collection::vec("[A-Za-z0-9._~-]{0,8}", 0..8).prop_map(|segs| {
            segs.into_iter()
                .filter(|s| s != "." && s != "..")
                .map(|s| format!("/{s}"))
                .collect()
        })
    }

    /// A query parameter name: ticket spellings in any case and encoding, and others.
    fn param_name() -> impl Strategy<Value = String> {
        let ticket = prop::sample::select(vec!["qlikTicket", "X-Qlik-Ticket"]);
        let encoded = (ticket, prop::collection::vec(0u8..6, 13), " ?", " ?").prop_map(
            |(t, how, pre, post): (&str, Vec<u8>, String, String)| {
                let mut out = pre;
                for (c, h) in t.chars().zip(how) {
                    match h {
                        0 => out.push(c.to_ascii_uppercase()),
                        1 => out.push(c.to_ascii_lowercase()),
                        2 => out.push_str(&format!("%{:02X}", c as u32)),
                        3 => out.push_str(&format!("%{:02x}", c as u32)),
                        4 => out.push_str(&format!("%u{:04x}", c as u32)),
                        _ => out.push(c),
                    }
                }
                out.push_str(&post);
                out
            },
        );
        prop_oneof![
            encoded,
            "[a-zA-Z%+ -]{0,14}",
            Just("qlikTicketX".to_string()),
            Just("reloadUri".to_string()),
        ]
    }

    /// How Qlik's proxy (.NET) reads a parameter name: `+` is a space, `%XX` and `%uNNNN`
    /// decoded, compared without case. Surrounding spaces are ignored too (stricter than .NET).
    fn model_is_ticket(param: &str) -> bool {
        let name = param.split('=').next().unwrap_or("").replace('+', " ");
        let name = String::from_utf8_lossy(&model_decode_bytes(&name)).into_owned();
        ["qlikticket", "x-qlik-ticket"]
            .iter()
            .any(|t| name.trim().eq_ignore_ascii_case(t))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn confine_never_panics(rest in any_rest()) {
            let _ = confine(&rest, VP);
        }

        /// What confine accepts stays under the prefix whichever number of decoding rounds
        /// (one for http.sys, more for layers behind it) and whichever empty-segment rule.
        #[test]
        fn accepted_paths_stay_under_the_prefix(rest in any_rest()) {
            // What confine is given: empty, or from a `/` on (the path below the mount).
            let rest = if rest.is_empty() || rest.starts_with('/') { rest } else { format!("/{rest}") };
            if confine(&rest, VP).is_ok() {
                let mut path = format!("{PREFIX}{rest}");
                for round in 1..=DECODE_ROUNDS {
                    let decoded = model_decode(&path);
                    prop_assert!(decoded.is_some(), "{rest:?}: round {round} is not UTF-8");
                    path = decoded.unwrap_or_default();
                    prop_assert!(!path.chars().any(|c| c.is_control()), "{rest:?}: control character after round {round}");
                    for keep_empty in [false, true] {
                        prop_assert!(model_under_prefix(&path, keep_empty), "{rest:?} leaves {PREFIX} as {path:?} after round {round}");
                    }
                }
            }
        }

        #[test]
        fn plain_paths_are_accepted(rest in plain_path()) {
            prop_assert_eq!(confine(&rest, VP), Ok(()));
        }

        #[test]
        fn no_ticket_survives_and_the_rest_keeps_its_order(
            params in prop::collection::vec((param_name(), prop::option::of("[a-zA-Z0-9%=.-]{0,8}")), 0..6)
        ) {
            let params: Vec<String> = params
                .into_iter()
                .map(|(n, v)| v.map_or(n.clone(), |v| format!("{n}={v}")))
                .collect();
            let query = params.join("&");
            let out = strip_tickets(&query);
            let want: Vec<&str> = params.iter().map(String::as_str).filter(|p| !model_is_ticket(p)).collect();
            prop_assert_eq!(out.as_ref(), want.join("&"), "from {:?}", query);
        }

        #[test]
        fn strip_tickets_never_panics(query in any::<String>()) {
            let _ = strip_tickets(&query);
        }
    }
}
