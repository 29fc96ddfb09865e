//! Raw upgraded connections (a dev server's HMR websocket): the handshake is forwarded as-is and the
//! bytes are copied both ways. No frames are parsed because no Qlik credentials are involved.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::header::{self, HeaderValue};
use http::Request;
use hyper_util::rt::TokioIo;

use crate::error::GatewayError;
use crate::headers;
use crate::mashup::DevServer;
use crate::sockets::CloseReason;
use crate::state::AppState;

/// Forwards an upgrade request to the dev server and splices the two connections after a 101.
pub(crate) async fn upgrade(
    state: Arc<AppState>,
    dev: &DevServer,
    mut req: Request<Body>,
    peer: SocketAddr,
) -> Result<Response, GatewayError> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _body) = req.into_parts();
    let upgrade_to = parts.headers.get(header::UPGRADE).cloned();
    let (uri, mut h) = super::http::to_mashup_parts(&state, dev, &parts.uri, parts.headers, peer);
    // The dev server checks Origin against its own host; present it as itself.
    if h.contains_key(header::ORIGIN) {
        h.insert(header::ORIGIN, dev.origin.clone());
    }
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(u) = upgrade_to {
        h.insert(header::UPGRADE, u);
    }
    let mut resp = super::http::send(
        &state,
        &dev.upstream,
        &parts.method,
        uri,
        h,
        Body::empty(),
        state.cfg.qlik.connect_timeout * 4,
        "mashup",
    )
    .await?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let (mut rp, rb) = resp.into_parts();
        headers::remove_hop_by_hop(&mut rp.headers);
        return Ok(Response::from_parts(rp, Body::new(rb)));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let guard = state.sockets.register(None);
    tokio::spawn(async move {
        let mut guard = guard;
        let (Ok(up), Ok(down)) = (upstream_upgrade.await, client_upgrade.await) else {
            return;
        };
        let mut up = TokioIo::new(up);
        let mut down = TokioIo::new(down);
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
            _ = async { while guard.closed().await != CloseReason::Shutdown {} } => {}
        }
    });
    let mut out = Response::builder().status(http::StatusCode::SWITCHING_PROTOCOLS);
    for (k, v) in resp.headers() {
        out = out.header(k, v);
    }
    out.body(Body::empty()).map_err(|e| GatewayError::Upstream {
        upstream: "mashup",
        detail: e.to_string(),
    })
}
