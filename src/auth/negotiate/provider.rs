//! The `negotiate` identity provider: challenge, accept (possibly over several legs), check the
//! service principal, map the client principal to a Qlik user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::response::Response;
use base64::Engine;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use libgssapi::context::ServerCtx;

use super::acceptor::{Acceptor, LoadError, Required};
use super::error::{Failure, NegotiateError};
use super::gss::{self, Step};
use super::keytab;
use super::mapping::{MappingError, PrincipalMap};
use super::token;
use crate::auth::config::NegotiateConfig;
use crate::auth::{AuthError, IdentityProvider, LoginOutcome, LoginRequest};

/// How long an unfinished multi-leg exchange waits for the client's next token.
const PENDING_TTL: Duration = Duration::from_secs(60);
/// Unfinished exchanges kept at most; beyond that new multi-leg logins are refused, not memory.
const PENDING_MAX: usize = 10_000;

/// Kerberos/SPNEGO login against the configured keytab.
pub(crate) struct Negotiate {
    acceptor: Arc<Acceptor>,
    /// Where the replay cache keeps its records, for the message when that disk is full.
    replay_cache_file: String,
    service_principal: Option<String>,
    public_host: String,
    map: PrincipalMap,
    pending: Pending,
    pending_cookie: &'static str,
    secure: bool,
}

impl Negotiate {
    /// Loads the keytab (blocking) and starts watching it for replacement.
    pub(crate) fn new(cfg: &NegotiateConfig, secure: bool) -> Result<Self, LoadError> {
        let required = match &cfg.service_principal {
            Some(p) => Required::Principal(p.clone()),
            None => Required::HttpHost(cfg.public_host.clone()),
        };
        let acceptor = Acceptor::load(&cfg.keytab, cfg.replay_cache.as_deref(), required)?;
        acceptor.watch(cfg.keytab_poll_interval);
        tracing::info!(
            keytab = %cfg.keytab.display(),
            keys = %keytab::principal_list(&acceptor.keys()),
            service_principal = cfg.service_principal.as_deref().unwrap_or("HTTP/<request host>"),
            "Kerberos login ready"
        );
        Ok(Self {
            acceptor,
            replay_cache_file: gss::replay_cache_file(cfg.replay_cache.as_deref()),
            service_principal: cfg.service_principal.clone(),
            public_host: cfg.public_host.clone(),
            map: cfg.map.clone(),
            pending: Pending::default(),
            pending_cookie: if secure {
                "__Host-qlik-gateway-negotiate"
            } else {
                "qlik-gateway-negotiate"
            },
            secure,
        })
    }

    /// The ticket must be for the configured principal, or for `HTTP/<host>` where host is the
    /// one the browser asked for or the public one: a ticket for another service that happens to
    /// share the keytab is not a login to this site.
    fn check_service(&self, service: &str, host: Option<&str>) -> Result<(), NegotiateError> {
        if let Some(sp) = &self.service_principal {
            if service.eq_ignore_ascii_case(sp) {
                return Ok(());
            }
            return Err(NegotiateError::new(
                Failure::WrongService,
                format!("the ticket is for {service}; auth.negotiate.service_principal is {sp}"),
            ));
        }
        let ok = keytab::split_service_principal(service).is_some_and(|(s, h, _)| {
            s.eq_ignore_ascii_case("HTTP")
                && (h.eq_ignore_ascii_case(&self.public_host)
                    || host.is_some_and(|want| h.eq_ignore_ascii_case(want)))
        });
        if ok {
            Ok(())
        } else {
            Err(NegotiateError::new(
                Failure::WrongService,
                format!(
                    "the ticket is for {service}, not HTTP/{}{}",
                    host.unwrap_or(&self.public_host),
                    if host.is_some_and(|h| !h.eq_ignore_ascii_case(&self.public_host)) {
                        format!(" or HTTP/{}", self.public_host)
                    } else {
                        String::new()
                    }
                ),
            ))
        }
    }

    fn pending_id(&self, headers: &HeaderMap) -> Option<String> {
        crate::session::cookie::read_named(headers, self.pending_cookie)
    }

    fn pending_cookie(&self, id: &str, max_age: u64) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{}={id}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
            self.pending_cookie
        ))
        .ok()
    }
}

#[async_trait]
impl IdentityProvider for Negotiate {
    fn name(&self) -> &'static str {
        "negotiate"
    }

    async fn login(&self, req: &LoginRequest<'_>) -> Result<LoginOutcome, AuthError> {
        let Some(token) = token::read(req.headers)? else {
            return Ok(LoginOutcome::Challenge(challenge(None, None)));
        };
        let pending_id = self.pending_id(req.headers);
        let ctx = match &pending_id {
            Some(id) => {
                let ctx = self.pending.take(id);
                if ctx.is_none() {
                    // A stale cookie with a first-leg token is a fresh login; GSSAPI tells.
                    tracing::debug!("Negotiate continuation cookie without a pending exchange");
                }
                ctx
            }
            None => None,
        };
        let had_pending = ctx.is_some();
        let keys = self.acceptor.current();
        let step = tokio::task::spawn_blocking(move || gss::step(&keys.cred, ctx, &token))
            .await
            .map_err(|e| NegotiateError::new(Failure::Other, format!("accept task failed: {e}")))?;
        let lost_exchange = pending_id.is_some() && !had_pending;
        let step = step.map_err(|mut e| {
            if lost_exchange && e.kind == Failure::NotKerberos {
                // The token continues an exchange this gateway no longer has (it restarted, or
                // the continuation waited too long): a fresh login fixes it.
                e.kind = Failure::ExchangeLost;
            }
            if e.kind == Failure::ReplayCacheFull {
                e.detail = format!("{}; replay cache {}", e.detail, self.replay_cache_file);
            }
            if matches!(
                e.kind,
                Failure::NoKey | Failure::Keytab | Failure::StaleKey | Failure::WrongEnctype
            ) {
                e.detail = format!(
                    "{}; keytab {} has keys for {}",
                    e.detail,
                    self.acceptor.keytab().display(),
                    keytab::principal_list(&self.acceptor.keys())
                );
            }
            e
        })?;
        match step {
            Step::Continue { ctx, reply } => {
                let id = self.pending.put(ctx).ok_or_else(|| {
                    NegotiateError::new(Failure::Other, "too many unfinished Negotiate exchanges")
                })?;
                Ok(LoginOutcome::Challenge(challenge(
                    Some(&reply),
                    self.pending_cookie(&id, PENDING_TTL.as_secs()),
                )))
            }
            Step::Done {
                client,
                service,
                reply,
            } => {
                self.check_service(&service, req.host)?;
                let identity = self.map.identity(&client).map_err(|e| {
                    let kind = match e {
                        MappingError::UnmappedRealm { .. } => Failure::UnmappedRealm,
                        MappingError::Malformed(_) | MappingError::Instance(_) => {
                            Failure::UnusablePrincipal
                        }
                    };
                    NegotiateError::new(kind, e.to_string())
                })?;
                tracing::debug!(principal = %client, service = %service, "Kerberos login accepted");
                let mut extra = HeaderMap::new();
                if let Some(r) = reply {
                    if let Some(v) = negotiate_header(&r) {
                        extra.insert(header::WWW_AUTHENTICATE, v);
                    }
                }
                if let Some(id) = pending_id {
                    if let Some(v) = self.pending_cookie(&id, 0) {
                        extra.append(header::SET_COOKIE, v);
                    }
                }
                Ok(LoginOutcome::Authenticated {
                    identity,
                    headers: extra,
                    return_to: None,
                    id_token: None,
                })
            }
        }
    }
}

impl From<NegotiateError> for AuthError {
    fn from(e: NegotiateError) -> Self {
        AuthError::Negotiate(e)
    }
}

fn negotiate_header(token: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "Negotiate {}",
        base64::engine::general_purpose::STANDARD.encode(token)
    ))
    .ok()
}

/// `401` asking for (more) Negotiate. The body is what a person sees when the browser does not
/// answer the challenge, so it says what to check.
fn challenge(token: Option<&[u8]>, cookie: Option<HeaderValue>) -> Response {
    let www = match token {
        Some(t) if !t.is_empty() => negotiate_header(t),
        _ => None,
    }
    .unwrap_or(HeaderValue::from_static("Negotiate"));
    let mut resp = crate::html::page(StatusCode::UNAUTHORIZED, CHALLENGE_PAGE);
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, www);
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

const CHALLENGE_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Signing in with Windows</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;color:#222}</style>
</head><body>
<h1>Signing in with Windows…</h1>
<p>This site signs you in with your Windows account. If you can read this, your browser did not send a Windows (Kerberos) sign-in. Please check:</p>
<ul>
<li>You opened the site by its full name, as your administrator gave it, not by an IP address or another alias.</li>
<li>Your computer is joined to the company domain and you signed in to Windows with your domain account.</li>
<li>The site is in the browser's <em>Local intranet</em> zone (Internet Options → Security), or on Chrome/Edge's <code>AuthServerAllowlist</code> policy; Firefox needs it in <code>network.negotiate-auth.trusted-uris</code>.</li>
<li>Your computer's clock is correct (Kerberos allows about 5 minutes of difference).</li>
</ul>
<p><a href="/_gateway/login">Try again</a></p>
</body></html>
"#;

/// Unfinished multi-leg exchanges, by the random id in the continuation cookie.
#[derive(Default)]
struct Pending {
    map: Mutex<HashMap<String, (Instant, ServerCtx)>>,
}

impl Pending {
    fn take(&self, id: &str) -> Option<ServerCtx> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id)
            .filter(|(at, _)| at.elapsed() < PENDING_TTL)
            .map(|(_, ctx)| ctx)
    }

    fn put(&self, ctx: ServerCtx) -> Option<String> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (at, _)| at.elapsed() < PENDING_TTL);
        if map.len() >= PENDING_MAX {
            return None;
        }
        let id = crate::session::id::SessionId::generate()
            .as_cookie_value()
            .to_string();
        map.insert(id.clone(), (Instant::now(), ctx));
        Some(id)
    }
}
