//! `return_to` for the login: only same-origin, path-absolute URLs, so the login can never be used
//! as an open redirect.

use percent_encoding::percent_decode_str;

/// Returns the path to redirect to, or `None` when `raw` could leave the origin.
pub fn sanitize(raw: &str) -> Option<String> {
    if raw.is_empty() || raw.len() > 4096 {
        return None;
    }
    // Check the raw value and every decoding of it: browsers and servers differ in how many
    // times they decode, and `/%2F%2Fevil.example` must be as dead as `//evil.example`.
    let mut cur = raw.to_string();
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
    Some(raw.to_string())
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

    #[test]
    fn accepts_local_paths() {
        for ok in ["/", "/app/x?y=1#z", "/mashup/hub/", "/a%20b"] {
            assert_eq!(sanitize(ok).as_deref(), Some(ok), "{ok}");
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
            assert_eq!(sanitize(bad), None, "{bad:?}");
        }
    }
}
