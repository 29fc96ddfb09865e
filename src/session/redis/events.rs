//! Session events across replicas: the pub/sub subscription that feeds every listener.

use super::*;

/// Buffered events per listener before the slowest one starts missing some (the sweep is the
/// backstop for those).
pub(super) const EVENT_BUFFER: usize = 1024;
/// The event subscription is checked with a PING this often (a server that stopped answering
/// leaves the socket open).
pub(super) const SUBSCRIPTION_PING: Duration = Duration::from_secs(10);
/// The longest pause between attempts to get the event subscription back.
pub(super) const RESUBSCRIBE_MAX_DELAY: Duration = Duration::from_secs(1);

/// Feeds `tx` from the `channel` subscription until every receiver is gone, reconnecting and
/// resubscribing whenever the subscription is lost (a [`SessionEvent::Resubscribed`] tells the
/// listeners that events may have been missed meanwhile).
pub(super) async fn subscribe(
    source: Source,
    channel: String,
    timeout: Duration,
    target: String,
    tx: tokio::sync::broadcast::Sender<SessionEvent>,
) {
    use futures_util::StreamExt;
    let mut delay = Duration::from_millis(50);
    let mut gap = false;
    let mut failures = 0u32;
    loop {
        let connect = async {
            // Through Sentinel, each (re)subscription goes to the master of the moment.
            let mut p = source.client().await?.get_async_pubsub().await?;
            p.subscribe(&channel).await?;
            RedisResult::Ok(p)
        };
        let attempt = tokio::select! {
            _ = tx.closed() => return,
            r = tokio::time::timeout(timeout, connect) => r,
        };
        match attempt {
            Ok(Ok(pubsub)) => {
                if gap {
                    tracing::info!(redis = %target, channel = %channel, "session events: subscribed again");
                    let _ = tx.send(SessionEvent::Resubscribed);
                }
                gap = true;
                failures = 0;
                delay = Duration::from_millis(50);
                let (mut sink, mut stream) = pubsub.split();
                let mut ping = tokio::time::interval(SUBSCRIPTION_PING);
                ping.reset();
                let why = loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        m = stream.next() => match m {
                            Some(m) => {
                                let Ok(payload) = m.get_payload::<String>() else { continue };
                                if let Some(key) = payload.strip_prefix("logout:") {
                                    let _ = tx.send(SessionEvent::LoggedOut(key.to_string()));
                                }
                            }
                            None => break "connection lost",
                        },
                        _ = ping.tick() => {
                            let pong = tokio::time::timeout(timeout, sink.ping::<::redis::Value>()).await;
                            if !matches!(pong, Ok(Ok(_))) {
                                break "no answer to PING";
                            }
                        }
                    }
                };
                tracing::warn!(redis = %target, channel = %channel, "session events: subscription lost ({why}); resubscribing (the sweep covers the gap)");
            }
            Ok(Err(e)) => {
                gap = true;
                failures += 1;
                if failures == 1 {
                    tracing::warn!(redis = %target, error = %describe(&e), "session events: cannot subscribe; retrying");
                }
            }
            Err(_) => {
                gap = true;
                failures += 1;
                if failures == 1 {
                    tracing::warn!(redis = %target, "session events: no answer to SUBSCRIBE within {}; retrying", humantime::format_duration(timeout));
                }
            }
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RESUBSCRIBE_MAX_DELAY);
    }
}
