//! `oidc`: the gateway as an OpenID Connect relying party (ADFS, Entra ID, Keycloak, …):
//! authorization code flow with PKCE, `state` and `nonce`, the ID token validated in full, its
//! claims mapped to the Qlik user and session attributes. Qlik never sees the IdP.

pub(crate) mod claims;
pub(crate) mod client_auth;
pub(crate) mod error;
mod idp;
mod pending;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::response::IntoResponse;
use http::{header, HeaderMap, HeaderValue, StatusCode};

pub(crate) use error::{OidcError, OidcFailure};
use idp::{Discovered, ExchangeError, Http};
use pending::{Pending, PendingLogins};

use crate::auth::config::OidcConfig;
use crate::auth::{AuthError, IdentityProvider, LoginOutcome, LoginRequest};
use crate::session::crypto::KeyMaterial;
use crate::session::GatewaySession;

/// Tokens issued a little in the future or expiring a little in the past are accepted by this
/// much, as clocks of the IdP and the gateway never agree exactly.
const CLOCK_LEEWAY: Duration = Duration::from_secs(60);
/// JWKS refetches on unknown keys at most this often (a forged `kid` must not make the gateway
/// hammer the IdP).
const JWKS_REFRESH_MIN: Duration = Duration::from_secs(10);

/// OIDC login.
pub(crate) struct Oidc {
    cfg: OidcConfig,
    http: Http,
    discovered: RwLock<Option<Arc<Discovered>>>,
    last_error: Mutex<String>,
    refresh: tokio::sync::Mutex<()>,
    pending: PendingLogins,
    cookie: &'static str,
    secure: bool,
}

impl Oidc {
    /// Builds the provider and starts discovery in the background: an IdP that is down at
    /// start-up does not keep the gateway from starting (readyz reports it until it answers).
    /// `shared_keys` seal the login cookie so that any replica holding them completes the login.
    pub(crate) fn new(
        cfg: &OidcConfig,
        secure: bool,
        shared_keys: Option<(&KeyMaterial, &[KeyMaterial])>,
    ) -> Result<Arc<Self>, crate::net::tls::TlsFileError> {
        let me = Arc::new(Self {
            http: Http::new(cfg)?,
            cfg: cfg.clone(),
            discovered: RwLock::new(None),
            last_error: Mutex::new("discovery has not run yet".into()),
            refresh: tokio::sync::Mutex::new(()),
            pending: match shared_keys {
                Some((current, old)) => PendingLogins::with_keys(current, old),
                None => PendingLogins::default(),
            },
            cookie: if secure {
                "__Host-qlik-gateway-oidc"
            } else {
                "qlik-gateway-oidc"
            },
            secure,
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(keep_discovering(Arc::downgrade(&me)));
        }
        Ok(me)
    }

    fn current(&self) -> Option<Arc<Discovered>> {
        self.discovered
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn store(&self, d: Discovered) -> Arc<Discovered> {
        let d = Arc::new(d);
        *self.discovered.write().unwrap_or_else(|e| e.into_inner()) = Some(d.clone());
        d
    }

    fn remember_error(&self, e: &OidcError) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e.detail.clone();
    }

    /// The discovered IdP, discovering now if the background task has not succeeded yet.
    async fn idp(&self) -> Result<Arc<Discovered>, OidcError> {
        if let Some(d) = self.current() {
            return Ok(d);
        }
        // One discovery at a time: while the IdP is down, a burst of logins waits for one
        // attempt instead of each making its own.
        let _one_at_a_time = self.refresh.lock().await;
        if let Some(d) = self.current() {
            return Ok(d);
        }
        match idp::discover(&self.cfg, &self.http).await {
            Ok(d) => {
                tracing::info!(issuer = %self.cfg.issuer, "OIDC discovery succeeded");
                Ok(self.store(d))
            }
            Err(e) => {
                self.remember_error(&e);
                Err(e)
            }
        }
    }

    /// Fetches the JWKS again unless that happened moments ago; returns the IdP to retry with.
    async fn rotate(&self, seen: &Arc<Discovered>) -> Result<Arc<Discovered>, OidcError> {
        let _one_at_a_time = self.refresh.lock().await;
        if let Some(cur) = self.current() {
            let recent = cur
                .jwks_refetched
                .is_some_and(|t| t.elapsed() < JWKS_REFRESH_MIN);
            if !Arc::ptr_eq(&cur, seen) || recent {
                return Ok(cur);
            }
        }
        let d = idp::refresh_jwks(&self.cfg, &self.http, seen).await?;
        tracing::info!(issuer = %self.cfg.issuer, "fetched the IdP's JWKS again (signing key rotation)");
        Ok(self.store(d))
    }

    fn cookie_header(&self, value: &str, max_age: u64) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
            self.cookie
        ))
        .ok()
    }

    fn pending_id(&self, headers: &HeaderMap) -> Option<String> {
        crate::session::cookie::read_named(headers, self.cookie)
    }
}

/// Retries discovery with backoff until it works or the provider is dropped.
async fn keep_discovering(weak: std::sync::Weak<Oidc>) {
    let mut wait = Duration::from_secs(1);
    loop {
        let Some(me) = weak.upgrade() else { return };
        if me.current().is_some() {
            return;
        }
        match idp::discover(&me.cfg, &me.http).await {
            Ok(d) => {
                tracing::info!(issuer = %me.cfg.issuer, "OIDC discovery succeeded");
                me.store(d);
                return;
            }
            Err(e) => {
                tracing::warn!(retry_in = ?wait, "OIDC discovery failed (the gateway keeps trying; logins answer 503 meanwhile): {}", e.detail);
                me.remember_error(&e);
            }
        }
        drop(me);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

#[async_trait]
impl IdentityProvider for Oidc {
    fn name(&self) -> &'static str {
        "oidc"
    }

    async fn login(&self, req: &LoginRequest<'_>) -> Result<LoginOutcome, AuthError> {
        let d = self.idp().await?;
        let (url, state, nonce, verifier) = idp::authorize_url(&d, &self.cfg);
        let id = self.pending.put(Pending::new(
            state,
            nonce,
            verifier,
            req.return_to.to_string(),
        ));
        let mut resp = (
            StatusCode::FOUND,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(url.as_str()) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        if let Some(c) = self.cookie_header(&id, pending::TTL.as_secs()) {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        Ok(LoginOutcome::Challenge(resp))
    }

    async fn callback(&self, req: &LoginRequest<'_>) -> Result<LoginOutcome, AuthError> {
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(req.query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let no_login = || {
            OidcError::new(
                OidcFailure::State,
                "no login in progress for this browser (no or unknown login cookie, or older than 10 minutes)",
            )
        };
        let id = self.pending_id(req.headers).ok_or_else(no_login)?;
        let login = match self.pending.take_matching(&id, param("state")) {
            Err(()) => return Err(no_login().into()),
            Ok(None) => {
                return Err(OidcError::new(
                    OidcFailure::State,
                    "the state parameter does not match the login this browser started",
                )
                .into())
            }
            Ok(Some(login)) => login,
        };
        if let Some(err) = param("error") {
            let desc = param("error_description").unwrap_or_default();
            let kind = if err == "access_denied" {
                OidcFailure::AccessDenied
            } else {
                OidcFailure::IdpError
            };
            return Err(
                OidcError::new(kind, format!("the IdP answered error={err} {desc}")).into(),
            );
        }
        // RFC 9207: an IdP that names itself in the answer must be the one this login went to
        // (a defence against mix-up attacks when several IdPs are in play).
        if let Some(iss) = param("iss") {
            if iss.trim_end_matches('/') != self.cfg.issuer.as_str().trim_end_matches('/') {
                return Err(OidcError::new(
                    OidcFailure::State,
                    format!("the answer names issuer {iss}, not {}", self.cfg.issuer),
                )
                .into());
            }
        }
        let code = param("code").ok_or_else(|| {
            OidcError::new(OidcFailure::IdpError, "the IdP came back without a code")
        })?;
        let d = self.idp().await?;
        let tokens = idp::request_tokens(&d, &self.cfg, &self.http, code, &login.pkce_verifier)
            .await
            .map_err(AuthError::from)?;
        let verified = match idp::verify(&d, &tokens, &login.nonce, CLOCK_LEEWAY) {
            Err(ExchangeError::UnknownKey(why)) => {
                tracing::info!(
                    "ID token signed with a key not in the JWKS ({why}); fetching it again"
                );
                let d = self.rotate(&d).await?;
                idp::verify(&d, &tokens, &login.nonce, CLOCK_LEEWAY).map_err(|e| match e {
                    ExchangeError::Failed(e) => e,
                    ExchangeError::UnknownKey(why) => OidcError::new(
                        OidcFailure::IdToken,
                        format!("ID token failed the signature check: no key in the IdP's JWKS matches it ({why})"),
                    ),
                })?
            }
            Err(ExchangeError::Failed(e)) => return Err(e.into()),
            Ok(v) => v,
        };
        let identity = self
            .cfg
            .claims
            .identity(&verified.claims)
            .map_err(|e| OidcError::new(OidcFailure::Claims, e.to_string()))?;
        let mut headers = HeaderMap::new();
        if let Some(c) = self.cookie_header("", 0) {
            headers.append(header::SET_COOKIE, c);
        }
        Ok(LoginOutcome::Authenticated {
            identity,
            headers,
            return_to: Some(login.return_to),
            id_token: Some(verified.id_token),
        })
    }

    fn logout_url(&self, session: &GatewaySession) -> Option<String> {
        let d = self.current()?;
        idp::logout_url(&d, &self.cfg, session.id_token.as_ref().map(|t| t.expose()))
    }

    fn readiness(&self) -> Result<(), String> {
        if self.current().is_some() {
            Ok(())
        } else {
            Err(format!(
                "OIDC provider {} not discovered yet: {}",
                self.cfg.issuer,
                self.last_error.lock().unwrap_or_else(|p| p.into_inner())
            ))
        }
    }

    fn callback_path(&self) -> Option<&str> {
        Some(&self.cfg.redirect_path)
    }
}

impl From<OidcError> for AuthError {
    fn from(e: OidcError) -> Self {
        AuthError::Oidc(e)
    }
}
