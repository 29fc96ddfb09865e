//! The gateway's own cookie: HttpOnly, SameSite=Lax, Secure and `__Host-` on https, Path=/.

use cookie::{Cookie, SameSite};
use http::HeaderMap;

use super::SessionId;

/// How the gateway names and flags its cookie.
#[derive(Debug, Clone)]
pub struct CookieSettings {
    /// The cookie's name (`session.cookie_name` or its default).
    pub name: String,
    /// Whether the cookie is `Secure` (`server.public_url` is https).
    pub secure: bool,
}

impl CookieSettings {
    /// `Set-Cookie` value that gives the browser `id`.
    pub fn issue(&self, id: &SessionId) -> String {
        Cookie::build((self.name.clone(), id.as_cookie_value().to_string()))
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .path("/")
            .build()
            .to_string()
    }

    /// `Set-Cookie` value that removes the cookie.
    pub fn clear(&self) -> String {
        Cookie::build((self.name.clone(), ""))
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .path("/")
            .max_age(cookie::time::Duration::ZERO)
            .build()
            .to_string()
    }

    /// The session id the browser sent, if any well-formed one.
    pub fn read(&self, headers: &HeaderMap) -> Option<SessionId> {
        request_cookies(headers)
            .filter(|(n, _)| *n == self.name)
            .find_map(|(_, v)| SessionId::parse(v))
    }
}

/// The `name=value` pairs of a request's `Cookie` headers (RFC 6265 §4.2: `; `-separated, no
/// attributes). Read on every request, so by splitting in place rather than with a cookie
/// parser that allocates per cookie.
pub fn request_cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (n, v) = pair.split_once('=')?;
            let n = n.trim();
            (!n.is_empty()).then(|| (n, v.trim()))
        })
}

/// The value of the cookie `name` in a request's `Cookie` headers.
pub fn read_named(headers: &HeaderMap, name: &str) -> Option<String> {
    request_cookies(headers)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_cookie_is_host_prefixed_and_secure() {
        let s = CookieSettings {
            name: "__Host-qlik-gateway".into(),
            secure: true,
        };
        let id = SessionId::generate();
        let c = s.issue(&id);
        assert!(c.starts_with("__Host-qlik-gateway="));
        for flag in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
            assert!(c.contains(flag), "{c} lacks {flag}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("a=b; __Host-qlik-gateway={}", id.as_cookie_value())
                .parse()
                .unwrap(),
        );
        assert_eq!(s.read(&h), Some(id));
    }

    #[test]
    fn request_cookies_split_like_browsers_send_them() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            " a=1;b = x=y== ;; novalue; =anon; c=".parse().unwrap(),
        );
        h.append(http::header::COOKIE, "d=4".parse().unwrap());
        let got: Vec<_> = request_cookies(&h).collect();
        assert_eq!(got, vec![("a", "1"), ("b", "x=y=="), ("c", ""), ("d", "4")]);
        assert_eq!(read_named(&h, "d").as_deref(), Some("4"));
        assert_eq!(read_named(&h, "novalue"), None);

        // A malformed first copy of the gateway's cookie does not hide a good one.
        let s = CookieSettings {
            name: "qlik-gateway".into(),
            secure: false,
        };
        let id = SessionId::generate();
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("qlik-gateway=junk; qlik-gateway={}", id.as_cookie_value())
                .parse()
                .unwrap(),
        );
        assert_eq!(s.read(&h), Some(id));
    }
}

/// Property tests (`PROPTEST_CASES` sets the case count; see the README's long run).
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    const NAME: &str = "__Host-qlik-gateway";

    fn headers(values: &[Vec<u8>]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            if let Ok(v) = http::HeaderValue::from_bytes(v) {
                h.append(http::header::COOKIE, v);
            }
        }
        h
    }

    /// Names that look like the gateway's but are not it.
    fn near_name() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "__host-qlik-gateway",
            "__Host-Qlik-Gateway",
            "qlik-gateway",
            "__Secure-qlik-gateway",
            "__Host-qlik-gateway2",
            "x__Host-qlik-gateway",
            "__Host-qlik-gatewa",
            "__Host-qlik%2Dgateway",
            "__Host-qlik-gateway\"",
        ])
        .prop_map(String::from)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_cookie_headers_do_not_panic(values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..4)) {
            let s = CookieSettings { name: NAME.into(), secure: true };
            let h = headers(&values);
            let _ = s.read(&h);
            let _ = read_named(&h, NAME);
            let _ = read_named(&h, "");
            for (n, v) in request_cookies(&h) {
                prop_assert!(!n.is_empty() && n == n.trim() && v == v.trim());
            }
        }

        /// Only a cookie of exactly the gateway's name is read, whatever surrounds it; the first
        /// well-formed one wins.
        #[test]
        fn the_gateway_cookie_is_picked_by_its_exact_name(
            others in prop::collection::vec(near_name(), 0..5),
            exact_at in prop::option::of(0usize..6),
            junk_first in any::<bool>(),
            split in any::<bool>(),
        ) {
            let s = CookieSettings { name: NAME.into(), secure: true };
            let decoys: Vec<SessionId> = others.iter().map(|_| SessionId::generate()).collect();
            let mut pairs: Vec<String> = others
                .iter()
                .zip(&decoys)
                .map(|(n, id)| format!("{n}={}", id.as_cookie_value()))
                .collect();
            let real = SessionId::generate();
            if let Some(at) = exact_at {
                let at = at.min(pairs.len());
                pairs.insert(at, format!("{NAME}={}", real.as_cookie_value()));
                if junk_first {
                    pairs.insert(at, format!("{NAME}=junk"));
                }
            }
            let values: Vec<Vec<u8>> = if split {
                pairs.iter().map(|p| p.clone().into_bytes()).collect()
            } else {
                vec![pairs.join("; ").into_bytes()]
            };
            let got = s.read(&headers(&values));
            prop_assert_eq!(got, exact_at.map(|_| real));
        }
    }
}
