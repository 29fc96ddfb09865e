//! A timer always due within the next second on every serving runtime, so that arming a
//! request's timer never costs a system call.
//!
//! Before it parks, tokio's timer driver promises itself a wake-up at the earliest deadline in
//! its wheel; arming a timer due before that promise unparks the driver (a `write` to its
//! eventfd, and an `epoll_wait` that returns at once), even when the thread arming it is the
//! driver's own, awake one. hyper arms each kept-alive connection's `server.header_read_timeout`
//! (10 s) after every response, and the proxy arms `qlik.response_timeout` (120 s) for every
//! request: whenever every connection was waiting for Qlik at the last park, the promise was two
//! minutes away and the next response broke it (0.42 writes per proxied request at 4
//! connections, BENCHMARKS.md "System calls"). With this timer the promise is never more than a
//! second away, and every timer the gateway arms is due later; the price is one wake-up a second
//! per serving thread.

use std::time::Duration;

use tokio::time::MissedTickBehavior;

/// Shorter than every timeout the gateway arms per request or connection.
const PERIOD: Duration = Duration::from_secs(1);

/// Keeps a timer due within [`PERIOD`] on the current runtime until dropped.
pub(super) async fn keep() {
    let mut tick = tokio::time::interval(PERIOD);
    // After a stall, one tick and on: catching up would only wake the thread for nothing.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}
