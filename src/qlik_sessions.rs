//! Each gateway session's Qlik session: created on first need, re-created when Qlik loses it, one
//! creation at a time per gateway session, ended at logout.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use http::StatusCode;

use crate::metrics::{Metrics, QlikSessionEvent};
use crate::net::error_chain::root_cause;
use crate::net::retry::{RetryClass, Retryable};
use crate::net::upstream::UpstreamClient;
use crate::qlik::config::{QlikConfig, QlikMode};
use crate::qlik::cookies::set_session_cookies;
use crate::qlik::nodes::{Node, Nodes};
use crate::qlik::proxy_api;
use crate::qlik::QlikError;
use crate::session::{GatewaySession, QlikSession, SessionId, SessionStore, StoreError};

/// Why the gateway could not give a request a Qlik session.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Qlik(#[from] QlikError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The gateway session ended (logout, expiry) while its Qlik session was being made.
    #[error("the gateway session ended")]
    SessionGone,
}

/// Owns the nodes' QPS clients and serialises Qlik session (re)creation per gateway session.
pub struct QlikSessions {
    nodes: Arc<Nodes>,
    store: Arc<dyn SessionStore>,
    upstream: UpstreamClient,
    cfg: QlikConfig,
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    metrics: Arc<Metrics>,
}

impl QlikSessions {
    /// Ties the QPS client, the session store and the upstream client together; Qlik session
    /// creations, re-creations and failures are counted in `metrics`.
    pub fn new(
        nodes: Arc<Nodes>,
        store: Arc<dyn SessionStore>,
        upstream: UpstreamClient,
        cfg: QlikConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            nodes,
            store,
            upstream,
            cfg,
            locks: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The proxy nodes.
    pub fn nodes(&self) -> &Arc<Nodes> {
        &self.nodes
    }

    /// Ready when at least one node's QPS API answers with the client certificate; the error of
    /// the first node otherwise.
    pub async fn probe(&self) -> Result<(), QlikError> {
        let mut first_err = None;
        for n in self.nodes.all() {
            match n.qps.probe().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The node `qlik` lives on; `None` if the configuration no longer lists it.
    pub fn node_of(&self, qlik: &QlikSession) -> Option<Arc<Node>> {
        self.nodes.get(&qlik.node)
    }

    /// The session's Qlik session, creating it if there is none. N parallel callers for one
    /// gateway session cause exactly one QPS call.
    pub async fn ensure<'a>(
        &self,
        id: &SessionId,
        gw: &'a GatewaySession,
    ) -> Result<Cow<'a, QlikSession>, LifecycleError> {
        match &gw.qlik {
            // A node taken out of rotation: move the user to a healthy one now, instead of
            // letting the request fail against the dead node first.
            Some(q) if self.node_of(q).is_some_and(|n| n.is_up()) => Ok(Cow::Borrowed(q)),
            Some(q) => self.recreate(id, q).await.map(Cow::Owned),
            None => self.replace(id, None).await.map(Cow::Owned),
        }
    }

    /// Replaces a Qlik session that Qlik no longer accepts. If another request already replaced
    /// `stale`, that replacement is returned instead of making a second one.
    pub async fn recreate(
        &self,
        id: &SessionId,
        stale: &QlikSession,
    ) -> Result<QlikSession, LifecycleError> {
        self.replace(id, Some(&stale.cookie_value)).await
    }

    /// Boxed: the store and QPS calls make this future several KiB, and every proxied request's
    /// future would carry (and move) that much room for the rare request that creates a Qlik
    /// session.
    async fn replace(
        &self,
        id: &SessionId,
        stale: Option<&str>,
    ) -> Result<QlikSession, LifecycleError> {
        Box::pin(self.replace_now(id, stale)).await
    }

    async fn replace_now(
        &self,
        id: &SessionId,
        stale: Option<&str>,
    ) -> Result<QlikSession, LifecycleError> {
        // One creation per gateway session in this process (no Redis round trips for the
        // others), and one across replicas through the store's lock.
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let ttl = self.lock_ttl();
        let give_up = tokio::time::Instant::now() + ttl + ttl / 2;
        loop {
            let current = self
                .store
                .get(id)
                .await?
                .ok_or(LifecycleError::SessionGone)?;
            if let Some(q) = made_meanwhile(&current, stale) {
                return Ok(q);
            }
            if let Some(held) = self.store.lock(id, ttl).await? {
                // Another replica may have finished between the read and the lock.
                let r = match self.store.get(id).await {
                    Ok(Some(current)) => match made_meanwhile(&current, stale) {
                        Some(q) => Ok(q),
                        None => self.create(id, &current, stale).await,
                    },
                    Ok(None) => Err(LifecycleError::SessionGone),
                    Err(e) => Err(e.into()),
                };
                held.release().await;
                return r;
            }
            // Another replica is creating it: wait for its result (or for its lock to lapse,
            // should it have died).
            if tokio::time::Instant::now() >= give_up {
                return Err(StoreError(format!(
                    "another gateway replica held the Qlik session lock for longer than {}",
                    humantime::format_duration(ttl)
                ))
                .into());
            }
            let pause = {
                use rand::Rng;
                rand::rng().random_range(50..=100)
            };
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
    }

    /// How long the cross-replica lock on a Qlik session creation lives: longer than the QPS
    /// calls of one creation (ticket mode: a ticket and its redemption, tried twice), so that it
    /// lapses only when its holder died.
    fn lock_ttl(&self) -> std::time::Duration {
        let calls = match self.cfg.mode {
            QlikMode::Ticket => 4,
            _ => 2,
        };
        self.cfg.qps_timeout * calls + std::time::Duration::from_secs(5)
    }

    /// Makes a Qlik session for `current` and stores it; the caller holds both locks.
    async fn create(
        &self,
        id: &SessionId,
        current: &GatewaySession,
        stale: Option<&str>,
    ) -> Result<QlikSession, LifecycleError> {
        let (node, cookie_value) = match self.make(&current.identity).await {
            Ok(made) => made,
            Err(e) => {
                self.metrics.qlik_session(QlikSessionEvent::Failed);
                return Err(e.into());
            }
        };
        let qlik = QlikSession {
            cookie_value,
            csrf_token: None,
            created_at: SystemTime::now(),
            node: node.key.clone(),
        };
        if !self.store.set_qlik(id, Some(qlik.clone())).await? {
            // Logged out meanwhile: do not leave an orphan session at Qlik.
            if !qlik.cookie_value.is_empty() {
                let _ = node.qps.delete_session(&qlik.cookie_value).await;
            }
            return Err(LifecycleError::SessionGone);
        }
        tracing::info!(
            session = %id.log_tag(),
            user = %format_args!("{}\\{}", current.identity.user_directory, current.identity.user_id),
            replaced = stale.is_some(),
            node = %qlik.node,
            // A replacement is a re-authentication at Qlik on the user's behalf.
            audit = stale.is_some(),
            "created Qlik session"
        );
        self.metrics.qlik_session(if stale.is_some() {
            QlikSessionEvent::Recreated
        } else {
            QlikSessionEvent::Created
        });
        Ok(qlik)
    }

    /// A new Qlik session for `identity` on the next node: its cookie value (empty in header mode).
    async fn make(
        &self,
        identity: &crate::identity::Identity,
    ) -> Result<(Arc<Node>, String), QlikError> {
        let node = self.nodes.pick().ok_or_else(|| QlikError::BadReply {
            call: "node choice",
            detail: "qlik.proxy_url lists no node".into(),
        })?;
        let cookie_value = match &self.cfg.mode {
            QlikMode::Session => {
                // GUID-shaped, like the session ids Qlik makes itself.
                let session_id = uuid::Uuid::new_v4().to_string();
                if let Err(e) = node.qps.create_session(identity, &session_id).await {
                    self.nodes.failed(&node, &e);
                    return Err(e);
                }
                session_id
            }
            QlikMode::Ticket => self.ticket_session(&node, identity).await?,
            // The header authenticates every request; Qlik's cookie is adopted when it sets one.
            QlikMode::Header(_) => String::new(),
        };
        Ok((node, cookie_value))
    }

    /// A ticket requested at QPS and redeemed at the virtual proxy by the gateway itself, so that
    /// neither the ticket nor the resulting cookie ever reaches the browser. A failed redemption
    /// is retried once with a new ticket (a ticket is single-use and lives a minute).
    async fn ticket_session(
        &self,
        node: &Node,
        identity: &crate::identity::Identity,
    ) -> Result<String, QlikError> {
        let mut last = String::new();
        for attempt in 1..=2 {
            let ticket = node.qps.request_ticket(identity).await?;
            match self.redeem(node, &ticket).await {
                Ok(cookie) => return Ok(cookie),
                Err(why) => {
                    tracing::warn!(attempt, "ticket redemption failed: {why}");
                    last = why;
                }
            }
        }
        Err(QlikError::Redemption { detail: last })
    }

    /// The ticket redeemed at `node`'s virtual proxy, and the session cookie the proxy set for it.
    async fn redeem(&self, node: &Node, ticket: &str) -> Result<String, String> {
        let resp = proxy_api::redeem_ticket(&self.upstream, node, &self.cfg, ticket)
            .await
            .map_err(|e| root_cause(&e))?;
        set_session_cookies(resp.headers(), &self.cfg.session_cookie)
            .ours
            .ok_or_else(|| {
                format!(
                    "the proxy answered HTTP {} without a {} cookie",
                    resp.status(),
                    self.cfg.session_cookie
                )
            })
    }

    /// Adds the user's Qlik credentials to a request for the Qlik proxy: the session cookie (when
    /// there is one) in place of every client-sent Qlik cookie, and in header mode the user header.
    pub fn add_credentials(
        &self,
        headers: &mut http::HeaderMap,
        gateway_cookie: &str,
        identity: &crate::identity::Identity,
        qlik: &QlikSession,
    ) {
        let cookie = (!qlik.cookie_value.is_empty())
            .then_some((self.cfg.session_cookie.as_str(), qlik.cookie_value.as_str()));
        crate::headers::rewrite_cookies(headers, gateway_cookie, cookie);
        if let QlikMode::Header(h) = &self.cfg.mode {
            match h.value(&identity.user_directory, &identity.user_id) {
                Some(v) => {
                    headers.insert(h.name.clone(), v);
                }
                None => {
                    // Login refuses such names (auth::identity_rules), so only a session stored
                    // by an older version gets here; without the header Qlik asks for a login.
                    tracing::warn!(
                        user = %format_args!("{}\\{}", identity.user_directory, identity.user_id),
                        "the user name cannot be sent in the {} header (empty or with control characters); the session predates the login check, the user must log in again",
                        h.name
                    );
                }
            }
        }
    }

    /// Whether a Qlik session cookie set on a proxied response belongs to this session: only in
    /// header mode, where Qlik creates the session itself from the user header the gateway sends.
    /// In session and ticket mode the gateway holds the cookie of the session it made.
    pub fn adopts_response_cookies(&self) -> bool {
        matches!(self.cfg.mode, QlikMode::Header(_))
    }

    /// Records a new cookie value Qlik chose itself (a `Set-Cookie` from the proxy).
    pub async fn adopt_cookie(
        &self,
        id: &SessionId,
        current: &QlikSession,
        value: &str,
    ) -> Result<(), StoreError> {
        if current.cookie_value == value {
            return Ok(());
        }
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let q = QlikSession {
            cookie_value: value.to_string(),
            csrf_token: None,
            created_at: SystemTime::now(),
            node: current.node.clone(),
        };
        self.store.set_qlik(id, Some(q)).await.map(drop)
    }

    /// Ends the Qlik session at QPS (logout). Failure is logged, not fatal: the gateway session
    /// ends either way and Qlik's inactivity timeout is the backstop.
    pub async fn end(&self, gw: &GatewaySession) {
        if let Some(q) = gw.qlik.as_ref().filter(|q| !q.cookie_value.is_empty()) {
            let Some(node) = self.node_of(q) else { return };
            if let Err(e) = node.qps.delete_session(&q.cookie_value).await {
                tracing::warn!(error = %e, "could not delete the Qlik session at logout; Qlik's inactivity timeout will end it");
            }
        }
    }

    /// Qlik's websocket CSRF token for this Qlik session (Qlik Sense November 2024 and later), fetched
    /// once with the user's cookie and cached. `Ok(None)`: this Qlik issues none.
    pub async fn csrf_token(
        &self,
        id: &SessionId,
        qlik: &QlikSession,
    ) -> Result<Option<String>, CsrfError> {
        if let Some(t) = &qlik.csrf_token {
            return Ok((!t.is_empty()).then(|| t.clone()));
        }
        let identity = match self.store.get(id).await {
            Ok(Some(gw)) => gw.identity,
            _ => return Err(CsrfError::SessionRejected),
        };
        let token = self.fetch_csrf(&identity, qlik).await?;
        let mut updated = qlik.clone();
        updated.csrf_token = Some(token.clone().unwrap_or_default());
        // Only cache if the Qlik session is still the same one.
        if let Ok(Some(cur)) = self.store.get(id).await {
            if cur.qlik.as_ref().map(|q| &q.cookie_value) == Some(&qlik.cookie_value) {
                let _ = self.store.set_qlik(id, Some(updated)).await;
            }
        }
        Ok(token)
    }

    async fn fetch_csrf(
        &self,
        identity: &crate::identity::Identity,
        qlik: &QlikSession,
    ) -> Result<Option<String>, CsrfError> {
        let node = self.node_of(qlik).ok_or(CsrfError::SessionRejected)?;
        let mut headers = http::HeaderMap::new();
        self.add_credentials(&mut headers, "", identity, qlik);
        let resp = proxy_api::get(
            &self.upstream,
            &node,
            &self.cfg,
            "/qps/csrftoken",
            &[],
            headers,
        )
        .await
        .map_err(|e| CsrfError::Upstream(root_cause(&e)))?;
        let status = resp.status();
        if let Some(v) = resp.headers().get("qlik-csrf-token") {
            return v
                .to_str()
                .map(|s| Some(s.to_string()))
                .map_err(|_| CsrfError::Upstream("qlik-csrf-token header is not ASCII".into()));
        }
        // Qlik answers 403 without a session ("for historical reasons", says @qlik/api).
        if status.is_redirection()
            || status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN
        {
            return Err(CsrfError::SessionRejected);
        }
        // 404 and friends: a Qlik release before November 2024 has no such endpoint.
        Ok(None)
    }

    fn lock_for(&self, id: &SessionId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        let key = id.storage_key();
        if let Some(l) = map.get(key).and_then(Weak::upgrade) {
            return l;
        }
        // Drop entries whose sessions no longer wait on anything, so the map stays small.
        if map.len() > 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let l = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key.to_owned(), Arc::downgrade(&l));
        l
    }
}

/// The Qlik session someone else made while this caller waited: any, when there was none
/// (`stale` = `None`); one other than `stale` otherwise.
fn made_meanwhile(current: &GatewaySession, stale: Option<&str>) -> Option<QlikSession> {
    match (&current.qlik, stale) {
        (Some(q), None) => Some(q.clone()),
        (Some(q), Some(old)) if q.cookie_value != old => Some(q.clone()),
        _ => None,
    }
}

/// Why the websocket CSRF token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CsrfError {
    #[error("the Qlik proxy did not accept the session when asked for the websocket CSRF token")]
    SessionRejected,
    #[error("fetching the websocket CSRF token from the Qlik proxy failed: {0}")]
    Upstream(String),
}

impl Retryable for CsrfError {
    fn retry_class(&self) -> RetryClass {
        match self {
            // The node answered: the session is re-created, on the same node.
            Self::SessionRejected => RetryClass::Never,
            Self::Upstream(_) => RetryClass::OtherNode,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn with_qlik(cookie: Option<&str>) -> GatewaySession {
        let mut s = GatewaySession::new(
            Identity {
                user_directory: "DEV".into(),
                user_id: "alice".into(),
                attributes: Vec::new(),
            },
            "static",
        );
        s.qlik = cookie.map(|c| QlikSession {
            cookie_value: c.into(),
            csrf_token: None,
            created_at: SystemTime::now(),
            node: String::new(),
        });
        s
    }

    /// What a caller that waited on the single-flight lock takes instead of making its own.
    #[test]
    fn a_waiter_takes_the_session_made_meanwhile_and_only_a_new_one() {
        let made = |cur: Option<&str>, stale: Option<&str>| {
            made_meanwhile(&with_qlik(cur), stale).map(|q| q.cookie_value)
        };
        assert_eq!(
            made(None, None),
            None,
            "nothing made yet: this caller makes it"
        );
        assert_eq!(
            made(Some("a"), None).as_deref(),
            Some("a"),
            "the first caller made one"
        );
        assert_eq!(
            made(Some("a"), Some("a")),
            None,
            "still the stale one: this caller replaces it"
        );
        assert_eq!(
            made(Some("b"), Some("a")).as_deref(),
            Some("b"),
            "another caller already replaced the stale one"
        );
    }
}
