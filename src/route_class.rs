//! What kind of request this is, decided once per request from its path and headers: the
//! server labels its metrics with it and the router dispatches on it.

use http::header::{self, HeaderMap};

/// What kind of request: the label of the HTTP metrics. Derived from the path (never the path
/// itself: that would be one series per URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// `/_gateway/*`: login, logout, me, health, metrics.
    Gateway,
    /// Under `qlik.mount`, plain HTTP.
    Qlik,
    /// Under `qlik.mount`, a websocket upgrade (the engine).
    Websocket,
    /// Everything else: the mashup (its files, or its dev server).
    Mashup,
}

impl RouteClass {
    /// Every class, in the order the metrics index them.
    pub const ALL: [RouteClass; 4] = [Self::Gateway, Self::Qlik, Self::Websocket, Self::Mashup];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Qlik => "qlik",
            Self::Websocket => "websocket",
            Self::Mashup => "mashup",
        }
    }

    /// The class of a request for `path` with `headers`, `mount` being `qlik.mount`.
    pub fn of(path: &str, mount: &str, headers: &http::HeaderMap) -> Self {
        if path.starts_with("/_gateway/") {
            Self::Gateway
        } else if under_mount(path, mount) {
            if is_upgrade(headers) {
                Self::Websocket
            } else {
                Self::Qlik
            }
        } else {
            Self::Mashup
        }
    }
}

/// Whether the request asks for a websocket upgrade.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    let conn_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    let ws = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    conn_upgrade && ws
}

/// Whether `path` is `mount` or below it.
pub(crate) fn under_mount(path: &str, mount: &str) -> bool {
    path == mount || path.strip_prefix(mount).is_some_and(|r| r.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_classes_come_from_the_path_never_the_path_itself() {
        let plain = http::HeaderMap::new();
        let mut upgrade = http::HeaderMap::new();
        upgrade.insert(http::header::CONNECTION, "Upgrade".parse().unwrap());
        upgrade.insert(http::header::UPGRADE, "websocket".parse().unwrap());
        let of = |p: &str, h: &http::HeaderMap| RouteClass::of(p, "/mashup", h);
        assert_eq!(of("/_gateway/login", &plain), RouteClass::Gateway);
        assert_eq!(of("/_gateway/metrics", &upgrade), RouteClass::Gateway);
        assert_eq!(of("/mashup/qrs/about", &plain), RouteClass::Qlik);
        assert_eq!(of("/mashup", &plain), RouteClass::Qlik);
        assert_eq!(of("/mashup/app/x", &upgrade), RouteClass::Websocket);
        assert_eq!(of("/mashupx", &plain), RouteClass::Mashup);
        assert_eq!(of("/", &plain), RouteClass::Mashup);
        assert_eq!(of("/@vite/client", &upgrade), RouteClass::Mashup);
        assert_eq!(of("/_gateway", &plain), RouteClass::Mashup);
    }
}
