//! The gateway's own endpoints under `/_gateway/`, and the checks every other request goes through.

pub(crate) mod endpoints;
pub(crate) mod return_to;

use std::sync::Arc;

use axum::response::{IntoResponse, Redirect, Response};
use http::{header, HeaderMap, Uri};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::error::GatewayError;
use crate::session::{GatewaySession, SessionId};
use crate::state::AppState;

/// Whether the request is a browser navigation (gets a redirect or an HTML page) rather than a
/// program (gets 401 JSON it can act on).
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    const SEC_FETCH_MODE: http::HeaderName = http::HeaderName::from_static("sec-fetch-mode");
    if let Some(mode) = headers.get(SEC_FETCH_MODE).and_then(|v| v.to_str().ok()) {
        return mode.eq_ignore_ascii_case("navigate");
    }
    let Some(accept) = headers.get(header::ACCEPT).map(|v| v.as_bytes()) else {
        return false;
    };
    // Asked on every request, answered only for one that fails: a plain scan, since `str::find`
    // sets up a two-way searcher per needle (1.4k instructions a request, callgrind).
    let at = |needle: &[u8]| accept.windows(needle.len()).position(|w| w == needle);
    let html = at(b"text/html");
    let json = at(b"application/json");
    match (html, json) {
        (Some(h), Some(j)) => h < j,
        (Some(_), None) => true,
        _ => false,
    }
}

/// `/_gateway/login?return_to=<path>` for the current request.
pub(crate) fn login_url_for(uri: &Uri) -> String {
    let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!(
        "/_gateway/login?return_to={}",
        utf8_percent_encode(target, NON_ALPHANUMERIC)
    )
}

/// The answer to a request that needs a session and has none: 302 for navigations, 401 JSON otherwise.
pub(crate) fn unauthenticated(uri: &Uri, headers: &HeaderMap, websocket: bool) -> Response {
    let login = login_url_for(uri);
    if !websocket && wants_html(headers) {
        return found(&login);
    }
    GatewayError::Unauthenticated { login_url: login }.respond(false)
}

/// A `302 Found` to `location` (axum's `Redirect::to` is a 303).
pub(crate) fn found(location: &str) -> Response {
    let mut r = Redirect::to(location).into_response();
    *r.status_mut() = http::StatusCode::FOUND;
    r
}

/// The live gateway session of the request, touched (idle timer reset).
pub(crate) async fn current_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(SessionId, Arc<GatewaySession>)>, GatewayError> {
    let Some(id) = state.cookies.read(headers) else {
        return Ok(None);
    };
    Ok(state.store.get_and_touch(&id).await?.map(|s| (id, s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn html_is_wanted_when_it_comes_before_json_or_the_browser_navigates() {
        assert!(wants_html(&accept(
            "text/html,application/xhtml+xml,*/*;q=0.8"
        )));
        assert!(wants_html(&accept("text/html, application/json")));
        assert!(!wants_html(&accept("application/json, text/html")));
        assert!(!wants_html(&accept("application/json, text/plain, */*")));
        assert!(!wants_html(&accept("")));
        assert!(!wants_html(&HeaderMap::new()));
        let mut nav = accept("application/json");
        nav.insert("sec-fetch-mode", "navigate".parse().unwrap());
        assert!(wants_html(&nav));
        let mut cors = accept("text/html");
        cors.insert("sec-fetch-mode", "cors".parse().unwrap());
        assert!(!wants_html(&cors));
    }
}
