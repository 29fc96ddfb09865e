//! The QPS REST API on port 4243: mutual TLS with the certificate exported from the QMC, and a fresh
//! xrfkey on every call.

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

use super::config::QlikConfig;
use super::{xrfkey, QlikError};
use qlik_gateway_core::identity::Identity;
use qlik_gateway_net::error_chain::{root_cause, tls_cause};
use qlik_gateway_net::tls;

/// A client for `https://host:4243/qps/{vp}/…`.
#[derive(Clone)]
pub struct QpsClient {
    http: reqwest::Client,
    /// `https://host:4243/qps/{vp}/` (always ending in `/`).
    base: Url,
    timeout: Duration,
    /// Durations and errors of every call, by call.
    metrics: Option<super::metrics::QpsMetrics>,
}

impl QpsClient {
    /// Builds the mTLS client from the configured PEM files.
    pub fn new(cfg: &QlikConfig) -> Result<Self, tls::TlsFileError> {
        Self::for_node(cfg, &cfg.qps_api_url)
    }

    /// The client for one node's QPS API (`qps_api_url`), with the site's certificates.
    pub fn for_node(cfg: &QlikConfig, qps_api_url: &Url) -> Result<Self, tls::TlsFileError> {
        let roots = tls::root_store(&cfg.ca_cert, false)?;
        let tls = tls::client_config(
            roots,
            Some((&cfg.client_cert, &cfg.client_key)),
            &[b"http/1.1"],
        )?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.qps_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| tls::TlsFileError::Rejected {
                path: cfg.client_cert.clone(),
                reason: e.to_string(),
            })?;
        let mut base = qps_api_url.clone();
        let vp = if cfg.virtual_proxy.is_empty() {
            String::new()
        } else {
            format!("{}/", cfg.virtual_proxy)
        };
        base.set_path(&format!("/qps/{vp}"));
        Ok(Self {
            http,
            base,
            timeout: cfg.qps_timeout,
            metrics: None,
        })
    }

    /// Records each call's duration and error code in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<super::metrics::QpsMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs one API call named `call` (a metric label), timing it.
    async fn timed<T>(
        &self,
        call: &'static str,
        f: impl Future<Output = Result<T, QlikError>>,
    ) -> Result<T, QlikError> {
        let start = Instant::now();
        let r = f.await;
        if let Some(m) = &self.metrics {
            m.observe(call, start.elapsed(), r.as_ref().err().map(QlikError::code));
        }
        r
    }

    /// `POST session`: creates the Qlik session `session_id` for `identity`.
    pub async fn create_session(
        &self,
        identity: &Identity,
        session_id: &str,
    ) -> Result<(), QlikError> {
        self.timed("create_session", async {
            let mut body = user_body(identity);
            body["SessionId"] = json!(session_id);
            let v = self.post_created("POST session", "session", body).await?;
            // If the reply names a session, it must be ours.
            match field(&v, "SessionId").and_then(Value::as_str) {
                Some(id) if id != session_id => Err(QlikError::BadReply {
                    call: "POST session",
                    detail: "reply names a different session id".into(),
                }),
                _ => Ok(()),
            }
        })
        .await
    }

    /// `POST ticket`: a one-time ticket for `identity`, to be redeemed at the virtual proxy
    /// within its minute.
    pub async fn request_ticket(&self, identity: &Identity) -> Result<String, QlikError> {
        self.timed("request_ticket", async {
            let v = self
                .post_created("POST ticket", "ticket", user_body(identity))
                .await?;
            field(&v, "Ticket")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .ok_or_else(|| QlikError::BadReply {
                    call: "POST ticket",
                    detail: "the reply has no Ticket".into(),
                })
        })
        .await
    }

    /// A POST that must answer 201 (or 200) with JSON. Replies come PascalCase (documented) or
    /// camelCase (OpenAPI); [`field`] reads both.
    async fn post_created(
        &self,
        call: &'static str,
        path: &str,
        body: Value,
    ) -> Result<Value, QlikError> {
        let (status, reply) = self.call(Method::POST, path, Some(body)).await?;
        if status != StatusCode::CREATED && status != StatusCode::OK {
            return Err(QlikError::Status {
                call,
                status: status.as_u16(),
                body: snippet(&reply),
            });
        }
        serde_json::from_str(&reply).map_err(|e| QlikError::BadReply {
            call,
            detail: format!("not JSON: {e}"),
        })
    }

    /// `DELETE session/{id}`: ends the Qlik session and its engine connections. A session Qlik no
    /// longer knows counts as deleted.
    pub async fn delete_session(&self, session_id: &str) -> Result<(), QlikError> {
        self.timed("delete_session", async {
            let path = format!("session/{session_id}");
            let (status, reply) = self.call(Method::DELETE, &path, None).await?;
            if status.is_success() || status == StatusCode::NOT_FOUND {
                Ok(())
            } else {
                Err(QlikError::Status {
                    call: "DELETE session",
                    status: status.as_u16(),
                    body: snippet(&reply),
                })
            }
        })
        .await
    }

    /// Reachability with the client certificate: any HTTP answer other than an xrfkey rejection
    /// proves TLS and routing work.
    pub async fn probe(&self) -> Result<(), QlikError> {
        let path = format!("session/probe-{}", uuid::Uuid::new_v4());
        self.timed("probe", async {
            self.call(Method::GET, &path, None).await.map(|_| ())
        })
        .await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, String), QlikError> {
        let key = xrfkey::generate();
        let mut url = self.base.join(path).map_err(|e| QlikError::BadReply {
            call: "url",
            detail: e.to_string(),
        })?;
        url.query_pairs_mut().append_pair("xrfkey", &key);
        let mut req = self
            .http
            .request(method, url.clone())
            .header("X-Qlik-Xrfkey", &key)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| self.classify(&url, e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.classify(&url, e))?;
        if status == StatusCode::FORBIDDEN && text.contains("XSRF") {
            return Err(QlikError::XrfkeyRejected);
        }
        Ok((status, text))
    }

    fn classify(&self, url: &Url, e: reqwest::Error) -> QlikError {
        let origin = url.origin().ascii_serialization();
        if e.is_timeout() {
            return QlikError::Timeout {
                url: origin,
                after: self.timeout,
            };
        }
        if let Some(tls) = tls_cause(&e) {
            return QlikError::Tls {
                url: origin,
                detail: tls,
            };
        }
        QlikError::Unreachable {
            url: origin,
            detail: root_cause(&e),
        }
    }
}

/// A key of a JSON reply from Qlik in either casing: Qlik writes `SessionId` (as documented) or
/// `sessionId` (as in its OpenAPI), by release and endpoint.
pub fn field<'a>(v: &'a Value, pascal: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(pascal))
        .map(|(_, v)| v)
}

/// The user as the session and ticket APIs take it, attributes as `[{"Group": "Sales"}, …]`.
fn user_body(identity: &Identity) -> Value {
    let attributes: Vec<Value> = identity
        .attributes
        .iter()
        .map(|(k, v)| json!({ k: v }))
        .collect();
    json!({
        "UserDirectory": identity.user_directory,
        "UserId": identity.user_id,
        "Attributes": attributes,
    })
}

fn snippet(s: &str) -> String {
    s.chars().take(200).collect()
}
