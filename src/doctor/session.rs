//! The probe user's Qlik session, made as the gateway makes it in the configured mode (a session
//! from QPS, a redeemed ticket, or the user header), and whether the virtual proxy recognises it
//! under the configured session cookie name.

use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;

use super::node::{vp_name, vp_qmc, Probe};
use super::report::{Check, Report};
use crate::config::QlikMode;
use crate::identity::Identity;
use crate::net::error_chain::{root_cause, tls_cause};
use crate::qlik::config::HeaderAuth;
use crate::qlik::cookies::set_session_cookies;
use crate::qlik::proxy_api;
use crate::qlik::qps::field;

/// The most of a `/qps/user` reply read (a user's name and attributes).
const USER_REPLY_LIMIT: usize = 64 * 1024;

/// What `/{vp}/qps/user` said.
enum UserAnswer {
    Authenticated(String),
    Inactive(String),
    NotFound,
    Error(String),
}

/// Creates the probe user's Qlik session as the gateway would and checks that the virtual proxy
/// recognises it. `Some(cookie)`: accepted (cookie `None` in header mode without a cookie).
/// `created`: the session to delete afterwards.
pub(super) async fn probe(
    p: &Probe<'_>,
    identity: &Identity,
    created: &mut Option<String>,
    r: &mut Report,
) -> Option<Option<String>> {
    let cookie_value = match &p.q.mode {
        QlikMode::Session => {
            let sid = new_session(p, identity, r).await?;
            *created = Some(sid.clone());
            sid
        }
        QlikMode::Ticket => {
            let v = ticket_cookie(p, identity, r).await?;
            *created = Some(v.clone());
            v
        }
        QlikMode::Header(h) => return header_user(p, identity, h, r).await.then_some(None),
    };
    cookie_recognised(p, &cookie_value, r)
        .await
        .then_some(Some(cookie_value))
}

/// Session mode: a session created at QPS under a new id; the id (the cookie value).
async fn new_session(p: &Probe<'_>, identity: &Identity, r: &mut Report) -> Option<String> {
    let user = format!("{}\\{}", identity.user_directory, identity.user_id);
    // GUID-shaped, like the session ids Qlik makes itself (and the gateway).
    let sid = uuid::Uuid::new_v4().to_string();
    match p.node.qps.create_session(identity, &sid).await {
        Ok(()) => {
            r.push(Check::ok(format!(
                "QPS created a session for the probe user {user}"
            )));
            Some(sid)
        }
        Err(e) => {
            r.push(
                Check::fail(format!("creating a session for {user}"), e.to_string())
                    .qmc(format!(
                        "{} must exist and be linked to this node's proxy (Associated items → Proxies)",
                        vp_qmc(p.q)
                    ))
                    .gw("check qlik.virtual_proxy"),
            );
            None
        }
    }
}

/// Header mode: whether the virtual proxy authenticates the user by the header alone.
async fn header_user(p: &Probe<'_>, identity: &Identity, h: &HeaderAuth, r: &mut Report) -> bool {
    let Some(v) = h.value(&identity.user_directory, &identity.user_id) else {
        r.push(Check::fail(
            "user header",
            format!(
                "{}\\{} cannot be sent in a header",
                identity.user_directory, identity.user_id
            ),
        ));
        return false;
    };
    let mut headers = HeaderMap::new();
    headers.insert(h.name.clone(), v);
    match qps_user(p, headers, r).await {
        UserAnswer::Authenticated(who) => {
            r.push(accepted(p, &format!("authenticates {who} by its header")));
            true
        }
        other => {
            r.push(common_failure(p, other).unwrap_or_else(|| {
                Check::fail(
                    format!("{} did not accept the user header", vp_name(p.q)),
                    "the virtual proxy is not a header-authentication one, or its header name or pattern differs from qlik.mode",
                )
                .qmc(format!("{} → Authentication → Header authentication static/dynamic user directory, Header authentication header name", vp_qmc(p.q)))
            }));
            false
        }
    }
}

/// Whether the virtual proxy takes `cookie_value` under the configured session cookie name.
async fn cookie_recognised(p: &Probe<'_>, cookie_value: &str, r: &mut Report) -> bool {
    let name = p.q.session_cookie.as_str();
    match qps_user(p, cookie(name, cookie_value), r).await {
        UserAnswer::Authenticated(who) => {
            r.push(accepted(
                p,
                &format!("accepts the session cookie {name} (/qps/user: {who})"),
            ));
            true
        }
        UserAnswer::Inactive(said) => {
            let why = not_recognised(p, cookie_value, &said, r).await;
            r.push(why);
            false
        }
        other => {
            r.push(
                common_failure(p, other)
                    .unwrap_or_else(|| Check::fail("probe session", "unexpected answer")),
            );
            false
        }
    }
}

/// The virtual proxy at the node did what `how` says.
fn accepted(p: &Probe<'_>, how: &str) -> Check {
    Check::ok(format!("{} at {} {how}", vp_name(p.q), p.node.proxy_url))
}

/// Why the proxy did not take the cookie: over plain http, the `-HTTP` suffix Qlik adds to the
/// name if the suffixed name works; another name or virtual proxy otherwise.
async fn not_recognised(p: &Probe<'_>, cookie_value: &str, said: &str, r: &mut Report) -> Check {
    let q = p.q;
    let name = q.session_cookie.as_str();
    let http = p.node.proxy_url.scheme() == "http";
    let suffixed = format!("{name}-HTTP");
    let what = format!(
        "{} did not recognise the session cookie {name} ({said})",
        vp_name(q)
    );
    let may_need_suffix = http && !name.ends_with("-HTTP");
    if may_need_suffix {
        let again = qps_user(p, cookie(&suffixed, cookie_value), r).await;
        if matches!(again, UserAnswer::Authenticated(_)) {
            return Check::fail(
                what,
                format!("qlik.proxy_url is plain http, and over http Qlik appends -HTTP to the session cookie header name: the proxy expects {suffixed}"),
            )
            .qmc(format!("nothing to change under {} → Session cookie header name (Qlik adds -HTTP itself over http); to do without the suffix, serve the proxy over https", vp_qmc(q)))
            .gw(format!("set qlik.session_cookie = \"{suffixed}\", or use https in qlik.proxy_url"));
        }
    }
    let hint = if may_need_suffix {
        format!(" (over plain http Qlik may expect {suffixed}: the -HTTP suffix)")
    } else {
        String::new()
    };
    Check::fail(
        what,
        format!("the virtual proxy's session cookie header name is not {name}{hint}, or qlik.virtual_proxy names another virtual proxy than the one whose sessions QPS created"),
    )
    .qmc(format!("{} → Session cookie header name: make it and qlik.session_cookie the same", vp_qmc(q)))
    .gw("set qlik.session_cookie to the virtual proxy's Session cookie header name")
}

/// A `Cookie` header with the one cookie `name=value`.
fn cookie(name: &str, value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("{name}={value}")) {
        h.insert(header::COOKIE, v);
    }
    h
}

/// `GET /{vp}/qps/user` with `headers` (the user's credentials): who the proxy takes the user for.
async fn qps_user(p: &Probe<'_>, mut headers: HeaderMap, r: &mut Report) -> UserAnswer {
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let resp = match proxy_api::get(p.upstream, p.node, p.q, "/qps/user", &[], headers).await {
        Ok(r) => r,
        Err(e) => {
            let why = tls_cause(&e)
                .map(|t| format!("TLS: {t}"))
                .unwrap_or_else(|| root_cause(&e));
            return UserAnswer::Error(why);
        }
    };
    r.saw_date("the Qlik proxy", resp.headers());
    let status = resp.status();
    if status == StatusCode::NOT_FOUND {
        return UserAnswer::NotFound;
    }
    if status.is_redirection() || status == StatusCode::UNAUTHORIZED {
        return UserAnswer::Inactive(format!("HTTP {status} (a login redirect)"));
    }
    let body = tokio::time::timeout(
        p.q.qps_timeout,
        axum::body::to_bytes(axum::body::Body::new(resp.into_body()), USER_REPLY_LIMIT),
    )
    .await;
    let body: Value = match body {
        Ok(Ok(b)) => match serde_json::from_slice(&b) {
            Ok(v) => v,
            Err(_) => {
                return UserAnswer::Error(format!(
                    "HTTP {status}, not JSON: error decoding response body"
                ))
            }
        },
        Ok(Err(e)) => return UserAnswer::Error(format!("HTTP {status}: {}", root_cause(&e))),
        Err(_) => {
            return UserAnswer::Error(format!(
                "HTTP {status}: no body within {:?}",
                p.q.qps_timeout
            ))
        }
    };
    let get = |k: &str| field(&body, k).and_then(Value::as_str);
    match (get("userId"), get("userDirectory")) {
        (Some(id), Some(dir)) => UserAnswer::Authenticated(format!("{dir}\\{id}")),
        _ => UserAnswer::Inactive(format!(
            "\"session\": \"{}\"",
            get("session").unwrap_or("?")
        )),
    }
}

/// Checks for answers that mean the proxy or the prefix is wrong; `None` for "inactive".
fn common_failure(p: &Probe<'_>, a: UserAnswer) -> Option<Check> {
    let q = p.q;
    match a {
        UserAnswer::NotFound => Some(
            Check::fail(
                format!(
                    "{}{}/qps/user answered 404",
                    p.node.proxy_url.as_str().trim_end_matches('/'),
                    q.upstream_prefix()
                ),
                format!(
                    "no virtual proxy with the prefix \"{}\" on this proxy",
                    q.virtual_proxy
                ),
            )
            .qmc(format!(
                "{} → Prefix, and Associated items → Proxies must include this node",
                vp_qmc(q)
            ))
            .gw("set qlik.virtual_proxy to the virtual proxy's prefix"),
        ),
        UserAnswer::Error(e) => Some(
            Check::fail(format!("Qlik proxy {} unreachable", p.node.proxy_url), e)
                .qmc("Proxies → this node → Service listen port HTTPS (443) / HTTP (80)")
                .gw("check qlik.proxy_url, and qlik.ca_cert for the proxy's certificate"),
        ),
        _ => None,
    }
}

/// Ticket mode: a ticket from QPS redeemed at the virtual proxy as the gateway redeems it; the
/// session cookie it sets.
async fn ticket_cookie(p: &Probe<'_>, identity: &Identity, r: &mut Report) -> Option<String> {
    let q = p.q;
    let ticket = match p.node.qps.request_ticket(identity).await {
        Ok(t) => t,
        Err(e) => {
            r.push(
                Check::fail("requesting a ticket for the probe user", e.to_string()).qmc(format!(
                    "{} must exist and be linked to this node's proxy",
                    vp_qmc(q)
                )),
            );
            return None;
        }
    };
    let resp = match proxy_api::redeem_ticket(p.upstream, p.node, q, &ticket).await {
        Ok(r) => r,
        Err(e) => {
            r.push(
                common_failure(p, UserAnswer::Error(root_cause(&e)))
                    .unwrap_or_else(|| Check::fail("ticket redemption", "unreachable")),
            );
            return None;
        }
    };
    r.saw_date("the Qlik proxy", resp.headers());
    let set = set_session_cookies(resp.headers(), &q.session_cookie);
    if let Some(v) = set.ours {
        r.push(Check::ok(format!(
            "the ticket was redeemed; the proxy set {}",
            q.session_cookie
        )));
        return Some(v);
    }
    let status = resp.status();
    if status == StatusCode::NOT_FOUND {
        r.push(common_failure(p, UserAnswer::NotFound).unwrap_or_else(|| Check::fail("", "")));
        return None;
    }
    r.push(match set.other {
        Some(n) => Check::fail(
            format!("the proxy set the session cookie {n}, not {}", q.session_cookie),
            format!("the virtual proxy's session cookie header name is {n}{}", if n.ends_with("-HTTP") { " (Qlik appends -HTTP over plain http)" } else { "" }),
        )
        .qmc(format!("{} → Session cookie header name", vp_qmc(q)))
        .gw(format!("set qlik.session_cookie = \"{n}\"")),
        None => Check::fail(
            format!("redeeming a ticket at {} set no session cookie (HTTP {status})", vp_name(q)),
            "the virtual proxy does not accept tickets (not ticket authentication), or the prefix is wrong",
        )
        .qmc(format!("{} → Authentication method: Ticket", vp_qmc(q))),
    });
    None
}
