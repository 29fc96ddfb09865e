//! Spike (issue 16, point 5): the floor of an HTTP/1 proxy built on hyper, against a hand-written
//! forwarder, both thread per core like the gateway. Not part of the gateway.
use std::{
    cell::RefCell,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
};

use hyper::{body::Incoming, client::conn::http1::SendRequest, header, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const COOKIE: &str = "X-Qlik-Session-mashup=0123456789abcdef0123456789abcdef";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args[1].clone();
    let listen: SocketAddr = args[2].parse().unwrap();
    let upstream: SocketAddr = args[3].parse().unwrap();
    let threads: usize = args.get(4).map(|s| s.parse().unwrap()).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_reuse_address(true).unwrap();
    sock.bind(&listen.into()).unwrap();
    sock.listen(1024).unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut hs = Vec::new();
    for _ in 0..threads {
        let s: std::net::TcpListener = sock.try_clone().unwrap().into();
        let mode = mode.clone();
        hs.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let l = TcpListener::from_std(s).unwrap();
                let pool: Rc<RefCell<Vec<SendRequest<Incoming>>>> = Rc::default();
                let ipool: InlinePool = Rc::default();
                loop {
                    let (tcp, _) = l.accept().await.unwrap();
                    tcp.set_nodelay(true).unwrap();
                    match mode.as_str() {
                        "hyper" => {
                            tokio::task::spawn_local(serve_hyper(tcp, upstream, pool.clone()));
                        }
                        "inline" => {
                            tokio::task::spawn_local(serve_inline(tcp, upstream, ipool.clone()));
                        }
                        "raw" => {
                            tokio::task::spawn_local(async move {
                                let _ = serve_raw(tcp, upstream).await;
                            });
                        }
                        m => panic!("mode {m}"),
                    }
                }
            });
        }));
    }
    for h in hs {
        h.join().unwrap();
    }
}

async fn serve_hyper(
    tcp: TcpStream,
    upstream: SocketAddr,
    pool: Rc<RefCell<Vec<SendRequest<Incoming>>>>,
) {
    let writev = std::env::var("WRITEV").ok().map(|v| v == "1");
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let pool = pool.clone();
        async move {
            rewrite(&mut req);
            let sender = {
                let mut p = pool.borrow_mut();
                p.retain(|s| !s.is_closed());
                p.iter()
                    .position(|s| s.is_ready())
                    .map(|i| p.swap_remove(i))
            };
            let mut sender = match sender {
                Some(s) => s,
                None => {
                    let up = TcpStream::connect(upstream).await.unwrap();
                    up.set_nodelay(true).unwrap();
                    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(up))
                        .await
                        .unwrap();
                    tokio::task::spawn_local(conn);
                    s
                }
            };
            sender.ready().await.unwrap();
            let resp = sender.send_request(req).await;
            pool.borrow_mut().push(sender);
            Ok::<Response<Incoming>, hyper::Error>(resp.unwrap())
        }
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    if let Some(w) = writev {
        b.writev(w);
    }
    if std::env::var("PIPELINE_FLUSH").is_ok() {
        b.pipeline_flush(true);
    }
    let _ = b.serve_connection(TokioIo::new(tcp), svc).await;
}

/// What every proxy here does to a request: its URI to the path, and the Qlik cookie set.
fn rewrite(req: &mut Request<Incoming>) {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    *req.uri_mut() = pq.parse().unwrap();
    req.headers_mut()
        .insert(header::COOKIE, header::HeaderValue::from_static(COOKIE));
}

/// An upstream connection driven by the request that uses it, not by a task of its own.
struct Up {
    tx: SendRequest<Incoming>,
    conn: hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Incoming>,
}
type InlinePool = Rc<RefCell<Vec<Up>>>;

impl Up {
    /// Drives the connection until it can take a request; `false` once it is closed.
    async fn ready(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            if Pin::new(&mut self.conn).poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            match self.tx.poll_ready(cx) {
                Poll::Ready(r) => Poll::Ready(r.is_ok()),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

/// A response body that drives its connection while it is read, and hands the connection back to
/// the pool at its end.
struct InlineBody {
    body: Incoming,
    up: Option<Up>,
    pool: InlinePool,
}

impl hyper::body::Body for InlineBody {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Some(up) = this.up.as_mut() {
            if Pin::new(&mut up.conn).poll(cx).is_ready() {
                this.up = None;
            }
        }
        let r = Pin::new(&mut this.body).poll_frame(cx);
        // hyper's server stops asking once the body says it is at its end.
        let done = match &r {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.body.is_end_stream(),
            Poll::Ready(Some(Err(_))) => {
                this.up = None;
                false
            }
            Poll::Pending => false,
        };
        if done {
            if let Some(up) = this.up.take() {
                this.pool.borrow_mut().push(up);
            }
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

async fn serve_inline(tcp: TcpStream, upstream: SocketAddr, pool: InlinePool) {
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let pool = pool.clone();
        async move {
            rewrite(&mut req);
            let mut up = loop {
                let popped = pool.borrow_mut().pop();
                match popped {
                    Some(mut up) => {
                        if up.ready().await {
                            break up;
                        }
                    }
                    None => {
                        let s = TcpStream::connect(upstream).await.unwrap();
                        s.set_nodelay(true).unwrap();
                        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                            .await
                            .unwrap();
                        let mut up = Up { tx, conn };
                        if up.ready().await {
                            break up;
                        }
                    }
                }
            };
            let sent = up.tx.send_request(req);
            tokio::pin!(sent);
            let mut conn_done = false;
            let resp = std::future::poll_fn(|cx| {
                if !conn_done && Pin::new(&mut up.conn).poll(cx).is_ready() {
                    conn_done = true;
                }
                sent.as_mut().poll(cx)
            })
            .await;
            let resp = resp.unwrap();
            let up = (!conn_done).then_some(up);
            Ok::<_, hyper::Error>(resp.map(|body| InlineBody { body, up, pool }))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), svc)
        .await;
}

/// GET-only forwarder: one upstream connection per client connection, Content-Length bodies.
async fn serve_raw(mut tcp: TcpStream, upstream: SocketAddr) -> std::io::Result<()> {
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let mut cbuf = vec![0u8; 16384];
    let mut clen = 0;
    let mut ubuf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(4096);
    loop {
        // Request head.
        let head_len = loop {
            let mut hdrs = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut hdrs);
            if let httparse::Status::Complete(n) =
                req.parse(&cbuf[..clen]).map_err(std::io::Error::other)?
            {
                out.clear();
                out.extend_from_slice(req.method.unwrap().as_bytes());
                out.push(b' ');
                out.extend_from_slice(req.path.unwrap().as_bytes());
                out.extend_from_slice(b" HTTP/1.1\r\n");
                for h in req.headers.iter() {
                    if h.name.eq_ignore_ascii_case("cookie")
                        || h.name.eq_ignore_ascii_case("connection")
                    {
                        continue;
                    }
                    out.extend_from_slice(h.name.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(h.value);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"Cookie: ");
                out.extend_from_slice(COOKIE.as_bytes());
                out.extend_from_slice(b"\r\n\r\n");
                break n;
            }
            let n = tcp.read(&mut cbuf[clen..]).await?;
            if n == 0 {
                return Ok(());
            }
            clen += n;
        };
        cbuf.copy_within(head_len..clen, 0);
        clen -= head_len;
        up.write_all(&out).await?;
        // Response head, then Content-Length bytes.
        let mut ulen = 0;
        let (rhead, body_len) = loop {
            let n = up.read(&mut ubuf[ulen..]).await?;
            if n == 0 {
                return Ok(());
            }
            ulen += n;
            let mut hdrs = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut hdrs);
            if let httparse::Status::Complete(n) =
                resp.parse(&ubuf[..ulen]).map_err(std::io::Error::other)?
            {
                let cl = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                    .unwrap_or(0);
                break (n, cl);
            }
        };
        let mut left = rhead + body_len;
        let first = ulen.min(left);
        tcp.write_all(&ubuf[..first]).await?;
        left -= first;
        while left > 0 {
            let n = up.read(&mut ubuf[..left.min(65536)]).await?;
            if n == 0 {
                return Ok(());
            }
            tcp.write_all(&ubuf[..n]).await?;
            left -= n;
        }
    }
}
