//! The HTTP/1.1 client the gateway uses towards the Qlik proxy and a mashup dev server:
//! keep-alive connections, pooled per origin.
//!
//! Written on hyper's connection API rather than taken from `hyper_util`'s pooled client, which
//! spent a fifth of the gateway's time per proxied request on its own machinery: a hashed pool
//! key, a task spawned per response to wait until its connection could be reused, and boxed and
//! moved futures. Here a connection goes back to its pool when its response body has been read
//! to the end, and the next request waits, if at all, in its own task for the connection to be
//! ready.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{tls, Io};

/// The log target this module had inside the gateway crate, kept so that operators' filters
/// (`RUST_LOG=qlik_gateway=…`) and documented log lines still match.
const LOG_TARGET: &str = "qlik_gateway::net::upstream";

/// How long a connection may wait in the pool; Qlik's proxy closes idle keep-alive connections
/// itself after a while, and a connection it closed is never handed out.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// Idle connections kept per origin; more are opened under load and closed afterwards.
const MAX_IDLE_PER_ORIGIN: usize = 256;
/// `server.max_upstream_header_bytes` unless [`UpstreamClient::max_response_header_bytes`] says
/// otherwise.
const DEFAULT_MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Keep-alive HTTP/1.1 client over TLS or plain TCP. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct UpstreamClient {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient").finish_non_exhaustive()
    }
}

/// How a request's time to its response head divided ([`UpstreamClient::send_timed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendTiming {
    /// Waiting for a connection before the request could be written: for a pooled one to
    /// finish its previous response, or for a new one (TLS included).
    pub waited: Duration,
    /// The rest: writing the request and the upstream's answer up to its parsed head.
    pub answered: Duration,
}

struct Pool {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    /// The largest response head read (status line, headers, final CRLF, as received): hyper
    /// stops reading there, so a huge or endless header block costs at most this much memory.
    max_response_head: usize,
    /// Per origin and runtime, idle connections, oldest first. Few origins (the Qlik nodes, a
    /// dev server) and runtimes (one per accepting thread): a list is quicker to search than a
    /// map is to hash.
    idle: Mutex<Vec<(Home, Vec<Idle>)>>,
}

/// Where a connection goes: scheme, host and port. Cheap to clone: every response body carries
/// its origin back to the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    tls: bool,
    /// Without IPv6 brackets.
    host: Arc<str>,
    port: u16,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

struct Idle {
    tx: SendRequest<Body>,
    since: Instant,
}

/// Where a pooled connection belongs: its origin, and the runtime its connection task was
/// spawned on. A request takes only connections of its own runtime, so with one runtime per
/// accepting thread (`server::Server::threads` in the gateway) a request and its upstream
/// connection never wake each other across cores.
#[derive(Clone, PartialEq)]
struct Home {
    origin: Origin,
    runtime: Option<tokio::runtime::Id>,
}

impl Home {
    fn here(origin: &Origin) -> Home {
        Home {
            origin: origin.clone(),
            runtime: tokio::runtime::Handle::try_current().ok().map(|h| h.id()),
        }
    }
}

/// A request that did not get a response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The request's URI is not an absolute http(s) URL with a host.
    #[error("cannot send a request to {0}: not an http(s) URL with a host")]
    Url(String),
    /// The TCP connection could not be made.
    #[error("connect to {origin}: {source}")]
    Connect {
        /// The upstream, as `scheme://host:port`.
        origin: String,
        /// Why connecting failed.
        #[source]
        source: std::io::Error,
    },
    /// The TCP connection was not made within the connect timeout.
    #[error("connect to {origin}: no connection within {after:?}")]
    ConnectTimeout {
        /// The upstream, as `scheme://host:port`.
        origin: String,
        /// The connect timeout that ran out.
        after: Duration,
    },
    /// The TLS handshake did not finish in time; said as [`UpstreamError::ConnectTimeout`] is,
    /// kept apart for `doctor`, which names the step that hung.
    #[error("connect to {origin}: no connection within {after:?}")]
    TlsTimeout {
        /// The upstream, as `scheme://host:port`.
        origin: String,
        /// The connect timeout that ran out.
        after: Duration,
    },
    /// The TLS handshake failed (e.g. the upstream's certificate is not trusted).
    #[error("TLS with {origin}: {source}; check qlik.ca_cert")]
    Tls {
        /// The upstream, as `scheme://host:port`.
        origin: String,
        /// Why the handshake failed.
        #[source]
        source: std::io::Error,
    },
    /// The response head exceeded the limit (or never ended).
    #[error("{origin} answered with a response head larger than {limit} bytes (server.max_upstream_header_bytes)")]
    HeadTooLarge {
        /// The upstream, as `scheme://host:port`.
        origin: String,
        /// The limit in bytes (`server.max_upstream_header_bytes`).
        limit: usize,
    },
    /// The HTTP exchange failed after connecting (the connection broke, a malformed response).
    #[error("{origin}: {source}")]
    Http {
        /// The upstream, as `scheme://host:port`.
        origin: String,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
}

/// Builds a client trusting `roots`, with `connect_timeout` on connect (TCP and TLS).
pub fn client(
    roots: rustls::RootCertStore,
    connect_timeout: Duration,
) -> Result<UpstreamClient, tls::TlsFileError> {
    let mut tls = tls::client_config(roots, None, &[])?;
    // Qlik's proxy speaks HTTP/1.1 for websockets; h1 only keeps one code path for upgrades.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(UpstreamClient {
        pool: Arc::new(Pool {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            connect_timeout,
            max_response_head: DEFAULT_MAX_RESPONSE_HEAD,
            idle: Mutex::new(Vec::new()),
        }),
    })
}

impl UpstreamClient {
    /// Limits response heads to `n` bytes (`server.max_upstream_header_bytes`); a larger one
    /// fails the request with [`UpstreamError::HeadTooLarge`]. For a client just built.
    pub fn max_response_header_bytes(self, n: usize) -> Self {
        Self {
            pool: Arc::new(Pool {
                tls: self.pool.tls.clone(),
                connect_timeout: self.pool.connect_timeout,
                max_response_head: n,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Sends `req` (absolute URI) on a pooled connection to its origin, or a new one. A request
    /// that a pooled connection could not take (the server had just closed it) is sent again
    /// on a new connection; once it may have reached the server, it never is.
    pub async fn request(
        &self,
        mut req: Request<Body>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let origin = Origin::of(req.uri())?;
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = None;
        parts.authority = None;
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *req.uri_mut() =
            Uri::from_parts(parts).map_err(|_| UpstreamError::Url(origin.to_string()))?;
        self.send(&origin, req).await
    }

    /// Sends `req`, whose URI is a path and query, to `origin`, as [`Self::request`] does.
    /// For callers that know their origin in advance (a Qlik node): nothing to parse per request.
    pub async fn send(
        &self,
        origin: &Origin,
        req: Request<Body>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        // Untimed: no reading of the clock at the end, as send_timed's.
        let mut waited = Duration::ZERO;
        self.send_counting(origin, req, Instant::now(), &mut waited)
            .await
    }

    /// As [`Self::send`], for a request the caller began timing at `started`, and how its time
    /// to the response head divides ([`SendTiming`]). The caller's instant is the start, so that
    /// the clock is read once per step (a request's deadline and its timing share one reading).
    pub async fn send_timed(
        &self,
        origin: &Origin,
        req: Request<Body>,
        started: Instant,
    ) -> (Result<Response<PooledBody>, UpstreamError>, SendTiming) {
        let mut waited = Duration::ZERO;
        let r = self.send_counting(origin, req, started, &mut waited).await;
        let total = started.elapsed();
        let timing = SendTiming {
            waited,
            answered: total.saturating_sub(waited),
        };
        (r, timing)
    }

    async fn send_counting(
        &self,
        origin: &Origin,
        mut req: Request<Body>,
        started: Instant,
        waited: &mut Duration,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        if !req.headers().contains_key(header::HOST) {
            if let Ok(h) = HeaderValue::from_str(&origin.host_header()) {
                req.headers_mut().insert(header::HOST, h);
            }
        }
        let mut fresh = false;
        let home = Home::here(origin);
        let mut asked = started;
        loop {
            let pooled = if fresh {
                None
            } else {
                self.pool.checkout(&home, asked).await
            };
            let mut tx = match pooled {
                Some(tx) => tx,
                None => {
                    fresh = true;
                    // Boxed (and bound before the await, or the temporary keeps its room): a
                    // connect with its TLS handshake is a large future, and every request's
                    // future would carry that room for the few that open a connection.
                    let connect = Box::pin(self.pool.connect(origin));
                    connect.await?
                }
            };
            let writing = Instant::now();
            *waited += writing.saturating_duration_since(asked);
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok(self.pool.clone().wrap(resp, home, tx)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh => {
                        tracing::debug!(target: LOG_TARGET, %origin, error = %e.error(), "pooled connection was closed; sending on a new one");
                        req = unsent;
                        fresh = true;
                        asked = Instant::now();
                    }
                    _ => {
                        let source = e.into_error();
                        if source.is_parse_too_large() {
                            return Err(UpstreamError::HeadTooLarge {
                                origin: origin.to_string(),
                                limit: self.pool.max_response_head,
                            });
                        }
                        return Err(UpstreamError::Http {
                            origin: origin.to_string(),
                            source,
                        });
                    }
                },
            }
        }
    }

    /// A new connection to `origin` (TCP, and TLS for https, with this client's roots and connect
    /// timeout) that the pool never sees: for an upgrade that keeps its connection, such as an
    /// engine websocket.
    pub async fn connect(&self, origin: &Origin) -> Result<Pin<Box<dyn Io>>, UpstreamError> {
        self.pool.open(origin).await
    }
}

impl Origin {
    /// The origin of an absolute `http(s)` URI.
    pub fn of(uri: &Uri) -> Result<Origin, UpstreamError> {
        let bad = || UpstreamError::Url(uri.to_string());
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let host = uri.host().ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Origin {
            tls,
            host: host.into(),
            port,
        })
    }

    /// The origin of a configured URL, which validation has checked to be `http(s)` with a host.
    pub fn of_url(url: &reqwest::Url) -> Origin {
        let tls = url.scheme() == "https";
        let host = url.host_str().unwrap_or_default();
        Origin {
            tls,
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port: url
                .port_or_known_default()
                .unwrap_or(if tls { 443 } else { 80 }),
        }
    }

    /// The `Host` header for this origin: the port only when it is not the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.to_string()
        };
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }
}

impl Pool {
    /// The most recently used idle connection to `origin` that is still open, once it is ready;
    /// `now`: the caller's reading of the clock, against which idle time is judged.
    async fn checkout(&self, home: &Home, now: Instant) -> Option<SendRequest<Body>> {
        loop {
            let idle = {
                let mut all = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                let (_, list) = all.iter_mut().find(|(h, _)| h == home)?;
                list.pop()?
            };
            if idle.tx.is_closed() || now.saturating_duration_since(idle.since) > IDLE_TIMEOUT {
                continue;
            }
            let mut tx = idle.tx;
            // Released when its last response ended; the connection may still be finishing it.
            if tx.ready().await.is_ok() {
                return Some(tx);
            }
        }
    }

    fn checkin(&self, home: Home, tx: SendRequest<Body>) {
        if tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut all = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = match all.iter().position(|(h, _)| *h == home) {
            Some(i) => &mut all[i].1,
            None => {
                all.push((home, Vec::new()));
                let last = all.len() - 1;
                &mut all[last].1
            }
        };
        // The oldest are at the front: drop those that waited too long (closing them).
        let stale = list
            .iter()
            .take_while(|i| now.duration_since(i.since) > IDLE_TIMEOUT)
            .count();
        list.drain(..stale);
        if list.len() < MAX_IDLE_PER_ORIGIN {
            list.push(Idle { tx, since: now });
        }
    }

    /// TCP to `origin`, and TLS over it for https.
    async fn open(&self, origin: &Origin) -> Result<Pin<Box<dyn Io>>, UpstreamError> {
        let timed_out = |in_tls: bool| {
            let (origin, after) = (origin.to_string(), self.connect_timeout);
            if in_tls {
                UpstreamError::TlsTimeout { origin, after }
            } else {
                UpstreamError::ConnectTimeout { origin, after }
            }
        };
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((&*origin.host, origin.port)),
        )
        .await
        .map_err(|_| timed_out(false))?
        .map_err(|source| UpstreamError::Connect {
            origin: origin.to_string(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        let io: Pin<Box<dyn Io>> = if origin.tls {
            let name = rustls::pki_types::ServerName::try_from(origin.host.to_string())
                .map_err(|_| UpstreamError::Url(origin.to_string()))?;
            let tls = tokio::time::timeout(self.connect_timeout, self.tls.connect(name, tcp))
                .await
                .map_err(|_| timed_out(true))?
                .map_err(|source| UpstreamError::Tls {
                    origin: origin.to_string(),
                    source,
                })?;
            Box::pin(tls)
        } else {
            Box::pin(tcp)
        };
        Ok(io)
    }

    async fn connect(&self, origin: &Origin) -> Result<SendRequest<Body>, UpstreamError> {
        let io = self.open(origin).await?;
        let (tx, conn) = http1::Builder::new()
            .max_header_size(self.max_response_head)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| UpstreamError::Http {
                origin: origin.to_string(),
                source,
            })?;
        let o = origin.to_string();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(target: LOG_TARGET, origin = %o, error = %e, "upstream connection ended");
            }
        });
        Ok(tx)
    }

    fn wrap(
        self: Arc<Self>,
        resp: Response<Incoming>,
        home: Home,
        tx: SendRequest<Body>,
    ) -> Response<PooledBody> {
        // An upgraded connection belongs to the upgrade from now on.
        let checkin = (resp.status() != StatusCode::SWITCHING_PROTOCOLS).then_some(Checkin {
            pool: self,
            home,
            tx,
        });
        resp.map(|body| {
            let mut b = PooledBody {
                body,
                checkin,
                first: None,
            };
            if b.body.is_end_stream() {
                b.release();
            }
            b
        })
    }
}

struct Checkin {
    pool: Arc<Pool>,
    home: Home,
    tx: SendRequest<Body>,
}

/// A response body from upstream. Read to its end, it returns its connection to the pool;
/// dropped before, the connection is closed (what remains of the response is never read).
pub struct PooledBody {
    body: Incoming,
    checkin: Option<Checkin>,
    /// The first frame, read ahead by [`PooledBody::read_first_frame`].
    first: Option<Result<Frame<Bytes>, hyper::Error>>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("pooled", &self.checkin.is_some())
            .finish_non_exhaustive()
    }
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(c) = self.checkin.take() {
            c.pool.checkin(c.home, c.tx);
        }
    }

    /// Reads the first frame of a body whose length the upstream announced, waiting for it until
    /// `deadline` at most, so that the response's head and the start of its body leave in one
    /// write. Passed on as soon as it is parsed, a head goes out alone whenever the upstream
    /// wrote head and body separately (nginx's `sendfile`, any server that flushes its head),
    /// which costs the client a segment, a wake-up and an ACK; nginx holds output the same way
    /// (`postpone_output`). A body without an announced length may be a stream whose first frame
    /// comes late (events, long polls): it is not waited for. Past the deadline the head goes on
    /// without its body.
    pub async fn read_first_frame(&mut self, deadline: tokio::time::Instant) {
        if self.first.is_some()
            || self.body.is_end_stream()
            || self.body.size_hint().exact().is_none()
        {
            return;
        }
        let read = std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx));
        if let Ok(Some(frame)) = tokio::time::timeout_at(deadline, read).await {
            self.first = Some(frame);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(first));
        }
        let r = Pin::new(&mut this.body).poll_frame(cx);
        match &r {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.checkin = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let ahead = match &self.first {
            Some(Ok(frame)) => frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => 0,
        };
        let rest = self.body.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(ahead));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(ahead));
        }
        hint
    }
}

/// `Host` header value for an `http(s)` URL (port only when not the scheme's default).
pub fn host_header(url: &reqwest::Url) -> String {
    Origin::of_url(url).host_header()
}

/// A header value from configuration-derived text (empty if it cannot be one).
pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback HTTP/1.1 server answering every request with `body`; `close_after` requests
    /// on a connection it closes it (without saying so). Returns its URL and its accept count.
    async fn server(body: &'static str, close_after: usize) -> (String, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", l.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..close_after {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut b = [0u8; 1024];
                            match s.read(&mut b).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&b[..n]),
                            }
                        }
                        buf.clear();
                        let r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(r.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    fn test_client() -> UpstreamClient {
        client(rustls::RootCertStore::empty(), Duration::from_secs(5)).unwrap()
    }

    async fn get(c: &UpstreamClient, url: &str) -> String {
        let req = Request::get(url).body(Body::empty()).unwrap();
        let resp = c.request(req).await.unwrap();
        let body = axum::body::to_bytes(Body::new(resp.into_body()), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn connections_are_reused_once_a_response_was_read() {
        let (url, accepted) = server("hello", usize::MAX).await;
        let c = test_client();
        for _ in 0..5 {
            assert_eq!(get(&c, &url).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // A response dropped unread takes its connection with it.
        let req = Request::get(&url).body(Body::empty()).unwrap();
        drop(c.request(req).await.unwrap());
        assert_eq!(get(&c, &url).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_runtime_only_reuses_its_own_connections() {
        let (url, accepted) = server("mine", usize::MAX).await;
        let c = test_client();
        assert_eq!(get(&c, &url).await, "mine");
        // Another runtime (another serving thread) gets a connection of its own, which its own
        // runtime drives, and reuses it; this runtime's is still here afterwards.
        let (other, u) = (c.clone(), url.clone());
        let answers = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async { (get(&other, &u).await, get(&other, &u).await) })
        })
        .join()
        .unwrap();
        assert_eq!(answers, ("mine".to_owned(), "mine".to_owned()));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(get(&c, &url).await, "mine");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced_transparently() {
        let (url, accepted) = server("again", 1).await;
        let c = test_client();
        for _ in 0..4 {
            assert_eq!(get(&c, &url).await, "again");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_first_frame_read_ahead_is_still_the_bodys_and_returns_the_connection() {
        let (url, accepted) = server("read ahead", usize::MAX).await;
        let c = test_client();
        for _ in 0..2 {
            let req = Request::get(&url).body(Body::empty()).unwrap();
            let mut resp = c.request(req).await.unwrap();
            let far = tokio::time::Instant::now() + Duration::from_secs(60);
            resp.body_mut().read_first_frame(far).await;
            // Whatever was read ahead is still announced and still delivered.
            let body = resp.body_mut();
            assert!(!body.is_end_stream());
            assert_eq!(body.size_hint().exact(), Some(10));
            let mut body = resp.into_body();
            let mut got = Vec::new();
            while let Some(frame) =
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {
                got.extend_from_slice(&frame.unwrap().into_data().unwrap());
            }
            assert_eq!(got, b"read ahead");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn connect_failures_name_the_origin() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let c = test_client();
        let req = Request::get(format!("http://{addr}/"))
            .body(Body::empty())
            .unwrap();
        let e = c.request(req).await.unwrap_err();
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }

    #[tokio::test]
    async fn connect_opens_a_stream_the_pool_never_sees() {
        let (url, accepted) = server("hello", usize::MAX).await;
        let c = test_client();
        let origin = Origin::of(&url.parse().unwrap()).unwrap();
        let mut io = c.connect(&origin).await.unwrap();
        io.write_all(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut b = [0u8; 64];
        let n = io.read(&mut b).await.unwrap();
        assert!(b[..n].starts_with(b"HTTP/1.1 200"));
        assert_eq!(get(&c, &url).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "not pooled, either way");
    }

    #[test]
    fn origins_and_host_headers() {
        let o = Origin::of(&"https://qlik.example.com/mashup/x?y=1".parse().unwrap()).unwrap();
        assert_eq!((o.tls, &*o.host, o.port), (true, "qlik.example.com", 443));
        assert_eq!(o.host_header(), "qlik.example.com");
        let o = Origin::of(&"http://[::1]:8080/".parse().unwrap()).unwrap();
        assert_eq!((&*o.host, o.port), ("::1", 8080));
        assert_eq!(o.host_header(), "[::1]:8080");
        assert_eq!(o.to_string(), "http://[::1]:8080");
        assert!(Origin::of(&"/relative".parse().unwrap()).is_err());
        assert!(Origin::of(&"ftp://x/".parse().unwrap()).is_err());
        for (url, host) in [
            ("https://qlik.example.com/", "qlik.example.com"),
            ("http://[::1]:8080/", "[::1]:8080"),
            ("http://q:80/", "q"),
            ("https://q:4243/", "q:4243"),
        ] {
            let parsed = reqwest::Url::parse(url).unwrap();
            let o = Origin::of_url(&parsed);
            assert_eq!(o, Origin::of(&url.parse().unwrap()).unwrap(), "{url}");
            // The Host header of a configured URL (Qlik nodes, the dev server) comes from here.
            assert_eq!(crate::upstream::host_header(&parsed), host, "{url}");
        }
    }
}
