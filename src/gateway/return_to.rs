//! `return_to` for the login: same-origin only, so the login can never be used as an open
//! redirect. A path-absolute URL, or an absolute URL on the gateway's public origin (the form
//! `@qlik/api` and qlik-embed build: `loginUri.replace("{location}", encodeURIComponent(location.href))`),
//! which is cut down to its path, query and fragment.

use percent_encoding::percent_decode_str;

/// Returns the path to redirect to, or `None` when `raw` could leave `public_origin`
/// (`scheme://host[:port]`, as `server.public_url` gives it).
pub(crate) fn sanitize(raw: &str, public_origin: &str) -> Option<String> {
    if raw.is_empty() || raw.len() > 4096 {
        return None;
    }
    let local = match on_origin(raw, public_origin) {
        Some(path) => path,
        None if has_scheme(raw) => return None,
        None => raw.to_string(),
    };
    // Check the raw value and every decoding of it: browsers and servers differ in how many
    // times they decode, and `/%2F%2Fevil.example` must be as dead as `//evil.example`.
    let mut cur = local.clone();
    for _ in 0..4 {
        if !safe_path(&cur) {
            return None;
        }
        let next = percent_decode_str(&cur).decode_utf8().ok()?.into_owned();
        if next == cur {
            break;
        }
        cur = next;
    }
    if !safe_path(&cur) {
        return None;
    }
    Some(local)
}

/// `scheme:` before any `/`, `?` or `#`: an absolute URL (or `javascript:` and friends).
fn has_scheme(raw: &str) -> bool {
    let end = raw.find(['/', '?', '#']).unwrap_or(raw.len());
    raw[..end].contains(':')
}

/// The path, query and fragment of an absolute `http(s)` URL on `public_origin`.
fn on_origin(raw: &str, public_origin: &str) -> Option<String> {
    // Only what a browser's `location.href` looks like: no credentials, no odd bytes that the
    // URL parser would quietly drop (a tab inside the host).
    if !has_scheme(raw) || raw.bytes().any(|b| b.is_ascii_control() || b == b'\\') {
        return None;
    }
    let url = reqwest::Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    if !url
        .origin()
        .ascii_serialization()
        .eq_ignore_ascii_case(public_origin)
    {
        return None;
    }
    let mut out = url.path().to_string();
    if let Some(q) = url.query() {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = url.fragment() {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

fn safe_path(s: &str) -> bool {
    let b = s.as_bytes();
    if b.first() != Some(&b'/') {
        return false; // relative, scheme (`javascript:`), or empty
    }
    if matches!(b.get(1), Some(b'/') | Some(b'\\')) {
        return false; // protocol-relative `//host`, `/\host`
    }
    if b.iter().any(|c| c.is_ascii_control() || *c == b'\\') {
        return false; // browsers strip tabs/newlines and treat `\` as `/`
    }
    true
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    const ORIGIN: &str = "https://bi.example.com";

    #[test]
    fn accepts_local_paths() {
        for ok in ["/", "/app/x?y=1#z", "/mashup/hub/", "/a%20b"] {
            assert_eq!(sanitize(ok, ORIGIN).as_deref(), Some(ok), "{ok}");
        }
    }

    #[test]
    fn absolute_urls_on_the_public_origin_become_their_path() {
        for (raw, want) in [
            ("https://bi.example.com/page?x=1#top", "/page?x=1#top"),
            ("https://BI.example.com:443/a%20b/", "/a%20b/"),
            ("https://bi.example.com", "/"),
            ("HTTPS://bi.example.com/x", "/x"),
        ] {
            assert_eq!(sanitize(raw, ORIGIN).as_deref(), Some(want), "{raw}");
        }
    }

    #[test]
    fn absolute_urls_elsewhere_are_refused() {
        for bad in [
            "http://bi.example.com/page",
            "https://bi.example.com:8443/page",
            "https://bi.example.com.evil.example/",
            "https://evil.example/https://bi.example.com/",
            "https://user@bi.example.com/",
            "https://bi.example.com//evil.example/",
            "https://bi.example.com/%2F%2Fevil.example",
            "https://bi.exa\tmple.com/",
            "ftp://bi.example.com/",
            "javascript://bi.example.com/%0aalert(1)",
        ] {
            assert_eq!(sanitize(bad, ORIGIN), None, "{bad:?}");
        }
    }

    #[test]
    fn refuses_everything_that_can_leave_the_origin() {
        for bad in [
            "",
            "//evil.example",
            "/\\evil.example",
            "\\\\evil",
            "https://evil.example/",
            "javascript:alert(1)",
            "evil.example",
            "/%2F%2Fevil.example",
            "/%2f/evil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%252F%252Fevil.example",
            "/\t/evil.example",
            "/%09/evil.example",
            "/a\\b",
            "/%0d%0aSet-Cookie:x=1",
        ] {
            assert_eq!(sanitize(bad, ORIGIN), None, "{bad:?}");
        }
    }
}

/// Property tests (`PROPTEST_CASES` sets the case count; see the README's long run).
#[cfg(test)]
mod proptests {
    use super::sanitize;
    use proptest::prelude::*;

    const TOKENS: &[&str] = &[
        "/",
        "/",
        "\\",
        "a",
        ".",
        "..",
        ":",
        "@",
        "?",
        "#",
        "%",
        "%2F",
        "%2f",
        "%5C",
        "%5c",
        "%25",
        "%252F",
        "%09",
        "%0a",
        "%00",
        "\t",
        "\n",
        "\r",
        " ",
        "evil.example",
        "https:",
        "javascript:",
        "%68ttps:",
        "\u{0}",
        "é",
        "%C3%A9",
        "%e2%80%ae",
        "\u{3000}",
    ];

    fn raw() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec(prop::sample::select(TOKENS), 0..10).prop_map(|t| t.concat()),
            any::<String>(),
            "/[ -~]{0,30}",
            "https://gw\\.example[ -~]{0,30}",
        ]
    }

    /// Where a browser goes when it follows `location` from a page of the gateway's origin.
    fn browser_origin(location: &str) -> Option<String> {
        let base = url::Url::parse("https://gw.example/mashup/page").ok()?;
        Some(base.join(location).ok()?.origin().ascii_serialization())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Accepted values are same-origin paths, as they are and after every decoding a browser
        /// or server may apply.
        #[test]
        fn accepted_values_stay_on_the_origin(raw in raw()) {
            let Some(ok) = sanitize(&raw, "https://gw.example") else { return Ok(()) };
            if !raw.starts_with("https://") {
                prop_assert_eq!(&ok, &raw);
            }
            let mut cur = ok;
            for _ in 0..3 {
                let b = cur.as_bytes();
                prop_assert!(b.first() == Some(&b'/') && !matches!(b.get(1), Some(b'/' | b'\\')), "{raw:?} as {cur:?}");
                prop_assert!(!cur.chars().any(char::is_control), "{raw:?} as {cur:?}");
                prop_assert!(url::Url::parse(&cur).is_err(), "{raw:?} as {cur:?} has a scheme");
                let origin = browser_origin(&cur);
                prop_assert_eq!(origin.as_deref(), Some("https://gw.example"), "{:?} as {:?}", raw, cur);
                let Ok(next) = percent_encoding::percent_decode_str(&cur).decode_utf8() else { break };
                cur = next.into_owned();
            }
        }

        #[test]
        fn plain_paths_are_accepted(p in "(/[A-Za-z0-9._~-]{1,8}){1,6}(\\?[a-z0-9=&]{0,10})?") {
            let got = sanitize(&p, "https://gw.example");
            prop_assert_eq!(got.as_deref(), Some(p.as_str()));
        }
    }
}
