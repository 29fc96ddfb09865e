//! One Qlik node's checks, in order: its QPS API, a probe session at its proxy, the engine
//! websocket with that session, and the probe session deleted again.

use super::certificates::EXPORT_QMC;
use super::report::{Check, Report};
use super::{engine, qps, session, Options};
use crate::config::{Config, QlikConfig};
use crate::identity::Identity;
use crate::net::upstream::{self, UpstreamClient};
use crate::qlik::nodes::{Node, Nodes};

/// What every check of one node uses: the gateway's own clients for it.
pub(super) struct Probe<'a> {
    pub q: &'a QlikConfig,
    /// The node as the gateway knows it: proxy URL, `Host`, `Origin`, QPS client.
    pub node: &'a Node,
    pub qps_url: &'a reqwest::Url,
    /// The pooled client the gateway sends its requests to the Qlik proxy with.
    pub upstream: &'a UpstreamClient,
}

/// `virtual proxy "mashup"`, as the checks name it.
pub(super) fn vp_name(q: &QlikConfig) -> String {
    if q.virtual_proxy.is_empty() {
        "the default virtual proxy (no prefix)".into()
    } else {
        format!("virtual proxy \"{}\"", q.virtual_proxy)
    }
}

/// Where the virtual proxy is in the QMC.
pub(super) fn vp_qmc(q: &QlikConfig) -> String {
    if q.virtual_proxy.is_empty() {
        "Virtual proxies → the one with an empty prefix".into()
    } else {
        format!("Virtual proxies → prefix \"{}\"", q.virtual_proxy)
    }
}

/// Checks every configured node with the clients the gateway builds at start-up.
pub(super) async fn check_all(cfg: &Config, opts: &Options, r: &mut Report) {
    let q = &cfg.qlik;
    let nodes = match Nodes::new(q, None) {
        Ok(n) => n,
        Err(e) => {
            for _ in &q.nodes {
                r.push(Check::fail("QPS API client", e.to_string()).qmc(EXPORT_QMC));
            }
            return;
        }
    };
    let client = crate::net::tls::root_store(&q.ca_cert, true)
        .and_then(|roots| upstream::client(roots, q.connect_timeout))
        .map(|c| c.max_response_header_bytes(cfg.server.max_upstream_header_bytes));
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            for _ in &q.nodes {
                r.push(Check::fail("Qlik proxy client", e.to_string()));
            }
            return;
        }
    };
    for (n, node) in q.nodes.iter().zip(nodes.all()) {
        let p = Probe {
            q,
            node,
            qps_url: &n.qps_api_url,
            upstream: &client,
        };
        check_node(&p, opts, r).await;
    }
}

async fn check_node(p: &Probe<'_>, opts: &Options, r: &mut Report) {
    if !qps::reachable(p, r).await {
        return;
    }
    let identity = Identity {
        user_directory: opts.user_directory.clone(),
        user_id: opts.user_id.clone(),
        attributes: Vec::new(),
    };
    // The probe session's cookie value, deleted at the end whatever happened in between.
    let mut created: Option<String> = None;
    let accepted = session::probe(p, &identity, &mut created, r).await;
    if let Some(cookie) = accepted {
        engine::websocket(p, &identity, cookie.as_deref(), r).await;
    }
    if let Some(id) = created {
        match p.node.qps.delete_session(&id).await {
            Ok(()) => r.push(Check::ok(format!(
                "probe session of {}\\{} deleted (DELETE /qps/…/session)",
                identity.user_directory, identity.user_id
            ))),
            Err(e) => r.push(
                Check::fail("deleting the probe session", e.to_string())
                    .gw("the session ends with the virtual proxy's session inactivity timeout"),
            ),
        }
    }
}
