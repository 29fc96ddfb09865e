//! The `request` span of every log line a request writes, opened only when it writes one.
//!
//! Every log line of a request (and of its websocket relay) carries the request's id and peer in
//! a span named `request`, as `tracing`'s `info_span!` would. Most requests write no line at
//! all, and a span opened and entered for each of them was the largest single item of a proxied
//! request's own work (≈ 2,300 instructions: the registry's slot, the fields rendered, an enter
//! and exit on every poll, the close; BENCHMARKS.md, "Session ids, store hash, lazy request
//! span, timer promise"). So a request
//! only carries its [`RequestSpan`], which the thread polling it knows ([`InRequest`]), and the
//! subscriber ([`WithRequestSpans`]) opens the span at the request's first log line and enters
//! it around each line.
//!
//! What differs from an entered span: a span some library opens inside a request (none do at the
//! default levels) is not nested under `request`, and span-field filters (`RUST_LOG` with
//! `[request{peer=…}]`) do not select a request's lines.

use std::cell::RefCell;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tracing::field::{display, Value};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_core::callsite::DefaultCallsite;
use tracing_core::metadata::Kind;
use tracing_core::span::Current;

static CALLSITE: DefaultCallsite = DefaultCallsite::new(&META);

/// The span `info_span!("request", request_id, peer)` made, with the target it had in
/// `server`, where requests start (a `RUST_LOG` directive for that target still applies).
static META: Metadata<'static> = tracing_core::metadata! {
    name: "request",
    target: "qlik_gateway::server",
    level: tracing::Level::INFO,
    fields: &["request_id", "peer"],
    callsite: &CALLSITE,
    kind: Kind::SPAN,
};

/// Registers the span's callsite with the subscriber just installed, as a macro's first use
/// would: filters learn of it before a request opens one.
pub(super) fn register() {
    CALLSITE.register();
}

thread_local! {
    /// The request whose future this thread is polling.
    static CURRENT: RefCell<Option<Arc<Request>>> = const { RefCell::new(None) };
}

/// One request's log context: what its span shows, and the span once a line opened it.
/// The tasks the request starts (its websocket relay) log into the same span
/// ([`in_current_request`]).
pub(crate) struct RequestSpan(Arc<Request>);

struct Request {
    /// Already checked to be a plain token (`server::request_id`).
    request_id: http::HeaderValue,
    peer: IpAddr,
    /// `None` inside when the filter disables the span (a level above `info`).
    span: OnceLock<Option<Opened>>,
}

/// An open span, closed when the request's last task ends.
struct Opened {
    id: Id,
    subscriber: Arc<dyn Subscriber + Send + Sync>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.subscriber.try_close(self.id.clone());
    }
}

impl RequestSpan {
    /// The context of a request with this id, from this peer.
    pub(crate) fn new(request_id: http::HeaderValue, peer: IpAddr) -> Self {
        Self(Arc::new(Request {
            request_id,
            peer,
            span: OnceLock::new(),
        }))
    }

    /// `future`, its log lines in this request's span.
    pub(crate) fn instrument<F: Future>(self, future: F) -> InRequest<F> {
        InRequest {
            future,
            request: Some(self.0),
        }
    }
}

/// `future`, its log lines in the span of the request this thread is polling: for the tasks a
/// request starts.
pub(crate) fn in_current_request<F: Future>(future: F) -> InRequest<F> {
    InRequest {
        future,
        request: CURRENT.with_borrow(|c| c.clone()),
    }
}

impl Request {
    /// The span's id, opening it in `subscriber` at the first call.
    fn open<S: Subscriber + Send + Sync + 'static>(&self, subscriber: &Arc<S>) -> Option<Id> {
        let opened = self.span.get_or_init(|| {
            if !subscriber.enabled(&META) {
                return None;
            }
            let fields = META.fields();
            let (rid, peer) = (fields.field("request_id")?, fields.field("peer")?);
            // Both as `Display`, as the span had them: the text formatter writes a `&str`
            // through `Debug`, quoted.
            let rid_value = display(self.request_id.to_str().unwrap_or_default());
            let peer_value = display(self.peer);
            let values = [
                (&rid, Some(&rid_value as &dyn Value)),
                (&peer, Some(&peer_value as &dyn Value)),
            ];
            let values = fields.value_set(&values);
            let id = subscriber.new_span(&Attributes::new_root(&META, &values));
            Some(Opened {
                id,
                subscriber: subscriber.clone(),
            })
        });
        opened.as_ref().map(|o| o.id.clone())
    }
}

pin_project_lite::pin_project! {
    /// A future whose log lines go into its request's span ([`RequestSpan::instrument`]).
    pub(crate) struct InRequest<F> {
        #[pin]
        future: F,
        // Taken while the future is polled: the thread's `CURRENT` holds it.
        request: Option<Arc<Request>>,
    }
}

impl<F: Future> Future for InRequest<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _current = Polling::start(this.request);
        this.future.poll(cx)
    }
}

/// Makes a request this thread's `CURRENT` for one poll, and gives it back after, on a panic too.
struct Polling<'a> {
    slot: &'a mut Option<Arc<Request>>,
    before: Option<Arc<Request>>,
}

impl<'a> Polling<'a> {
    fn start(slot: &'a mut Option<Arc<Request>>) -> Self {
        let before = CURRENT.replace(slot.take());
        Self { slot, before }
    }
}

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        *self.slot = CURRENT.replace(self.before.take());
    }
}

/// A subscriber that enters the current request's span ([`CURRENT`]) around each event, opening
/// it at the first; everything else goes to `inner` as it is.
pub(super) struct WithRequestSpans<S> {
    inner: Arc<S>,
}

impl<S> WithRequestSpans<S> {
    pub(super) fn new(inner: S) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }
}

impl<S: Subscriber + Send + Sync + 'static> Subscriber for WithRequestSpans<S> {
    fn event(&self, event: &Event<'_>) {
        let span = CURRENT.with_borrow(|c| c.as_ref().and_then(|r| r.open(&self.inner)));
        match span {
            Some(id) => {
                self.inner.enter(&id);
                self.inner.event(event);
                self.inner.exit(&id);
            }
            None => self.inner.event(event),
        }
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.inner.max_level_hint()
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.inner.new_span(span)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        self.inner.record(span, values)
    }

    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.inner.record_follows_from(span, follows)
    }

    fn event_enabled(&self, event: &Event<'_>) -> bool {
        self.inner.event_enabled(event)
    }

    fn enter(&self, span: &Id) {
        self.inner.enter(span)
    }

    fn exit(&self, span: &Id) {
        self.inner.exit(span)
    }

    fn clone_span(&self, id: &Id) -> Id {
        self.inner.clone_span(id)
    }

    fn try_close(&self, id: Id) -> bool {
        self.inner.try_close(id)
    }

    fn current_span(&self) -> Current {
        self.inner.current_span()
    }

    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tracing_subscriber::layer::{Context as LayerContext, Layer, SubscriberExt};
    use tracing_subscriber::EnvFilter;

    use super::*;
    use crate::logging::tests::Captured;

    /// Counts the spans opened and closed.
    #[derive(Clone, Default)]
    struct Spans(Arc<(AtomicUsize, AtomicUsize)>);

    impl<S: Subscriber> Layer<S> for Spans {
        fn on_new_span(&self, _: &Attributes<'_>, _: &Id, _: LayerContext<'_, S>) {
            self.0 .0.fetch_add(1, Ordering::SeqCst);
        }
        fn on_close(&self, _: Id, _: LayerContext<'_, S>) {
            self.0 .1.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Spans {
        fn opened_closed(&self) -> (usize, usize) {
            (
                self.0 .0.load(Ordering::SeqCst),
                self.0 .1.load(Ordering::SeqCst),
            )
        }
    }

    /// The gateway's subscriber as `init` builds it (text), at `level`, writing into a buffer,
    /// this thread's default while the guard lives.
    fn capture(level: &str) -> (tracing::subscriber::DefaultGuard, Captured, Spans) {
        let out = Captured::default();
        let spans = Spans::default();
        let s = WithRequestSpans::new(
            tracing_subscriber::registry()
                .with(EnvFilter::new(level))
                .with(spans.clone())
                .with(super::super::SpanFields::Text)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(false)
                        .without_time()
                        .with_target(false)
                        .with_writer(out.clone()),
                ),
        );
        (tracing::subscriber::set_default(s), out, spans)
    }

    fn request() -> RequestSpan {
        RequestSpan::new(
            http::HeaderValue::from_static("trace-7"),
            [10, 0, 0, 7].into(),
        )
    }

    #[tokio::test]
    async fn a_request_that_logs_nothing_opens_no_span() {
        let (_default, out, spans) = capture("info");
        request()
            .instrument(async {
                tracing::debug!("below the level");
                tokio::task::yield_now().await;
            })
            .await;
        assert_eq!(spans.opened_closed(), (0, 0));
        assert_eq!(out.text(), "");
    }

    #[tokio::test]
    async fn every_line_of_a_request_and_its_tasks_is_in_one_request_span() {
        let (_default, out, spans) = capture("info");
        tracing::info!("before");
        let relay = request()
            .instrument(async {
                tracing::info!(n = 1, "first");
                tokio::task::yield_now().await;
                tracing::warn!("second");
                // A task the request starts, still running after the request's own future
                // (handed out in an `Option`: a future that yields a future reads as a mistake).
                Some(in_current_request(async {
                    tokio::task::yield_now().await;
                    tracing::info!("from the relay");
                }))
            })
            .await;
        tracing::info!("between");
        assert_eq!(spans.opened_closed(), (1, 0), "open while the relay lives");
        if let Some(relay) = relay {
            relay.await;
        }
        tracing::info!("after");
        assert_eq!(spans.opened_closed(), (1, 1));
        assert_eq!(
            out.text(),
            " INFO before\n\
             \u{20}INFO request{request_id=trace-7 peer=10.0.0.7}: first n=1\n\
             \u{20}WARN request{request_id=trace-7 peer=10.0.0.7}: second\n\
             \u{20}INFO between\n\
             \u{20}INFO request{request_id=trace-7 peer=10.0.0.7}: from the relay\n\
             \u{20}INFO after\n"
        );
    }

    #[tokio::test]
    async fn above_info_the_lines_that_pass_have_no_request_span() {
        // As with `info_span!`: the filter disables the span itself.
        let (_default, out, spans) = capture("warn");
        request()
            .instrument(async {
                tracing::info!("filtered");
                tracing::warn!("kept");
            })
            .await;
        assert_eq!(spans.opened_closed(), (0, 0));
        assert_eq!(out.text(), " WARN kept\n");
    }

    #[test]
    fn a_panicking_poll_leaves_no_request_behind() {
        let (_default, out, _) = capture("info");
        let mut fut = Box::pin(request().instrument(async { panic!("in the request") }));
        let waker = std::task::Waker::noop();
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = fut.as_mut().poll(&mut Context::from_waker(waker));
        }));
        assert!(polled.is_err());
        tracing::info!("outside");
        assert_eq!(out.text(), " INFO outside\n");
    }
}
