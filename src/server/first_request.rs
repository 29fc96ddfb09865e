//! A deadline for a connection's first request.
//!
//! hyper_util's automatic HTTP/1 / HTTP/2 detection reads the first bytes without a timer, and
//! HTTP/2 has no timer for a connection that never opens a stream: a client that connects (or
//! finishes a TLS handshake) and sends nothing would hold a descriptor for ever. This wrapper
//! fails the connection's reads once `server.header_read_timeout` has passed without a complete
//! request head reaching the service; from the first request on it only passes bytes through
//! (hyper times the following heads, and upgraded websockets keep their own idle handling).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::balance::Load;

/// Set by the service when a connection's first request head has arrived.
#[derive(Clone, Default)]
pub struct Arrived(Arc<AtomicBool>);

impl Arrived {
    /// Marks the first request as arrived (cheap enough for every request: one relaxed store).
    pub fn mark(&self) {
        if !self.0.load(Ordering::Relaxed) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// An IO stream whose reads fail with [`io::ErrorKind::TimedOut`] when no request has arrived
/// within the deadline.
pub struct FirstRequestDeadline<S> {
    inner: S,
    /// `None` once the first request arrived: then this is a pass-through.
    armed: Option<Box<(Pin<Box<Sleep>>, Arrived)>>,
    /// The connection's count on its thread, held as long as the stream is open (also when
    /// hyper has handed it to an upgrade).
    _load: Option<Load>,
}

impl<S> FirstRequestDeadline<S> {
    /// Starts the clock now (after the TLS handshake, for TLS connections); `load` is
    /// released when the stream is dropped.
    pub(crate) fn new(inner: S, timeout: Duration, arrived: Arrived, load: Option<Load>) -> Self {
        Self {
            inner,
            armed: Some(Box::new((Box::pin(tokio::time::sleep(timeout)), arrived))),
            _load: load,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstRequestDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(armed) = &mut this.armed {
            if armed.1 .0.load(Ordering::Relaxed) {
                this.armed = None;
            } else {
                let r = Pin::new(&mut this.inner).poll_read(cx, buf);
                if r.is_pending() && armed.0.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no complete request within server.header_read_timeout",
                    )));
                }
                return r;
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstRequestDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_silent_connection_times_out() {
        let (a, _b) = tokio::io::duplex(64);
        let mut s =
            FirstRequestDeadline::new(a, Duration::from_millis(20), Arrived::default(), None);
        let mut buf = [0u8; 8];
        let e = s.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn after_the_first_request_reads_wait_for_ever() {
        let (a, mut b) = tokio::io::duplex(64);
        let arrived = Arrived::default();
        let mut s = FirstRequestDeadline::new(a, Duration::from_millis(20), arrived.clone(), None);
        arrived.mark();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 2];
            s.read_exact(&mut buf).await.map(|_| buf)
        });
        // Well past the deadline: a marked connection no longer has one.
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.write_all(b"hi").await.unwrap();
        assert_eq!(&reader.await.unwrap().unwrap(), b"hi");
    }
}
