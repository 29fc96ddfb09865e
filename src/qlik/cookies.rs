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
}
