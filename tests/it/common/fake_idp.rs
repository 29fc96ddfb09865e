//! A scriptable OpenID Provider for the failures a real one will not produce on request: ID
//! tokens with a wrong audience, issuer, nonce, signature or time, keys it does not publish. It
//! does the code flow with PKCE for real; the test decides what goes wrong.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// What the next tokens look like. Everything is right by default.
#[derive(Clone, Debug)]
pub struct Script {
    /// Claims merged into every ID token (user id, groups, …).
    pub claims: Value,
    pub aud: Option<String>,
    pub iss: Option<String>,
    pub nonce: Option<String>,
    /// Seconds from now.
    pub exp_in: i64,
    pub iat_in: i64,
    /// Sign with a key the JWKS does not list.
    pub unknown_key: bool,
    /// Flip a byte of the signature.
    pub bad_signature: bool,
    /// Answer the authorization request with `error=access_denied`.
    pub deny: bool,
    /// The token endpoint answers `invalid_grant`.
    pub reject_code: bool,
    /// Require a `private_key_jwt` client assertion signed (ES256) by this public key (raw point).
    pub assertion_key: Option<Vec<u8>>,
    /// The client secret `client_secret_basic`/`_post` must present.
    pub secret: Option<String>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            claims: json!({"preferred_username": "alice", "groups": ["Sales"], "email": "alice@corp.example.com"}),
            aud: None,
            iss: None,
            nonce: None,
            exp_in: 300,
            iat_in: 0,
            unknown_key: false,
            bad_signature: false,
            deny: false,
            reject_code: false,
            assertion_key: None,
            secret: None,
        }
    }
}

struct Key {
    pair: EcdsaKeyPair,
    kid: String,
}

struct Inner {
    issuer: String,
    script: Mutex<Script>,
    codes: Mutex<HashMap<String, (String, String, String)>>, // code → (nonce, challenge, client_id)
    published: Mutex<Vec<Key>>,
    secret_key: Key,
    pub logouts: Mutex<Vec<String>>,
}

/// A running fake IdP on a loopback port.
pub struct FakeIdp {
    pub issuer: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

fn key(kid: &str) -> Key {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("key");
    Key {
        pair,
        kid: kid.to_string(),
    }
}

fn jwk(k: &Key) -> Value {
    let raw = k.pair.public_key().as_ref();
    json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": k.kid,
           "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..65])})
}

fn sign(k: &Key, claims: &Value, corrupt: bool) -> String {
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": k.kid});
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let mut sig = k
        .pair
        .sign(&SystemRandom::new(), input.as_bytes())
        .expect("sign")
        .as_ref()
        .to_vec();
    if corrupt {
        sig[10] ^= 0xff;
    }
    format!("{input}.{}", B64.encode(sig))
}

impl FakeIdp {
    /// Starts on `addr` (use port 0 for any).
    pub async fn start_on(addr: SocketAddr) -> FakeIdp {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind fake IdP");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let inner = Arc::new(Inner {
            issuer: issuer.clone(),
            script: Mutex::new(Script::default()),
            codes: Mutex::new(HashMap::new()),
            published: Mutex::new(vec![key("k1")]),
            secret_key: key("not-published"),
            logouts: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/logout", get(logout))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeIdp {
            issuer,
            inner,
            task,
        }
    }

    pub async fn start() -> FakeIdp {
        Self::start_on("127.0.0.1:0".parse().expect("addr")).await
    }

    /// Changes what the next tokens look like.
    pub fn script(&self, f: impl FnOnce(&mut Script)) {
        let mut s = self.inner.script.lock().expect("script");
        f(&mut s);
    }

    /// Publishes a new signing key and signs with it from now on (the old one stays listed
    /// unless `drop_old`).
    pub fn rotate(&self, kid: &str, drop_old: bool) {
        let mut keys = self.inner.published.lock().expect("keys");
        if drop_old {
            keys.clear();
        }
        keys.push(key(kid));
    }

    /// The `id_token_hint`s the logout endpoint received.
    pub fn logouts(&self) -> Vec<String> {
        self.inner.logouts.lock().expect("logouts").clone()
    }
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn discovery(State(s): State<Arc<Inner>>) -> Json<Value> {
    let i = &s.issuer;
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "end_session_endpoint": format!("{i}/logout"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn jwks(State(s): State<Arc<Inner>>) -> Json<Value> {
    let keys: Vec<Value> = s.published.lock().expect("keys").iter().map(jwk).collect();
    Json(json!({ "keys": keys }))
}

async fn authorize(
    State(s): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let redirect = get("redirect_uri");
    let state = get("state");
    if get("code_challenge_method") != "S256" || get("code_challenge").is_empty() {
        return (http::StatusCode::BAD_REQUEST, "PKCE S256 required").into_response();
    }
    if s.script.lock().expect("script").deny {
        return Redirect::to(&format!(
            "{redirect}?error=access_denied&error_description=cancelled&state={state}"
        ))
        .into_response();
    }
    let code = B64.encode(rand_bytes());
    s.codes.lock().expect("codes").insert(
        code.clone(),
        (get("nonce"), get("code_challenge"), get("client_id")),
    );
    Redirect::to(&format!("{redirect}?code={code}&state={state}")).into_response()
}

fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut b).expect("random");
    b
}

async fn token(
    State(s): State<Arc<Inner>>,
    headers: http::HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let err = |e: &str| (http::StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response();
    let script = s.script.lock().expect("script").clone();
    let Some((nonce, challenge, client_id)) = f
        .get("code")
        .and_then(|c| s.codes.lock().expect("codes").remove(c))
    else {
        return err("invalid_grant");
    };
    if script.reject_code {
        return err("invalid_grant");
    }
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    if B64.encode(Sha256::digest(verifier.as_bytes())) != challenge {
        return err("invalid_grant");
    }
    if let Some(public) = &script.assertion_key {
        if f.get("client_assertion_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return err("invalid_client");
        }
        let token_endpoint = format!("{}/token", s.issuer);
        if let Err(why) = check_assertion(
            f.get("client_assertion")
                .map(String::as_str)
                .unwrap_or_default(),
            public,
            &client_id,
            &token_endpoint,
        ) {
            return (
                http::StatusCode::UNAUTHORIZED,
                Json(json!({"error": "invalid_client", "error_description": why})),
            )
                .into_response();
        }
    } else if let Some(secret) = &script.secret {
        let basic = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).to_string());
        let posted = f.get("client_secret").map(|p| format!("{client_id}:{p}"));
        let want = format!("{client_id}:{secret}");
        if basic.as_deref() != Some(want.as_str()) && posted.as_deref() != Some(want.as_str()) {
            return (
                http::StatusCode::UNAUTHORIZED,
                Json(json!({"error": "invalid_client"})),
            )
                .into_response();
        }
    } else if f.get("client_id") != Some(&client_id) {
        return err("invalid_client");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let mut claims = json!({
        "iss": script.iss.clone().unwrap_or_else(|| s.issuer.clone()),
        "sub": "user-1",
        "aud": script.aud.clone().unwrap_or(client_id),
        "exp": now + script.exp_in,
        "iat": now + script.iat_in,
        "nonce": script.nonce.clone().unwrap_or(nonce),
    });
    if let (Some(c), Some(extra)) = (claims.as_object_mut(), script.claims.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    let id_token = if script.unknown_key {
        sign(&s.secret_key, &claims, script.bad_signature)
    } else {
        let keys = s.published.lock().expect("keys");
        let Some(k) = keys.last() else {
            return err("server_error");
        };
        sign(k, &claims, script.bad_signature)
    };
    Json(json!({"access_token": "at", "token_type": "Bearer", "expires_in": 300, "id_token": id_token}))
        .into_response()
}

async fn logout(State(s): State<Arc<Inner>>, Query(q): Query<HashMap<String, String>>) -> Response {
    s.logouts
        .lock()
        .expect("logouts")
        .push(q.get("id_token_hint").cloned().unwrap_or_default());
    match q.get("post_logout_redirect_uri") {
        Some(to) => Redirect::to(to).into_response(),
        None => "logged out".into_response(),
    }
}

fn check_assertion(jwt: &str, public: &[u8], client_id: &str, aud: &str) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, sig] = parts.as_slice() else {
        return Err("not a JWT".into());
    };
    let sig = B64.decode(sig).map_err(|e| e.to_string())?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, public)
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| "bad signature".to_string())?;
    let claims: Value = serde_json::from_slice(&B64.decode(c).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if claims["iss"] != client_id || claims["sub"] != client_id || claims["aud"] != aud {
        return Err(format!("wrong iss/sub/aud: {claims}"));
    }
    if claims["jti"].as_str().unwrap_or_default().is_empty() {
        return Err("no jti".into());
    }
    Ok(())
}
