//! Qlik's session cookie rules: which cookies are Qlik session cookies, and what a `Set-Cookie`
//! from Qlik's proxy is to the gateway.

/// Whether a cookie name is a Qlik session cookie (`X-Qlik-Session`, `X-Qlik-Session-HTTP`, or a
/// virtual proxy's own `X-Qlik-Session-…`), in any case.
pub fn is_qlik_session_cookie(name: &str) -> bool {
    const PREFIX: &str = "x-qlik-session";
    name.get(..PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
}

/// Whether a `Set-Cookie` value sets the Qlik session cookie `name` (or any `X-Qlik-Session*`).
/// Returns the cookie's value when it does.
pub fn qlik_session_set_cookie<'a>(set_cookie: &'a str, name: &str) -> QlikSetCookie<'a> {
    let Some((n, v)) = set_cookie
        .split(';')
        .next()
        .and_then(|first| first.split_once('='))
    else {
        return QlikSetCookie::NotQlik;
    };
    let n = n.trim();
    if n == name {
        QlikSetCookie::Ours(v.trim())
    } else if is_qlik_session_cookie(n) {
        QlikSetCookie::Other(n)
    } else {
        QlikSetCookie::NotQlik
    }
}

/// What a `Set-Cookie` from Qlik is to the gateway.
#[derive(Debug, PartialEq, Eq)]
pub enum QlikSetCookie<'a> {
    /// The configured session cookie, with its value (empty when Qlik clears it).
    Ours(&'a str),
    /// A Qlik session cookie of another name (another virtual proxy, the `-HTTP` variant).
    Other(&'a str),
    /// Anything else; passed on to the browser.
    NotQlik,
}

/// The Qlik session cookies a response from Qlik's proxy sets.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SetSessionCookies {
    /// The first non-empty value set for the configured session cookie.
    pub ours: Option<String>,
    /// The last Qlik session cookie of another name: the name the virtual proxy really uses.
    pub other: Option<String>,
}

/// What the `Set-Cookie` headers of a response from Qlik's proxy set, for session cookie `name`.
pub fn set_session_cookies(headers: &http::HeaderMap, name: &str) -> SetSessionCookies {
    let mut found = SetSessionCookies::default();
    for v in headers.get_all(http::header::SET_COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        match qlik_session_set_cookie(s, name) {
            QlikSetCookie::Ours(v) if !v.is_empty() && found.ours.is_none() => {
                found.ours = Some(v.to_string());
            }
            QlikSetCookie::Other(n) => found.other = Some(n.to_string()),
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_for_the_qlik_session_is_recognised() {
        let ours = "X-Qlik-Session-mashup";
        assert_eq!(
            qlik_session_set_cookie("X-Qlik-Session-mashup=abc; Path=/; HttpOnly", ours),
            QlikSetCookie::Ours("abc")
        );
        assert_eq!(
            qlik_session_set_cookie("X-Qlik-Session-mashup=; Expires=Thu, 01 Jan 1970", ours),
            QlikSetCookie::Ours("")
        );
        assert_eq!(
            qlik_session_set_cookie("X-Qlik-Session-other=zzz; Path=/", ours),
            QlikSetCookie::Other("X-Qlik-Session-other")
        );
        assert_eq!(
            qlik_session_set_cookie("X-Qlik-Session-mashup-HTTP=zzz", ours),
            QlikSetCookie::Other("X-Qlik-Session-mashup-HTTP")
        );
        assert_eq!(
            qlik_session_set_cookie("pref=1; Path=/", ours),
            QlikSetCookie::NotQlik
        );
        assert_eq!(
            qlik_session_set_cookie("garbage", ours),
            QlikSetCookie::NotQlik
        );
    }

    #[test]
    fn a_response_sets_our_cookie_or_names_another() {
        let ours = "X-Qlik-Session-mashup";
        let mut h = http::HeaderMap::new();
        for v in [
            "X-Qlik-Session-mashup=; Path=/",
            "X-Qlik-Session-a=1",
            "X-Qlik-Session-mashup=abc",
            "X-Qlik-Session-mashup=def",
            "X-Qlik-Session-b=2",
        ] {
            h.append(http::header::SET_COOKIE, v.parse().unwrap());
        }
        assert_eq!(
            set_session_cookies(&h, ours),
            SetSessionCookies {
                ours: Some("abc".into()),
                other: Some("X-Qlik-Session-b".into()),
            }
        );
        assert_eq!(
            set_session_cookies(&http::HeaderMap::new(), ours),
            SetSessionCookies::default()
        );
    }
}
