//! The engine websocket, in phases, each a module of its own:
//!
//! 1. `upgrade`: the browser's upgrade is checked (Origin, the handshake, the per-session
//!    socket limit) before Qlik is contacted.
//! 2. `dial`: the upstream socket is opened with the user's Qlik session and CSRF token, on
//!    another node when the session's node fails.
//! 3. `park`: until either side sends its first bytes, both legs are held raw, without
//!    buffers (a page that has not spoken yet; an engine that greets only after the client).
//! 4. `settle`: until Qlik has said who the user is (`OnAuthenticationInformation`), frames
//!    are read, and a Qlik session Qlik lost is renewed under the browser's socket.
//! 5. `relay`: after that, bytes pass through as they come and only frame boundaries are
//!    followed ([`crate::proxy::frames`]): an open socket holds no buffers, and large frames
//!    stream through.
//! 6. `close`: the closes the gateway makes, and the end of a frame Qlik cut off.
//!
//! Qlik's fatal proxy notifications are watched in both the settle phase and the relay
//! (`notices`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::Request;
use hyper_util::rt::TokioIo;

use crate::error::GatewayError;
use crate::logging::in_current_request;
use crate::session::{GatewaySession, SessionId};
use crate::state::AppState;
use legs::{Client, Side, Upstream};
use notices::FatalWatch;
use park::Parked;
use relay::{Legs, Relay};
use settle::{Settled, Settling};

mod activity;
mod close;
mod dial;
mod legs;
mod notices;
mod park;
mod relay;
mod settle;
mod upgrade;

pub(crate) use upgrade::origin_allowed;

/// Handles an engine websocket upgrade for a logged-in user.
pub(crate) async fn engine(
    state: Arc<AppState>,
    mut req: Request<Body>,
    peer: SocketAddr,
    sid: SessionId,
    gw: Arc<GatewaySession>,
) -> Result<Response, GatewayError> {
    let upgrade::Upgrade { key, path_q, fwd } = upgrade::check(&state, &req, peer)?;
    let guard = upgrade::register(&state, &sid, &gw)?;
    let qlik = state.qlik.ensure(&sid, &gw).await?;
    let (upstream, qlik) =
        dial::connect_with_session(&state, &sid, &path_q, &fwd, qlik.into_owned()).await?;

    let on_upgrade = hyper::upgrade::on(&mut req);
    let fatal = FatalWatch::new(state.clone(), sid.clone(), upgrade::user_of(&gw));
    let mut socket = Settling {
        state,
        sid,
        path_q,
        fwd,
        qlik,
        guard,
        fatal,
    };
    // Qlik's handshake has been read through a tap that stops at the end of the response head:
    // tungstenite holds no bytes, the tap the rest.
    let (qlik_io, qlik_read) = upstream.into_inner().into_parts();
    // A task that holds little while the socket is parked; settling gets a task of its own.
    tokio::spawn(in_current_request(async move {
        let client = match on_upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => return tracing::debug!(error = %e, "client upgrade failed"),
        };
        let woken = park::park(&socket.state, &mut socket.guard, client, qlik_io, qlik_read);
        if let Parked::Woken(legs) = woken.await {
            let (client, upstream) = *legs;
            tokio::spawn(in_current_request(run(socket, client, upstream)));
        }
    }));
    Ok(upgrade::switching_protocols(&key))
}

/// Settles the socket, then hands it to the byte relay.
async fn run(mut socket: Settling, mut client: Client, upstream: Upstream) {
    let (upstream, closed) = match socket.run(&mut client, upstream).await {
        Settled::Relay(up, closed) => (*up, closed),
        Settled::Done => return,
    };
    // A task of its own: this one's future is sized for the settle phase (handshakes,
    // reconnects, TLS), several KiB that an open socket would otherwise keep for its lifetime.
    tokio::spawn(in_current_request(relay_phase(
        socket, client, upstream, closed,
    )));
}

/// Phase two: bytes both ways as they come, tungstenite gone; see [`relay`].
async fn relay_phase(socket: Settling, client: Client, upstream: Upstream, closed: Option<Side>) {
    let Settling {
        state,
        sid,
        qlik,
        guard,
        fatal,
        path_q,
        fwd,
    } = socket;
    // Kept for reconnects, which only the settle phase makes. The header values share the
    // buffer hyper read the upgrade request into (16 KiB): dropped now, not with the socket.
    drop((path_q, fwd));
    let (client, client_rest) = client.into_inner().into_parts();
    let (upstream, upstream_rest) = upstream.into_inner().into_parts();
    let legs = Legs {
        client,
        client_rest,
        upstream,
        upstream_rest,
        closed,
    };
    let relay = Relay {
        state,
        sid,
        qlik,
        guard,
        fatal,
    };
    relay::run(relay, legs).await;
}

/// Property tests (`PROPTEST_CASES` sets the case count; see the README's long run).
#[cfg(test)]
mod proptests {
    use super::notices::{fatal_notice, FATAL_NOTICE_MAX};
    use super::settle::{classify, AuthSignal};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// JSON shaped like Qlik's frames: the methods and keys the classifiers look for, nested.
    fn qlik_json() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec![
            "jsonrpc",
            "method",
            "params",
            "id",
            "mustAuthenticate",
            "severity",
            "message",
            "result",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            prop::sample::select(vec![
                "OnAuthenticationInformation",
                "OnSessionTimedOut",
                "OnSessionClosed",
                "OnNoEngineAvailable",
                "fatal",
                "warning",
                "",
                "\"id\"",
            ])
            .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn classifiers_never_panic_on_text(text in any::<String>()) {
            let _ = classify(&text);
            let _ = fatal_notice(&text);
        }

        #[test]
        fn classifiers_never_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = classify(&text);
            let _ = fatal_notice(&text);
        }

        /// The login prompt is recognised only where Qlik puts it, and a fatal notice only on a
        /// notification (no `id`) small enough to be one.
        #[test]
        fn classification_follows_the_json(v in qlik_json(), pad in 0usize..5000) {
            let text = v.to_string();
            let method = v.get("method").and_then(Value::as_str);
            let must = method == Some("OnAuthenticationInformation")
                && v.pointer("/params/mustAuthenticate") == Some(&Value::Bool(true));
            prop_assert_eq!(classify(&text) == AuthSignal::MustAuthenticate, must, "{}", text);
            if let Some(n) = fatal_notice(&text) {
                prop_assert!(v.get("id").is_none() && method == Some(n.method.as_str()));
            }
            let padded = format!("{text}{}", " ".repeat(pad));
            if padded.len() > FATAL_NOTICE_MAX {
                prop_assert!(fatal_notice(&padded).is_none());
            }
        }

        /// Deep nesting is refused by the JSON parser's depth limit, not by a stack overflow.
        #[test]
        fn deep_nesting_does_not_overflow(depth in 100usize..20_000) {
            let text = format!(
                "{}\"OnAuthenticationInformation\"{}",
                "[".repeat(depth),
                "]".repeat(depth)
            );
            prop_assert_eq!(classify(&text), AuthSignal::Other);
            let text = format!("{{\"method\":{}1{}", "[".repeat(depth), "]".repeat(depth));
            prop_assert!(fatal_notice(&text).is_none());
        }
    }
}
