//! Users carried in request headers: `X-Qlik-User: UserDirectory=<dir>; UserId=<id>` (direct
//! engine connections, §4) and the header of a header-authentication virtual proxy (§3).

use crate::options::HeaderAuth;
use crate::util::decode_component;
use http::{HeaderMap, HeaderName};

/// Substrings a header-authentication header name must not contain (§3).
const RESERVED_HEADERS: [&str; 7] = [
    "x-qlik-security",
    "x-qlik-user",
    "x-qlik-proxysession",
    "x-qlik-proxyid",
    "x-qlik-trace",
    "x-qlik-app",
    "x-qlik-capabilities",
];

/// A user directory or user id is usable when non-empty, without control characters and
/// without a backslash (the QPS API refuses backslashes too, §1).
fn usable(s: &str) -> bool {
    !s.is_empty() && !s.contains('\\') && !s.chars().any(char::is_control)
}

/// Parses `UserDirectory=<dir>; UserId=<id>` (keys case-insensitive, values URL-decoded and
/// trimmed, other keys ignored).
pub(crate) fn parse_user_header(value: &str) -> Option<(String, String)> {
    let mut dir = None;
    let mut id = None;
    for part in value.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=')?;
        let v = decode_component(v.trim()).trim().to_string();
        match k.trim() {
            k if k.eq_ignore_ascii_case("UserDirectory") => dir = Some(v),
            k if k.eq_ignore_ascii_case("UserId") => id = Some(v),
            _ => {}
        }
    }
    let (dir, id) = (dir?, id?);
    (usable(&dir) && usable(&id)).then_some((dir, id))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    Directory,
    Id,
}

/// Parses a dynamic pattern: `$ud`, `$id`, `\\` = one literal backslash, anything else literal.
fn parse_pattern(pattern: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut literal = String::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        let capture = if rest.starts_with("$ud") {
            Some(Token::Directory)
        } else if rest.starts_with("$id") {
            Some(Token::Id)
        } else {
            None
        };
        if let Some(token) = capture {
            if !literal.is_empty() {
                tokens.push(Token::Literal(std::mem::take(&mut literal)));
            } else if matches!(tokens.last(), Some(Token::Directory | Token::Id)) {
                return Err(format!(
                    "header pattern {pattern:?}: $ud and $id need a separator"
                ));
            }
            tokens.push(token);
            rest = &rest[3..];
        } else if let Some(after) = rest.strip_prefix("\\\\") {
            literal.push('\\');
            rest = after;
        } else {
            let c = rest.chars().next().unwrap_or_default();
            literal.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !literal.is_empty() {
        tokens.push(Token::Literal(literal));
    }
    let count = |t: &Token| tokens.iter().filter(|x| *x == t).count();
    if count(&Token::Directory) != 1 || count(&Token::Id) != 1 {
        return Err(format!(
            "header pattern {pattern:?} must contain $ud and $id exactly once"
        ));
    }
    if !pattern.is_ascii() {
        return Err(format!("header pattern {pattern:?} must be US-ASCII"));
    }
    Ok(tokens)
}

/// Matches `value` against `tokens`; captures are as short as possible (the first separator
/// wins) and must be non-empty.
fn match_pattern(tokens: &[Token], value: &str) -> Option<(String, String)> {
    fn go<'a>(
        tokens: &[Token],
        value: &'a str,
        dir: Option<&'a str>,
        id: Option<&'a str>,
    ) -> Option<(&'a str, &'a str)> {
        match tokens.split_first() {
            None => match (value.is_empty(), dir, id) {
                (true, Some(d), Some(i)) => Some((d, i)),
                _ => None,
            },
            Some((Token::Literal(lit), rest)) => {
                go(rest, value.strip_prefix(lit.as_str())?, dir, id)
            }
            Some((capture, rest)) => {
                let ends: Vec<usize> = match rest.first() {
                    None => vec![value.len()],
                    Some(Token::Literal(lit)) => {
                        value.match_indices(lit.as_str()).map(|(i, _)| i).collect()
                    }
                    Some(_) => return None,
                };
                ends.into_iter().filter(|&end| end > 0).find_map(|end| {
                    let (taken, left) = value.split_at(end);
                    match capture {
                        Token::Directory => go(rest, left, Some(taken), id),
                        _ => go(rest, left, dir, Some(taken)),
                    }
                })
            }
        }
    }
    let (dir, id) = go(tokens, value, None, None)?;
    let (dir, id) = (dir.trim(), id.trim());
    (usable(dir) && usable(id)).then(|| (dir.to_string(), id.to_string()))
}

/// What a request's authentication header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderUser {
    /// No such header.
    Absent,
    /// The value is not US-ASCII (Qlik accepts US-ASCII only): answered with 400.
    NotAscii,
    /// The value does not name a user in the configured form.
    Unrecognised,
    /// The user directory and user id.
    User(String, String),
}

/// The configured header of a header-authentication virtual proxy.
#[derive(Debug, Clone)]
pub(crate) struct HeaderAuthenticator {
    name: HeaderName,
    pattern: Option<Vec<Token>>,
}

impl HeaderAuthenticator {
    /// Validates the options (header name, pattern).
    pub(crate) fn new(opts: &HeaderAuth) -> Result<Self, String> {
        let name = HeaderName::from_bytes(opts.header.trim().as_bytes())
            .map_err(|_| format!("invalid header name {:?}", opts.header))?;
        if let Some(reserved) = RESERVED_HEADERS.iter().find(|r| name.as_str().contains(*r)) {
            return Err(format!(
                "header name {:?} must not contain {reserved:?}",
                opts.header
            ));
        }
        let pattern = opts
            .dynamic_pattern
            .as_deref()
            .map(parse_pattern)
            .transpose()?;
        Ok(HeaderAuthenticator { name, pattern })
    }

    /// The header's name (lowercase).
    pub(crate) fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The user named by the request's header (the first one, when repeated).
    pub(crate) fn user(&self, headers: &HeaderMap) -> HeaderUser {
        let Some(value) = headers.get(&self.name) else {
            return HeaderUser::Absent;
        };
        let Ok(value) = std::str::from_utf8(value.as_bytes()) else {
            return HeaderUser::NotAscii;
        };
        if !value.is_ascii() {
            return HeaderUser::NotAscii;
        }
        let user = match &self.pattern {
            None => parse_user_header(value),
            Some(tokens) => match_pattern(tokens, value.trim()),
        };
        match user {
            Some((dir, id)) => HeaderUser::User(dir, id),
            None => HeaderUser::Unrecognised,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(d: &str, i: &str) -> Option<(String, String)> {
        Some((d.to_string(), i.to_string()))
    }

    #[test]
    fn parses_x_qlik_user() {
        assert_eq!(
            parse_user_header("UserDirectory=DIR; UserId=alice"),
            user("DIR", "alice")
        );
        assert_eq!(
            parse_user_header("userid=J%C3%BCrgen%20K;userdirectory=CORP%2DX;"),
            user("CORP-X", "Jürgen K")
        );
        assert_eq!(parse_user_header("UserDirectory=DIR"), None);
        assert_eq!(parse_user_header("UserDirectory=; UserId=a"), None);
        assert_eq!(parse_user_header("DIR\\alice"), None);
        assert_eq!(parse_user_header("UserDirectory=D%5CX; UserId=a"), None);
    }

    #[test]
    fn dynamic_patterns() {
        let p = parse_pattern("$ud\\\\$id").expect("pattern");
        assert_eq!(p, parse_pattern("$ud\\$id").expect("single backslash"));
        assert_eq!(match_pattern(&p, "DIR\\alice"), user("DIR", "alice"));
        assert_eq!(match_pattern(&p, "DIR\\\\alice"), None);
        assert_eq!(match_pattern(&p, "alice"), None);
        assert_eq!(match_pattern(&p, "\\alice"), None);
        let p = parse_pattern("$id@$ud").expect("pattern");
        assert_eq!(match_pattern(&p, "a.b@CORP"), user("CORP", "a.b"));
        let p = parse_pattern("$ud::$id").expect("pattern");
        assert_eq!(match_pattern(&p, "CORP::bob::x"), user("CORP", "bob::x"));
        let p = parse_pattern("user=$id;dir=$ud").expect("pattern");
        assert_eq!(match_pattern(&p, "user=bob;dir=D"), user("D", "bob"));
        assert!(parse_pattern("$ud$id").is_err());
        assert!(parse_pattern("$id").is_err());
        assert!(parse_pattern("$ud\\$id\\$id").is_err());
    }

    #[test]
    fn header_authenticator() {
        let a = HeaderAuthenticator::new(&HeaderAuth::static_form("hdr-usr")).expect("ok");
        let mut h = HeaderMap::new();
        assert_eq!(a.user(&h), HeaderUser::Absent);
        h.insert("hdr-usr", "UserDirectory=D; UserId=u".parse().expect("v"));
        assert_eq!(a.user(&h), HeaderUser::User("D".into(), "u".into()));
        h.insert(
            "hdr-usr",
            http::HeaderValue::from_bytes(b"UserDirectory=D; UserId=\xfc").expect("v"),
        );
        assert_eq!(a.user(&h), HeaderUser::NotAscii);
        h.insert("hdr-usr", "garbage".parse().expect("v"));
        assert_eq!(a.user(&h), HeaderUser::Unrecognised);
        assert!(HeaderAuthenticator::new(&HeaderAuth::static_form("X-Qlik-User")).is_err());
        assert!(HeaderAuthenticator::new(&HeaderAuth::static_form("my-x-qlik-security")).is_err());
        assert!(HeaderAuthenticator::new(&HeaderAuth::static_form("bad header")).is_err());
    }
}
