//! The IdP as the gateway uses it: discovery (retried until it works), the JWKS (fetched again
//! when a token names a key it does not have: key rotation), the code exchange and ID token
//! validation, on top of the `openidconnect` crate with the gateway's own reqwest client.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AsyncHttpClient, AuthorizationCode, Client, ClientId, ClientSecret,
    EmptyExtraTokenFields, EndSessionUrl, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    HttpRequest, HttpResponse, IdTokenFields, IssuerUrl, Nonce, PkceCodeVerifier,
    ProviderMetadataWithLogout, RedirectUrl, StandardErrorResponse, StandardTokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{OidcError, OidcFailure};
use crate::auth::config::OidcConfig;

/// Every claim beyond the standard ones (groups, upn, roles, …), kept as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct OtherClaims(Map<String, Value>);
impl AdditionalClaims for OtherClaims {}

type Fields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResponse = StandardTokenResponse<Fields, CoreTokenType>;
type OidcClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// What discovery found, ready to use.
pub(super) struct Discovered {
    client: OidcClient,
    metadata: ProviderMetadataWithLogout,
    pub end_session: Option<EndSessionUrl>,
    /// ID token signature algorithms accepted: what the IdP says it uses, never `none`, and the
    /// HMAC ones only for a client with a secret (the secret is their key).
    allowed_algs: Vec<CoreJwsSigningAlgorithm>,
    /// When the JWKS was last fetched because a token named an unknown key (such refetches are
    /// rate-limited); `None` right after discovery.
    pub jwks_refetched: Option<Instant>,
}

/// A verified login: every claim of the ID token and the raw token (the logout hint).
pub(super) struct Verified {
    pub claims: Map<String, Value>,
    pub id_token: String,
}

/// reqwest behind `openidconnect`'s client trait. Redirects are not followed (an IdP endpoint
/// that redirects is misconfigured, and following would open the gateway to SSRF).
pub(super) struct Http {
    client: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct HttpError(String);

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let resp = self
                .client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| HttpError(crate::net::error_chain::root_cause(&e)))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp
                .bytes()
                .await
                .map_err(|e| HttpError(crate::net::error_chain::root_cause(&e)))?;
            let mut out = http::Response::new(body.to_vec());
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok(out)
        })
    }
}

impl Http {
    pub(super) fn new(cfg: &OidcConfig) -> Result<Self, crate::net::tls::TlsFileError> {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout);
        let roots = match &cfg.ca_cert {
            Some(ca) => crate::net::tls::root_store(ca, true)?,
            None => crate::net::tls::system_roots(),
        };
        let tls = crate::net::tls::client_config(roots, None, &[b"h2", b"http/1.1"])?;
        b = b.use_preconfigured_tls(tls);
        let client = b
            .build()
            .map_err(|e| crate::net::tls::TlsFileError::Rejected {
                path: cfg.ca_cert.clone().unwrap_or_default(),
                reason: e.to_string(),
            })?;
        Ok(Self { client })
    }
}

fn unreachable(what: &str, e: impl std::fmt::Display) -> OidcError {
    OidcError::new(OidcFailure::Unreachable, format!("{what}: {e}"))
}

/// Discovery and the client built from it.
pub(super) async fn discover(cfg: &OidcConfig, http: &Http) -> Result<Discovered, OidcError> {
    let issuer = IssuerUrl::new(cfg.issuer.as_str().trim_end_matches('/').to_string())
        .map_err(|e| unreachable("issuer", e))?;
    let metadata = ProviderMetadataWithLogout::discover_async(issuer.clone(), http)
        .await
        .map_err(|e| {
            unreachable(
                &format!(
                    "discovery at {}/.well-known/openid-configuration",
                    issuer.as_str()
                ),
                error_chain(&e),
            )
        })?;
    build(cfg, metadata)
}

fn build(cfg: &OidcConfig, metadata: ProviderMetadataWithLogout) -> Result<Discovered, OidcError> {
    let end_session = metadata.additional_metadata().end_session_endpoint.clone();
    let allowed_algs = metadata
        .id_token_signing_alg_values_supported()
        .iter()
        .filter(|a| match a {
            CoreJwsSigningAlgorithm::None => false,
            CoreJwsSigningAlgorithm::HmacSha256
            | CoreJwsSigningAlgorithm::HmacSha384
            | CoreJwsSigningAlgorithm::HmacSha512 => matches!(
                cfg.client_auth,
                super::client_auth::ClientAuth::SecretBasic
                    | super::client_auth::ClientAuth::SecretPost
            ),
            _ => true,
        })
        .cloned()
        .collect();
    let redirect = RedirectUrl::new(cfg.redirect_url.clone())
        .map_err(|e| OidcError::new(OidcFailure::IdpError, format!("redirect URL: {e}")))?;
    use super::client_auth::ClientAuth;
    // Only the secret methods hand the secret to the client; with it, `openidconnect` would also
    // accept HMAC-signed ID tokens keyed by it.
    let secret = match cfg.client_auth {
        ClientAuth::SecretBasic | ClientAuth::SecretPost => {
            cfg.client_secret.clone().map(ClientSecret::new)
        }
        _ => None,
    };
    let auth_type = match cfg.client_auth {
        ClientAuth::SecretBasic => openidconnect::AuthType::BasicAuth,
        _ => openidconnect::AuthType::RequestBody,
    };
    let client = OidcClient::from_provider_metadata(
        metadata.clone(),
        ClientId::new(cfg.client_id.clone()),
        secret,
    )
    .set_auth_type(auth_type)
    .set_redirect_uri(redirect);
    Ok(Discovered {
        client,
        metadata,
        end_session,
        allowed_algs,
        jwks_refetched: None,
    })
}

/// Fetches the JWKS again (the IdP rotated its signing key) and returns an updated client.
pub(super) async fn refresh_jwks(
    cfg: &OidcConfig,
    http: &Http,
    d: &Discovered,
) -> Result<Discovered, OidcError> {
    let jwks = CoreJsonWebKeySet::fetch_async(d.metadata.jwks_uri(), http)
        .await
        .map_err(|e| unreachable("JWKS", error_chain(&e)))?;
    let mut fresh = build(cfg, d.metadata.clone().set_jwks(jwks))?;
    fresh.jwks_refetched = Some(Instant::now());
    Ok(fresh)
}

/// The authorization URL for a new login.
pub(super) fn authorize_url(
    d: &Discovered,
    cfg: &OidcConfig,
) -> (reqwest::Url, String, String, String) {
    use openidconnect::core::CoreAuthenticationFlow;
    use openidconnect::{CsrfToken, PkceCodeChallenge, Scope};
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = d.client.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for s in cfg.scopes.iter().filter(|s| *s != "openid") {
        req = req.add_scope(Scope::new(s.clone()));
    }
    let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
    (
        url,
        state.secret().clone(),
        nonce.secret().clone(),
        verifier.secret().clone(),
    )
}

/// What can go wrong after the code comes back.
pub(super) enum ExchangeError {
    Failed(OidcError),
    /// The token names a key the JWKS does not have: fetch it again and retry.
    UnknownKey(String),
}

/// Exchanges the code (with the PKCE verifier) at the token endpoint.
pub(super) async fn request_tokens(
    d: &Discovered,
    cfg: &OidcConfig,
    http: &Http,
    code: &str,
    verifier: &str,
) -> Result<TokenResponse, OidcError> {
    use openidconnect::RequestTokenError;
    let mut req = d
        .client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .map_err(|e| OidcError::new(OidcFailure::IdpError, e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()));
    if let super::client_auth::ClientAuth::PrivateKeyJwt(signer) = &cfg.client_auth {
        let audience = d
            .metadata
            .token_endpoint()
            .map(|u| u.as_str().to_string())
            .unwrap_or_else(|| cfg.issuer.to_string());
        let assertion = signer
            .assertion(&cfg.client_id, &audience)
            .map_err(|e| OidcError::new(OidcFailure::TokenRejected, e))?;
        req = req
            .add_extra_param(
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            )
            .add_extra_param("client_assertion", assertion);
    }
    req.request_async(http).await.map_err(|e| match &e {
        RequestTokenError::ServerResponse(r) => OidcError::new(
            OidcFailure::TokenRejected,
            format!(
                "token endpoint answered {}{}",
                r.error(),
                r.error_description()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
        ),
        RequestTokenError::Request(_) => unreachable("token endpoint", error_chain(&e)),
        _ => OidcError::new(OidcFailure::TokenRejected, error_chain(&e)),
    })
}

/// Validates the ID token: signature (JWKS), iss, aud, azp, exp and iat within `leeway`, nonce.
pub(super) fn verify(
    d: &Discovered,
    tokens: &TokenResponse,
    nonce: &str,
    leeway: Duration,
) -> Result<Verified, ExchangeError> {
    let id_token = tokens.extra_fields().id_token().ok_or_else(|| {
        ExchangeError::Failed(OidcError::new(
            OidcFailure::IdToken,
            "the token response has no id_token (is \"openid\" among the scopes the IdP granted?)",
        ))
    })?;
    let max_age = Duration::from_secs(600);
    let verifier = d
        .client
        .id_token_verifier()
        .set_allowed_algs(d.allowed_algs.iter().cloned())
        .set_time_fn(move || chrono::Utc::now() - leeway)
        .set_issue_time_verifier_fn(move |iat| {
            let now = chrono::Utc::now();
            let ahead = iat.signed_duration_since(now);
            let age = now.signed_duration_since(iat);
            if ahead.to_std().map(|a| a > leeway).unwrap_or(false) {
                Err(format!("iat {iat} is in the future (clock skew?)"))
            } else if age.to_std().map(|a| a > max_age + leeway).unwrap_or(false) {
                Err(format!("iat {iat} is older than {}s", max_age.as_secs()))
            } else {
                Ok(())
            }
        });
    let nonce = Nonce::new(nonce.to_string());
    let claims = id_token
        .claims(&verifier, &nonce)
        .map_err(|e| classify(&e))?;
    let mut all = match serde_json::to_value(claims) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (k, v) in &claims.additional_claims().0 {
        all.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Ok(Verified {
        claims: all,
        id_token: id_token.to_string(),
    })
}

fn classify(e: &openidconnect::ClaimsVerificationError) -> ExchangeError {
    use openidconnect::{ClaimsVerificationError as C, SignatureVerificationError as S};
    let check = match e {
        C::SignatureVerification(S::NoMatchingKey) => {
            return ExchangeError::UnknownKey(e.to_string())
        }
        C::InvalidNonce(_) => {
            return ExchangeError::Failed(OidcError::new(
                OidcFailure::Nonce,
                format!("nonce check failed: {e}"),
            ))
        }
        C::SignatureVerification(_) => "signature",
        C::Expired(m) if m.contains("iat") || m.contains("issue") => "iat (issue time)",
        C::Expired(_) => "exp (expired)",
        C::InvalidAudience(_) => "aud/azp (audience)",
        C::InvalidIssuer(_) => "iss (issuer)",
        C::InvalidAuthTime(_) => "auth_time",
        C::InvalidSubject(_) => "sub",
        C::Unsupported(_) => "algorithm",
        C::Other(m) if m.contains("iat") => "iat (issue time)",
        _ => "claims",
    };
    ExchangeError::Failed(OidcError::new(
        OidcFailure::IdToken,
        format!("ID token failed the {check} check: {e}"),
    ))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The IdP's logout URL for this session, if it has one.
pub(super) fn logout_url(
    d: &Discovered,
    cfg: &OidcConfig,
    id_token: Option<&str>,
) -> Option<String> {
    let end = d.end_session.as_ref()?;
    let mut url = end.url().clone();
    {
        let mut q = url.query_pairs_mut();
        if let Some(t) = id_token {
            q.append_pair("id_token_hint", t);
        }
        q.append_pair("post_logout_redirect_uri", &cfg.post_logout_url);
        q.append_pair("client_id", &cfg.client_id);
    }
    Some(url.to_string())
}
