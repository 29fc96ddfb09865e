//! Header hygiene between the browser and upstreams: hop-by-hop removal, identity headers a browser
//! must never choose, forwarding headers, cookie filtering and `Location` rewriting.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::qlik::cookies::is_qlik_session_cookie;

// Header names as constants: a name given as a string is parsed again on every use, and these
// are used on every request.
/// Qlik's CSRF token header (`@qlik/api` sends it on modifying verbs): the gateway owns it, as it
/// owns the Qlik session it belongs to.
pub(crate) const CSRF_HEADER: HeaderName = HeaderName::from_static("qlik-csrf-token");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// Qlik's anti-CSRF key for REST calls: the same value must come as `?xrfkey=`. It names no
/// user, and `@qlik/api` and the Capability API send it on every QRS call, so it passes.
const X_QLIK_XRFKEY: HeaderName = HeaderName::from_static("x-qlik-xrfkey");

/// RFC 9110 §7.6.1 hop-by-hop headers, plus the non-standard ones proxies still see. A static,
/// not a const: a const array is built and dropped again at every use, once per header here.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// The lengths of the names in [`HOP_BY_HOP`], as a bit set (`HeaderName::as_str` is not const;
/// a test checks the set).
const HOP_BY_HOP_LENGTHS: u32 = 1 << 2 | 1 << 7 | 1 << 10 | 1 << 16 | 1 << 17 | 1 << 18 | 1 << 19;

/// Headers a browser may not send upstream, besides `X-Qlik-*` (see [`remove_identity_headers`]).
static IDENTITY: [HeaderName; 6] = [
    header::AUTHORIZATION,
    header::FORWARDED,
    X_FORWARDED_FOR,
    X_FORWARDED_HOST,
    X_FORWARDED_PROTO,
    X_REAL_IP,
];

/// Headers the gateway adds to a request on its way to Qlik: three `X-Forwarded-*`, `Host`,
/// `Cookie` (Qlik's session) and a header-mode credential.
pub(crate) const ADDED_UPSTREAM: usize = 6;

/// A copy of `h` with room for `room` more headers. `HeaderMap::clone` copies the entries
/// without spare capacity, so the first headers inserted into the copy reallocate them (twice
/// for the gateway's six: the copy's entries are moved each time).
pub(crate) fn clone_with_room(h: &HeaderMap, room: usize) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(h.len() + room);
    for (k, v) in h {
        out.append(k.clone(), v.clone());
    }
    out
}

/// Removes hop-by-hop headers, including those named in `Connection`.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few headers there are, rather than a lookup per name: most messages
    // carry none of these, most of the rest only `Connection: keep-alive` or `close`, and those
    // are handled without allocating.
    let mut found = 0u16;
    for k in headers.keys() {
        // Most names have a length none of these has: one bit test instead of nine comparisons
        // (two of them byte-wise: `keep-alive` and `proxy-connection` are not standard names).
        let n = k.as_str().len();
        if n >= 32 || HOP_BY_HOP_LENGTHS & (1 << n) == 0 {
            continue;
        }
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == k) {
            found |= 1 << i;
        }
    }
    if found == 0 {
        return;
    }
    // Names `Connection` lists besides those removed anyway (`keep-alive`, `upgrade`, …).
    let mut listed: Vec<HeaderName> = Vec::new();
    if found & 1 != 0 {
        let tokens = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim);
        for t in tokens {
            if t.is_empty()
                || HOP_BY_HOP
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(t))
            {
                continue;
            }
            // `close` is a connection option, not the name of a header one would send.
            if t.eq_ignore_ascii_case("close") && !headers.contains_key("close") {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(t.as_bytes()) {
                listed.push(n);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if found & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    for name in listed {
        headers.remove(name);
    }
}

/// Removes everything a browser could use to choose or fake its Qlik identity: every `X-Qlik-*`
/// header (X-Qlik-User, X-Qlik-Session, …) except `X-Qlik-Xrfkey` (an anti-CSRF key, no
/// identity), `Authorization` (a JWT virtual proxy would believe it), incoming forwarding
/// headers, and the configured identity headers.
pub(crate) fn remove_identity_headers(headers: &mut HeaderMap, extra: &[HeaderName]) {
    let refused = |k: &HeaderName| {
        (k.as_str().starts_with("x-qlik-") && *k != X_QLIK_XRFKEY)
            || IDENTITY.contains(k)
            || extra.contains(k)
    };
    // Found in one pass over the request's headers; removed (a lookup each) only when present.
    if headers.keys().any(refused) {
        let found: Vec<HeaderName> = headers.keys().filter(|k| refused(k)).cloned().collect();
        for k in found {
            headers.remove(k);
        }
    }
}

/// The gateway's short-lived login cookies (`qlik-gateway-oidc`, `qlik-gateway-negotiate`, with
/// or without `__Host-`): the gateway's business only, like its session cookie.
fn is_gateway_aux_cookie(name: &str) -> bool {
    name.strip_prefix("__Host-")
        .unwrap_or(name)
        .starts_with("qlik-gateway-")
}

/// Rebuilds the `Cookie` header without the gateway's cookie and without any `X-Qlik-Session*`
/// cookie, then appends `inject` (the user's Qlik session cookie) when given. Runs on every
/// proxied request, so it builds the one new value without allocating per cookie.
pub(crate) fn rewrite_cookies(
    headers: &mut HeaderMap,
    gateway_cookie: &str,
    inject: Option<(&str, &str)>,
) {
    // Sized once: grown push by push, the value would be reallocated three or four times.
    let sent: usize = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.len() + 2)
        .sum();
    let mut kept = String::with_capacity(sent + inject.map_or(0, |(n, v)| n.len() + v.len() + 3));
    let mut push = |pair: &str| {
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(pair);
    };
    for v in headers.get_all(header::COOKIE).iter() {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let name = pair.split('=').next().unwrap_or("").trim();
            if name == gateway_cookie || is_gateway_aux_cookie(name) || is_qlik_session_cookie(name)
            {
                continue;
            }
            push(pair);
        }
    }
    if let Some((name, value)) = inject {
        push(name);
        kept.push('=');
        kept.push_str(value);
    }
    // `insert` replaces every `Cookie` header the client sent: one map operation, not two.
    match HeaderValue::from_maybe_shared(bytes::Bytes::from(kept)) {
        Ok(v) if !v.is_empty() => {
            headers.insert(header::COOKIE, v);
        }
        _ => {
            headers.remove(header::COOKIE);
        }
    }
}

/// Sets `X-Forwarded-For/Proto/Host` and `Host`.
pub(crate) fn set_forwarding(
    headers: &mut HeaderMap,
    peer: IpAddr,
    proto: &'static str,
    public_host: &HeaderValue,
    upstream_host: &HeaderValue,
) {
    let mut buf = [0u8; 64];
    if let Some(v) = ip_text(peer, &mut buf).and_then(|t| HeaderValue::from_bytes(t).ok()) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    headers.insert(X_FORWARDED_HOST, public_host.clone());
    headers.insert(header::HOST, upstream_host.clone());
}

/// `ip` as text in `buf`. An IPv4 address (nearly every client) is written digit by digit: this
/// runs on every proxied request, and `Display` takes seven formatter calls for one address.
fn ip_text(ip: IpAddr, buf: &mut [u8; 64]) -> Option<&[u8]> {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            Some(&buf[..n])
        }
        // At most 45 characters: formatted on the stack, not into a new String.
        IpAddr::V6(_) => {
            let mut w = &mut buf[..];
            std::io::Write::write_fmt(&mut w, format_args!("{ip}")).ok()?;
            let n = 64 - w.len();
            Some(&buf[..n])
        }
    }
}

/// Why a `Set-Cookie` from Qlik was not passed on (see [`scope_set_cookie`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DroppedCookie {
    /// Not a `Set-Cookie` value a browser would accept.
    Malformed,
    /// Named like one of the gateway's own cookies: it would replace or shadow the user's
    /// gateway session.
    GatewayName,
    /// A `__Host-` cookie must be origin-wide (`Path=/`): on the gateway that is beyond Qlik.
    HostPrefix,
    /// Scoped to a Qlik path outside the virtual proxy, which the browser cannot reach here.
    OutsideVirtualProxy,
}

impl DroppedCookie {
    /// For the log line.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "it is not a valid Set-Cookie",
            Self::GatewayName => "it has the name of a gateway cookie",
            Self::HostPrefix => "a __Host- cookie would apply to the whole gateway origin",
            Self::OutsideVirtualProxy => "its Path is outside the virtual proxy",
        }
    }
}

/// A `Set-Cookie` from Qlik (not a Qlik session cookie) as the browser gets it: Qlik's cookies
/// are only for Qlik's paths, so the path is mapped from Qlik's (`prefix`, the virtual proxy) to
/// the gateway's (`mount`); `Path=/` and no path become the mount, never the whole origin, where
/// the mashup and `/_gateway` live. `Domain` goes (it names Qlik's host, or widens the cookie to
/// sibling hosts of the gateway).
pub(crate) fn scope_set_cookie(
    set_cookie: &str,
    gateway_cookie: &str,
    prefix: &str,
    mount: &str,
) -> Result<String, DroppedCookie> {
    let mut c = cookie::Cookie::parse(set_cookie).map_err(|_| DroppedCookie::Malformed)?;
    let bare = |n: &str| -> String {
        let n = n.strip_prefix("__Host-").unwrap_or(n);
        n.strip_prefix("__Secure-")
            .unwrap_or(n)
            .to_ascii_lowercase()
    };
    let name = bare(c.name());
    if name == bare(gateway_cookie) || name.starts_with("qlik-gateway-") {
        return Err(DroppedCookie::GatewayName);
    }
    if c.name().starts_with("__Host-") {
        return Err(DroppedCookie::HostPrefix);
    }
    let path = match c.path() {
        Some(p) if p.starts_with('/') => {
            if let Some(mapped) = map_prefix(p, prefix, mount) {
                if mapped.len() == mount.len() + 1 {
                    mount.to_string()
                } else {
                    mapped
                }
            } else if path_matches(prefix, p) {
                mount.to_string()
            } else {
                return Err(DroppedCookie::OutsideVirtualProxy);
            }
        }
        // No (or a relative) Path: the browser would take the request's directory, which for
        // a request at the mount itself is `/`.
        _ => mount.to_string(),
    };
    c.set_path(path);
    c.unset_domain();
    Ok(c.to_string())
}

/// RFC 6265 §5.1.4: whether a cookie with `cookie_path` is sent for `request_path`.
fn path_matches(request_path: &str, cookie_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/')
                || request_path.as_bytes().get(cookie_path.len()) == Some(&b'/')))
        || (request_path.is_empty() && cookie_path == "/")
}

/// Rewrites a `Location` that points into the virtual proxy on the Qlik proxy to the same place on
/// the gateway. `upstream_origin` is `https://qlik:443` serialised as browsers do; `prefix` is
/// `/mashup` or ``; `mount` is where the gateway shows Qlik.
pub(crate) fn rewrite_location(
    location: &str,
    upstream_origin: &str,
    prefix: &str,
    public_origin: &str,
    mount: &str,
) -> Option<String> {
    let path = if let Some(rest) = strip_prefix_ci(location, upstream_origin) {
        if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) {
            return None;
        }
        rest
    } else if location.starts_with('/') && !location.starts_with("//") {
        // A path-absolute Location needs rewriting only when the mount differs from the prefix.
        if prefix == mount {
            return None;
        }
        let mapped = map_prefix(location, prefix, mount)?;
        return Some(mapped);
    } else {
        return None;
    };
    let path = if path.is_empty() { "/" } else { path };
    let mapped = map_prefix(path, prefix, mount).unwrap_or_else(|| path.to_string());
    Some(format!("{public_origin}{mapped}"))
}

fn map_prefix(path: &str, prefix: &str, mount: &str) -> Option<String> {
    let rest = path.strip_prefix(prefix)?;
    if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) {
        return None;
    }
    Some(format!("{mount}{rest}"))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_set_holds_every_hop_by_hop_name() {
        let set = HOP_BY_HOP
            .iter()
            .fold(0u32, |set, h| set | 1 << h.as_str().len());
        assert_eq!(set, HOP_BY_HOP_LENGTHS);
    }

    #[test]
    fn a_copy_with_room_keeps_every_value_in_order_and_takes_more_without_growing() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.append(header::ACCEPT, HeaderValue::from_static("x"));
        h.append(header::ACCEPT, HeaderValue::from_static("y"));
        h.insert("x-custom", HeaderValue::from_static("z"));
        let mut c = clone_with_room(&h, ADDED_UPSTREAM);
        assert_eq!(c, h);
        let order = |m: &HeaderMap| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.to_str().unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(order(&c), order(&h));
        let room = c.capacity();
        for (i, name) in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
            .into_iter()
            .enumerate()
        {
            c.insert(name, HeaderValue::from(i));
        }
        c.insert(header::COOKIE, HeaderValue::from_static("q=1"));
        c.insert(header::HOST, HeaderValue::from_static("qlik"));
        c.insert("x-qlik-user", HeaderValue::from_static("u"));
        assert_eq!(c.capacity(), room);
    }

    #[test]
    fn forwarded_for_is_the_peer_address_as_display_writes_it() {
        let mut buf = [0u8; 64];
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "9.99.100.255",
            "192.168.1.109",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.128",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            let text = ip_text(addr, &mut buf).unwrap();
            assert_eq!(std::str::from_utf8(text).unwrap(), addr.to_string(), "{ip}");
        }
        for octets in [[1, 2, 3, 4], [255, 255, 255, 255], [100, 10, 0, 199]] {
            let addr = IpAddr::from(octets);
            let text = ip_text(addr, &mut buf).unwrap();
            assert_eq!(std::str::from_utf8(text).unwrap(), addr.to_string());
        }
    }

    #[test]
    fn cookies_lose_gateway_and_qlik_session_and_gain_injected() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            "a=1; qlik-gateway=secret; X-Qlik-Session-mashup=evil"
                .parse()
                .unwrap(),
        );
        h.append(
            header::COOKIE,
            "x-qlik-session=evil2; b=2; qlik-gateway-oidc=s; __Host-qlik-gateway-negotiate=n"
                .parse()
                .unwrap(),
        );
        rewrite_cookies(
            &mut h,
            "qlik-gateway",
            Some(("X-Qlik-Session-mashup", "good")),
        );
        assert_eq!(
            h.get(header::COOKIE).unwrap(),
            "a=1; b=2; X-Qlik-Session-mashup=good"
        );
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);

        // Every listed name, in any case, over several Connection headers; `close` names a
        // header only when there is one.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, "close".parse().unwrap());
        h.append(header::CONNECTION, " Upgrade ,X-Two,,".parse().unwrap());
        for name in &HOP_BY_HOP {
            h.append(name, "v".parse().unwrap());
        }
        h.insert("x-two", "2".parse().unwrap());
        h.insert("close", "c".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["accept"]);

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["accept"]);
    }

    #[test]
    fn identity_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-qlik-user",
            "UserDirectory=X; UserId=admin".parse().unwrap(),
        );
        h.insert("X-Qlik-Security", "x".parse().unwrap());
        h.insert("hdr-usr", "X\\admin".parse().unwrap());
        h.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        h.insert("X-Qlik-Xrfkey", "abcdefghijklmnop".parse().unwrap());
        remove_identity_headers(&mut h, &[HeaderName::from_static("hdr-usr")]);
        assert_eq!(h.len(), 2);
        assert_eq!(h["accept"], "*/*");
        assert_eq!(h["x-qlik-xrfkey"], "abcdefghijklmnop");
    }

    #[test]
    fn locations_into_the_virtual_proxy_are_rewritten() {
        let up = "https://qlik.corp:4443";
        let pubo = "https://bi.corp";
        assert_eq!(
            rewrite_location(
                "https://qlik.corp:4443/mashup/hub/",
                up,
                "/mashup",
                pubo,
                "/mashup"
            )
            .as_deref(),
            Some("https://bi.corp/mashup/hub/")
        );
        assert_eq!(
            rewrite_location(
                "https://QLIK.corp:4443/mashup?x=1",
                up,
                "/mashup",
                pubo,
                "/q"
            )
            .as_deref(),
            Some("https://bi.corp/q?x=1")
        );
        assert_eq!(
            rewrite_location("/mashup/hub", up, "/mashup", pubo, "/q").as_deref(),
            Some("/q/hub")
        );
        assert_eq!(
            rewrite_location("/mashup/hub", up, "/mashup", pubo, "/mashup"),
            None
        );
        assert_eq!(
            rewrite_location("https://other/x", up, "/mashup", pubo, "/mashup"),
            None
        );
        assert_eq!(
            rewrite_location(
                "https://qlik.corp:4443.evil/x",
                up,
                "/mashup",
                pubo,
                "/mashup"
            ),
            None
        );
    }

    #[test]
    fn qlik_cookies_are_scoped_to_the_mount() {
        let scope =
            |sc: &str, prefix: &str| scope_set_cookie(sc, "qlik-gateway", prefix, "/mashup");
        let ok = |sc: &str, prefix: &str| scope(sc, prefix).unwrap();
        assert_eq!(ok("pref=1; Path=/", ""), "pref=1; Path=/mashup");
        assert_eq!(ok("pref=1; Path=/vp/", "/vp"), "pref=1; Path=/mashup");
        assert_eq!(ok("pref=1; Path=/", "/vp"), "pref=1; Path=/mashup");
        assert_eq!(
            ok("pref=1; Path=/vp/hub", "/vp"),
            "pref=1; Path=/mashup/hub"
        );
        assert_eq!(ok("pref=1; Path=/hub", ""), "pref=1; Path=/mashup/hub");
        assert_eq!(ok("pref=1", "/vp"), "pref=1; Path=/mashup");
        let d = ok(
            "pref=1; Domain=qlik.internal; Path=/vp; Secure; HttpOnly",
            "/vp",
        );
        assert!(!d.to_ascii_lowercase().contains("domain"), "{d}");
        assert!(
            d.contains("Path=/mashup") && d.contains("Secure") && d.contains("HttpOnly"),
            "{d}"
        );
        for name in [
            "qlik-gateway",
            "__Host-qlik-gateway",
            "qlik-gateway-oidc",
            "Qlik-Gateway",
        ] {
            assert_eq!(
                scope(&format!("{name}=x; Path=/"), ""),
                Err(DroppedCookie::GatewayName)
            );
        }
        assert_eq!(
            scope("__Host-x=1; Path=/; Secure", ""),
            Err(DroppedCookie::HostPrefix)
        );
        assert_eq!(
            scope("x=1; Path=/other", "/vp"),
            Err(DroppedCookie::OutsideVirtualProxy)
        );
        assert_eq!(
            scope("x=1; Path=/v", "/vp"),
            Err(DroppedCookie::OutsideVirtualProxy)
        );
        assert_eq!(scope("no equals sign", ""), Err(DroppedCookie::Malformed));
    }
}
