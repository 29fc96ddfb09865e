//! `server.body_timeout`: a request body whose client stops sending is failed, as nginx's
//! `client_body_timeout` does (the time between two reads, not the whole transfer).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// The client sent no body data for `server.body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body data for {0:?} (server.body_timeout)")]
pub struct BodyStalled(pub Duration);

/// A request body that fails with [`BodyStalled`] when a wait for the client's data lasts longer
/// than the timeout. Only the wait counts: a consumer that reads slowly never trips it.
pub struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    /// Created at the first wait, re-armed at the start of each later wait.
    sleep: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl<B> TimedBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            sleep: None,
            waiting: false,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.waiting = false;
                Poll::Ready(r.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.timeout;
                let sleep = match &mut this.sleep {
                    Some(s) => {
                        if !this.waiting {
                            s.as_mut().reset(deadline);
                        }
                        s
                    }
                    None => this
                        .sleep
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                this.waiting = true;
                if sleep.as_mut().poll(cx).is_ready() {
                    tracing::info!(
                        timeout = ?this.timeout,
                        "request body stalled: the client sent nothing for server.body_timeout; closing the connection"
                    );
                    return Poll::Ready(Some(Err(Box::new(BodyStalled(this.timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_stalled_body_fails_after_the_timeout() {
        use futures_util::StreamExt;
        let frames = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(
            Bytes::from_static(b"a"),
        ))])
        .chain(futures_util::stream::pending());
        let mut b = TimedBody::new(
            http_body_util::StreamBody::new(frames),
            Duration::from_millis(20),
        );
        assert!(b.frame().await.unwrap().unwrap().is_data());
        let e = b.frame().await.unwrap().unwrap_err();
        assert!(e.to_string().contains("server.body_timeout"));
    }
}
