//! The HTML pages the gateway writes itself (error pages, the Windows sign-in page, the logged-out
//! page, the built-in mashup) and the headers that keep them from being framed, sniffed or made to
//! load anything: they are served on the same origin as Qlik, so a page that could be framed or
//! fed a script would act with the user's Qlik session.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

/// For pages without scripts: inline styles only, no framing, no `<base>`, forms only to the
/// gateway.
const STATIC_PAGE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// A page without scripts, with the security headers and `Cache-Control: no-store` (every such
/// page describes the state of one request).
pub(crate) fn page(status: StatusCode, html: impl Into<Body>) -> Response {
    let mut r = (status, html.into()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(h, HeaderValue::from_static(STATIC_PAGE_CSP));
    r
}

/// The Content-Security-Policy of a page whose only script is the inline `<script>` elements of
/// `html`, allowed by their hashes (so nothing injected into the page would run). Style
/// attributes stay allowed: the built-in page draws its bars with them.
pub(crate) fn script_page_csp(html: &str) -> HeaderValue {
    let mut csp = String::from("default-src 'none'; script-src");
    let mut rest = html;
    while let Some(start) = rest.find("<script>") {
        let body = &rest[start + "<script>".len()..];
        let Some(end) = body.find("</script>") else {
            break;
        };
        let digest = Sha256::digest(&body.as_bytes()[..end]);
        csp.push_str(" 'sha256-");
        csp.push_str(&base64::engine::general_purpose::STANDARD.encode(digest));
        csp.push('\'');
        rest = &body[end..];
    }
    csp.push_str(
        "; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    );
    // Hashes are base64 and the rest is ASCII: always a valid header value.
    HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static(STATIC_PAGE_CSP))
}

/// Sets the headers every gateway page carries: `csp`, no MIME sniffing, no framing (also for
/// browsers that predate `frame-ancestors`), and no referrer leaving the gateway.
pub(crate) fn secure(h: &mut HeaderMap, csp: HeaderValue) {
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cannot_be_framed_sniffed_or_run_scripts() {
        let r = page(StatusCode::FORBIDDEN, "<p>no</p>");
        let h = r.headers();
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("script-src"), "{csp}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
    }

    #[test]
    fn only_the_pages_own_scripts_are_allowed() {
        let html = "<p>x</p><script>run()</script><script>two()</script>";
        let csp = script_page_csp(html);
        let csp = csp.to_str().unwrap();
        let hash = |s: &str| {
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s))
            )
        };
        assert!(csp.contains(&hash("run()")), "{csp}");
        assert!(csp.contains(&hash("two()")), "{csp}");
        assert!(!csp.contains("unsafe-inline'; frame") && !csp.contains("script-src 'unsafe"));
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
