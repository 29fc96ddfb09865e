//! The gateway's own cookie: HttpOnly, SameSite=Lax, Secure and `__Host-` on https, Path=/.

use cookie::{Cookie, SameSite};
use http::HeaderMap;

use super::SessionId;

/// How the gateway names and flags its cookie.
#[derive(Debug, Clone)]
pub struct CookieSettings {
    pub name: String,
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
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| Cookie::split_parse(v).filter_map(Result::ok))
            .filter(|c| c.name() == self.name)
            .find_map(|c| SessionId::parse(c.value()))
    }
}

/// The value of the cookie `name` in a request's `Cookie` headers.
pub fn read_named(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| Cookie::split_parse(v).filter_map(Result::ok))
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
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
}
