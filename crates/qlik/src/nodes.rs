//! The Qlik proxy nodes: each user's Qlik session lives on one node (a proxy service keeps its own
//! sessions), new sessions go to healthy nodes in turn, and a node whose QPS API stops answering,
//! or whose proxy cannot be reached, gets no new sessions until it answers again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::HeaderValue;

use qlik_gateway_net::retry::Retryable;
use qlik_gateway_net::upstream::header_value;

use super::config::QlikConfig;
use super::QpsClient;

/// The target these lines had as a gateway module; operators' `RUST_LOG` filters name it.
const LOG_TARGET: &str = "qlik_gateway::qlik::nodes";

/// One proxy node.
pub struct Node {
    /// Identifies the node in a stored Qlik session: its proxy URL as configured.
    pub key: String,
    /// The node's proxy URL (`qlik.proxy_url`, one of them).
    pub proxy_url: reqwest::Url,
    /// `https://host:port` of the proxy, serialised once (every proxied request starts with it).
    pub base: String,
    /// The node's QPS API (`qlik.qps_api_url`, the one at the same position).
    pub qps: QpsClient,
    /// `Host` for requests to this proxy.
    pub host: HeaderValue,
    /// `Origin` this proxy expects on websocket upgrades (its own).
    pub origin: HeaderValue,
    /// Where the gateway's HTTP client connects for this proxy.
    pub upstream: qlik_gateway_net::upstream::Origin,
    up: AtomicBool,
}

impl Node {
    /// Whether the node gets new sessions (it answered its last check).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// All nodes, in configuration order.
pub struct Nodes {
    list: Vec<Arc<Node>>,
    next: AtomicUsize,
}

impl Nodes {
    /// The configured nodes, each with its QPS client (timed in `metrics` when given).
    pub fn new(
        cfg: &QlikConfig,
        metrics: Option<super::metrics::QpsMetrics>,
    ) -> Result<Self, qlik_gateway_net::tls::TlsFileError> {
        let mut list = Vec::new();
        for n in &cfg.nodes {
            let base = n.proxy_url.origin().ascii_serialization();
            list.push(Arc::new(Node {
                key: n.proxy_url.as_str().trim_end_matches('/').to_string(),
                proxy_url: n.proxy_url.clone(),
                qps: QpsClient::for_node(cfg, &n.qps_api_url)?.with_metrics(metrics.clone()),
                host: header_value(&qlik_gateway_net::upstream::host_header(&n.proxy_url)),
                origin: header_value(&base),
                upstream: qlik_gateway_net::upstream::Origin::of_url(&n.proxy_url),
                base,
                up: AtomicBool::new(true),
            }));
        }
        Ok(Self {
            list,
            next: AtomicUsize::new(0),
        })
    }

    /// Every node, healthy or not, in configuration order.
    pub fn all(&self) -> &[Arc<Node>] {
        &self.list
    }

    /// The node a stored Qlik session lives on (`""`: the first, for sessions stored before
    /// nodes had names). `None` when the configuration no longer has it.
    pub fn get(&self, key: &str) -> Option<Arc<Node>> {
        if key.is_empty() {
            return self.list.first().cloned();
        }
        self.list.iter().find(|n| n.key == key).cloned()
    }

    /// The node for a new Qlik session: the next healthy one in turn; if none is known to be
    /// healthy, the next one anyway (the health information may be stale).
    pub fn pick(&self) -> Option<Arc<Node>> {
        let n = self.list.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.list[(start + i) % n])
            .find(|node| node.is_up())
            .or_else(|| self.list.get(start % n))
            .cloned()
    }

    /// Takes a node out of rotation (its proxy or QPS failed). A lone node stays in: there is
    /// nowhere else to send users, and no health check ([`Nodes::watch`]) would ever bring it
    /// back, so every request would replace its user's Qlik session from then on (each
    /// replacement leaving the old session alive at Qlik).
    pub fn mark_down(&self, node: &Node, why: &str) {
        if self.list.len() < 2 {
            return;
        }
        if node.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(target: LOG_TARGET, node = %node.key, "Qlik node taken out of rotation: {why}");
        }
    }

    /// The one failover decision: after `e` from `node`, takes the node out when the error says
    /// it failed ([`Retryable::is_node_failure`]), and answers whether the call may go to another
    /// node (one that is up).
    pub fn failed(&self, node: &Node, e: &impl Retryable) -> bool {
        if !e.is_node_failure() {
            return false;
        }
        self.mark_down(node, &e.to_string());
        self.list.iter().any(|n| n.key != node.key && n.is_up())
    }

    fn mark_up(&self, node: &Node) {
        if !node.up.swap(true, Ordering::Relaxed) && self.list.len() > 1 {
            tracing::info!(target: LOG_TARGET, node = %node.key, "Qlik node back in rotation");
        }
    }

    /// Checks every node's QPS API every `every`, until the nodes are dropped. With one node
    /// nothing is checked: there is nowhere else to send users.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        if self.list.len() < 2 {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(nodes) = weak.upgrade() else { return };
                let checks = nodes
                    .list
                    .iter()
                    .map(|n| async move { (n, n.qps.probe().await) });
                for (node, result) in futures_util::future::join_all(checks).await {
                    match result {
                        Ok(()) => nodes.mark_up(node),
                        Err(e) => nodes.mark_down(node, &e.to_string()),
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::Nodes;

    /// The nodes of a configuration with these proxy URLs (and real certificate files: each
    /// node's QPS client loads them).
    fn nodes(proxies: &[&str]) -> (Nodes, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let p = |f: &str| dir.path().join(f).display().to_string();
        std::fs::write(p("client.pem"), ca.cert.pem()).unwrap();
        std::fs::write(p("client_key.pem"), ca.signing_key.serialize_pem()).unwrap();
        std::fs::write(p("root.pem"), ca.cert.pem()).unwrap();
        let list = |urls: Vec<String>| format!("[{}]", urls.join(", "));
        let proxy = list(proxies.iter().map(|u| format!("\"{u}\"")).collect());
        let qps = list(proxies.iter().map(|u| format!("\"{u}:4243\"")).collect());
        let toml = format!(
            "proxy_url = {proxy}\nqps_api_url = {qps}\nvirtual_proxy = \"mashup\"\n\
             client_cert = \"{}\"\nclient_key = \"{}\"\nca_cert = \"{}\"\n",
            p("client.pem"),
            p("client_key.pem"),
            p("root.pem")
        );
        let raw: crate::config::raw::RawQlik = figment::Figment::from(
            <figment::providers::Toml as figment::providers::Format>::string(&toml),
        )
        .extract()
        .unwrap();
        let cfg = crate::config::validate(raw, &mut Vec::new()).unwrap();
        (Nodes::new(&cfg, None).unwrap(), dir)
    }

    #[test]
    fn new_sessions_go_round_the_healthy_nodes() {
        let (n, _dir) = nodes(&[
            "https://a.example",
            "https://b.example",
            "https://c.example",
        ]);
        let picks: Vec<String> = (0..6).map(|_| n.pick().unwrap().key.clone()).collect();
        assert_eq!(
            picks,
            ["a", "b", "c", "a", "b", "c"].map(|h| format!("https://{h}.example"))
        );
        let b = n.get("https://b.example").unwrap();
        n.mark_down(&b, "test");
        assert!(
            (0..6).all(|_| n.pick().unwrap().key != b.key),
            "a node that is down gets no new session"
        );
        // Everything down: health may be stale, so a node is still picked.
        for node in n.all() {
            n.mark_down(node, "test");
        }
        assert!(n.pick().is_some());
        n.mark_up(&b);
        assert!((0..3).all(|_| n.pick().unwrap().key == b.key));
    }

    #[test]
    fn a_lone_node_is_never_taken_out() {
        let (n, _dir) = nodes(&["https://qlik.example"]);
        let only = n.pick().unwrap();
        n.mark_down(&only, "a reset");
        assert!(only.is_up(), "no health check would ever bring it back");
    }

    #[test]
    fn failover_is_decided_by_the_error_class() {
        use crate::QlikError;
        let (n, _dir) = nodes(&["https://a.example", "https://b.example"]);
        let a = n.get("https://a.example").unwrap();
        let refused = QlikError::Status {
            call: "session creation",
            status: 403,
            body: String::new(),
        };
        assert!(
            !n.failed(&a, &refused),
            "an answer from Qlik is not a node failure"
        );
        assert!(a.is_up());
        let timeout = QlikError::Timeout {
            url: "https://a.example:4243/qps/session".into(),
            after: std::time::Duration::from_secs(10),
        };
        assert!(n.failed(&a, &timeout), "b is up: the call may go there");
        assert!(!a.is_up(), "a node that did not answer leaves rotation");
        let b = n.get("https://b.example").unwrap();
        assert!(!n.failed(&b, &timeout), "nowhere left to go");
    }

    #[test]
    fn stored_sessions_find_their_node() {
        let (n, _dir) = nodes(&["https://a.example", "https://b.example"]);
        assert_eq!(
            n.get("").unwrap().key,
            "https://a.example",
            "sessions stored before nodes had names"
        );
        assert_eq!(n.get("https://b.example").unwrap().key, "https://b.example");
        assert!(n.get("https://gone.example").is_none());
    }
}
