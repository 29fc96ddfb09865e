//! Everything a request handler needs, built once from the configuration.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::auth::{self, IdentityProvider};
use crate::config::{Config, StoreKind};
use crate::mashup::Mashup;
use crate::net::tls::TlsFileError;
use crate::net::upstream::header_value;
use crate::net::upstream::{self, UpstreamClient};
use crate::qlik_sessions::QlikSessions;
use crate::session::cookie::CookieSettings;
use crate::session::memory::MemoryStore;
use crate::session::redis::RedisStore;
use crate::session::{SessionStore, Timeouts};
use crate::sockets::SocketRegistry;
use crate::stats::Stats;

/// Why the gateway's state cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file cannot be used: Qlik's CA, client certificate or key, or the mashup directory.
    #[error(transparent)]
    Tls(#[from] TlsFileError),
    /// The identity provider cannot be set up (its keytab or CA, or a provider not built in).
    #[error(transparent)]
    Auth(#[from] auth::SetupError),
    /// The session store cannot be set up (Redis).
    #[error(transparent)]
    Store(#[from] crate::session::StoreError),
}

/// Shared, read-mostly state behind an `Arc`.
pub struct AppState {
    /// The checked configuration the gateway runs with.
    pub cfg: Config,
    /// Logs users in (`[auth]`).
    pub provider: Arc<dyn IdentityProvider>,
    /// Where gateway sessions live (`[session]`).
    pub store: Arc<dyn SessionStore>,
    /// The name and flags of the gateway's cookie.
    pub cookies: CookieSettings,
    /// The Qlik sessions of gateway sessions, made through the nodes' QPS APIs.
    pub qlik: QlikSessions,
    /// The pooled HTTP client for proxied requests (to Qlik and the mashup dev server).
    pub upstream: UpstreamClient,
    /// TLS settings for upstream websocket handshakes to the Qlik proxy.
    pub ws_tls: Arc<rustls::ClientConfig>,
    /// TLS settings for the direct engine (`qlik.engine_url`): the Qlik client certificate.
    pub engine_tls: Option<Arc<rustls::ClientConfig>>,
    /// What is served beside Qlik (`[mashup]`): static files, a dev server or the demo page.
    pub mashup: Mashup,
    /// The open upgraded connections (websockets), closed with their session.
    pub sockets: SocketRegistry,
    /// Event counters (fatal Qlik notifications, login prompts), for tests and metrics.
    pub stats: Stats,
    /// The Prometheus registry of this gateway (`/_gateway/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Headers removed from every proxied request besides `X-Qlik-*` (identity headers, header-auth header).
    pub strip_headers: Vec<HeaderName>,
    /// `Host` value of the Qlik proxy, built once.
    pub qlik_host: HeaderValue,
    /// `Host` the browser used, as the gateway's public origin names it.
    pub public_host: HeaderValue,
    /// `X-Forwarded-Proto`.
    pub public_proto: &'static str,
    /// [`crate::config::QlikConfig::upstream_prefix`], built once (it is used on every request).
    pub upstream_prefix: String,
}

impl AppState {
    /// Builds clients, stores and the identity provider. Fails on unusable certificate files and
    /// on a provider that cannot start (an unusable keytab).
    pub fn new(cfg: Config) -> Result<Arc<Self>, StateError> {
        crate::net::tls::install_default_provider();
        let timeouts = Timeouts {
            idle: cfg.session.idle_timeout,
            absolute: cfg.session.absolute_timeout,
        };
        let store: Arc<dyn SessionStore> = match &cfg.session.store {
            StoreKind::Memory => Arc::new(MemoryStore::new(timeouts)),
            // Built without connecting: the gateway starts (not ready) while Redis is down.
            StoreKind::Redis(r) => Arc::new(RedisStore::new(r, timeouts)?),
        };
        let stats = Stats::default();
        let sockets = SocketRegistry::default();
        let metrics = Arc::new(crate::metrics::Metrics::new(stats.clone(), sockets.clone()));
        let store = metrics.count_store_errors(store);
        let rules = auth::identity_rules::IdentityRules {
            header_safe: matches!(cfg.qlik.mode, crate::config::QlikMode::Header(_)),
        };
        // Replicas sharing a Redis store share its key, so a login started on one replica
        // completes on any other (the login cookie is sealed, not kept per process).
        let shared_keys = match &cfg.session.store {
            crate::config::StoreKind::Redis(r) => {
                Some((&r.encryption_key, r.old_encryption_keys.as_slice()))
            }
            crate::config::StoreKind::Memory => None,
        };
        let provider = auth::from_config(&cfg.auth, cfg.server.public_https, rules, shared_keys)?;
        let roots = crate::net::tls::root_store(&cfg.qlik.ca_cert, true)?;
        let ws_tls = Arc::new(crate::net::tls::client_config(
            roots.clone(),
            None,
            &[b"http/1.1"],
        )?);
        let engine_tls = match &cfg.qlik.engine_url {
            Some(_) => Some(Arc::new(crate::net::tls::client_config(
                crate::net::tls::root_store(&cfg.qlik.ca_cert, false)?,
                Some((&cfg.qlik.client_cert, &cfg.qlik.client_key)),
                &[b"http/1.1"],
            )?)),
            None => None,
        };
        let upstream = upstream::client(roots, cfg.qlik.connect_timeout)?
            .max_response_header_bytes(cfg.server.max_upstream_header_bytes);
        let nodes = Arc::new(crate::qlik::nodes::Nodes::new(
            &cfg.qlik,
            Some(metrics.qps()),
        )?);
        nodes.watch(cfg.qlik.health_interval);
        let qlik = QlikSessions::new(
            nodes,
            store.clone(),
            upstream.clone(),
            cfg.qlik.clone(),
            metrics.clone(),
        );
        let mashup = Mashup::from_config(&cfg.mashup)?;
        let mut strip_headers = provider.identity_headers();
        if let Some(h) = &cfg.qlik.header_name {
            strip_headers.push(h.clone());
        }
        let qlik_host = header_value(&crate::net::upstream::host_header(&cfg.qlik.proxy_url));
        let public_url = reqwest::Url::parse(&cfg.server.public_origin).ok();
        let public_host = header_value(
            &public_url
                .as_ref()
                .map(crate::net::upstream::host_header)
                .unwrap_or_default(),
        );
        let public_proto = if cfg.server.public_https {
            "https"
        } else {
            "http"
        };
        let cookies = CookieSettings {
            name: cfg.session.cookie_name.clone(),
            secure: cfg.server.public_https,
        };
        let cfg_prefix = cfg.qlik.upstream_prefix();
        Ok(Arc::new(Self {
            cfg,
            provider,
            store,
            cookies,
            qlik,
            upstream,
            ws_tls,
            engine_tls,
            mashup,
            sockets,
            stats,
            metrics,
            strip_headers,
            qlik_host,
            public_host,
            public_proto,
            upstream_prefix: cfg_prefix,
        }))
    }
}
