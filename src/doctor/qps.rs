//! A node's QPS API: reachable with mutual TLS, and the xrfkey arrives intact.

use super::certificates::EXPORT_QMC;
use super::node::Probe;
use super::report::{Check, Report};
use crate::qlik::QlikError;

/// Whether the node's QPS API answers the gateway's QPS client; `false` stops the node's checks.
pub(super) async fn reachable(p: &Probe<'_>, r: &mut Report) -> bool {
    let url = p.qps_url.origin().ascii_serialization();
    let mtls = format!("QPS API {url} reachable with mutual TLS");
    match p.node.qps.probe().await {
        Ok(()) => {
            r.push(Check::ok(mtls));
            r.push(Check::ok(format!("QPS API {url} accepts the xrfkey")));
            true
        }
        Err(QlikError::XrfkeyRejected) => {
            r.push(Check::ok(mtls));
            r.push(
                Check::fail(
                    format!("QPS API {url} rejected the xrfkey"),
                    "403 \"XSRF prevention check failed\": something between the gateway and QPS (a reverse proxy, load balancer or API gateway) drops or rewrites the xrfkey query parameter or the X-Qlik-Xrfkey header",
                )
                .gw("point qlik.qps_api_url straight at the node's QPS port 4243, or let that intermediary pass the query string and X-Qlik-* headers unchanged"),
            );
            false
        }
        Err(QlikError::Tls { detail, .. }) => {
            r.push(
                Check::fail(
                    format!("QPS API {url}: TLS handshake failed ({detail})"),
                    "the client certificate is not trusted by this Qlik site (exported from another site or an old export), or qlik.ca_cert is not the root that signed the QPS certificate",
                )
                .qmc(EXPORT_QMC)
                .gw("set qlik.client_cert, qlik.client_key and qlik.ca_cert to client.pem, client_key.pem and root.pem of an export from this site"),
            );
            false
        }
        Err(e @ (QlikError::Unreachable { .. } | QlikError::Timeout { .. })) => {
            r.push(
                Check::fail(format!("QPS API {url} unreachable"), e.to_string())
                    .qmc("Proxies → this node → Authentication listen port / REST API listen port (4243 by default); the Windows firewall on the node must let the gateway in")
                    .gw("check qlik.qps_api_url (host and port 4243)"),
            );
            false
        }
        Err(e) => {
            r.push(Check::fail(format!("QPS API {url}"), e.to_string()));
            false
        }
    }
}
