//! Load generator for bench/run.sh. Prints one JSON line per run.
//!
//!   bench-loadgen ws-echo URL ORIGIN COOKIE CONNS SIZE text|binary SECS
//!   bench-loadgen ws-idle URL ORIGIN COOKIE CONNS [greeting|call|quiet]
//!                                                      (holds the sockets until stdin closes)
//!   bench-loadgen login BASE PATH CONNS SECS
//!   bench-loadgen get BASE PATH CONNS SECS
//!   bench-loadgen logins BASE[,BASE…] N CONNS [PATH] [USERS]    (bench/scale.sh)
//!   bench-loadgen soak BASE APP USERS SECS              (bench/soak.sh; see soak.rs)
//!
//! ws-echo: CONNS sockets, each sending one frame and waiting for its echo, in a loop (closed
//! loop, one message in flight per socket). `text` sends a JSON-RPC `SimEcho` call padded to SIZE
//! bytes and waits for the reply with its id; `binary` sends SIZE bytes and waits for the binary
//! echo. The first second is warm-up and not counted.
//!
//! ws-idle: a socket whose open fails is opened once more (counted as `retried`; `errors` are
//! those that failed twice); after each upgrade, `greeting` (the default) reads Qlik's first frame, `call` sends
//! one JSON-RPC call and reads until its answer (what a client opening a document does, and
//! what makes Qlik greet when it greets only after the client's first frame), `quiet` sends and
//! reads nothing (a page that has not spoken yet). Then the socket is held, idle.
//!
//! login: CONNS loops, each logging in (`GET /_gateway/login`) and fetching PATH with the new
//! session's cookie, over and over: a login and its Qlik session creation per iteration.
//! get: the same loops logging in once and then fetching PATH over and over on kept-alive
//! connections (what a page does once it is signed in).
//!
//! logins: exactly N logins (`GET /_gateway/login`), shared among CONNS loops, as fast as they
//! go; each new session's cookie then fetches PATH (unless PATH is empty or `-`), which makes the
//! gateway create its Qlik session. With several BASEs, login k goes to BASE[k % n] and its PATH
//! request to the next one: a load balancer without affinity, so a session made on one replica
//! is used on another. USERS > 0 sends `X-Remote-User: benchK` (K = k % USERS) for the
//! trusted_header provider, so that the sessions belong to USERS users instead of one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

mod soak;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn arg(args: &[String], i: usize) -> &str {
    args.get(i).map(String::as_str).unwrap_or_else(|| {
        eprintln!("missing argument {i}; see the header of bench/loadgen/src/main.rs");
        std::process::exit(2)
    })
}

fn num<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    arg(args, i).parse().unwrap_or_else(|_| {
        eprintln!("argument {i} is not a number");
        std::process::exit(2)
    })
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn open(url: &str, origin: &str, cookie: &str) -> Result<Ws, String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut()
        .insert("origin", origin.parse().map_err(|_| "bad origin")?);
    if !cookie.is_empty() {
        req.headers_mut()
            .insert("cookie", cookie.parse().map_err(|_| "bad cookie")?);
    }
    let cfg = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(cfg), true)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// The cookies (`name=value; …`) a `GET /_gateway/login` answer sets, if it is the login's 302.
fn login_cookie<B>(resp: &http::Response<B>) -> Result<String, String> {
    let cookie: Vec<&str> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(""))
        .collect();
    if resp.status().as_u16() != 302 || cookie.is_empty() {
        return Err(format!("login answered {}", resp.status()));
    }
    Ok(cookie.join("; "))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match arg(&args, 1) {
        "ws-echo" => ws_echo(&args).await,
        "ws-idle" => ws_idle(&args).await,
        "login" => login(&args, true).await,
        "get" => login(&args, false).await,
        "logins" => logins(&args).await,
        "soak" => soak::run(&args).await,
        other => {
            eprintln!("unknown command {other}");
            std::process::exit(2)
        }
    }
}

async fn ws_echo(args: &[String]) {
    let url = arg(args, 2).to_string();
    let origin = arg(args, 3).to_string();
    let cookie = arg(args, 4).to_string();
    let conns: usize = num(args, 5);
    let size: usize = num(args, 6);
    let binary = arg(args, 7) == "binary";
    let secs: f64 = num(args, 8);

    let mut sockets = Vec::new();
    for _ in 0..conns {
        match open(&url, &origin, &cookie).await {
            Ok(ws) => sockets.push(ws),
            Err(e) => {
                println!("{{\"error\":{:?}}}", e);
                std::process::exit(1)
            }
        }
    }
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut ws in sockets {
        let recording = recording.clone();
        let stop = stop.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let payload = Bytes::from(vec![b'x'; size]);
            let mut id: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let msg = if binary {
                    Message::Binary(payload.clone())
                } else {
                    let head = format!(
                        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"SimEcho\",\"handle\":-1,\"params\":[\""
                    );
                    let pad = size.saturating_sub(head.len() + 3);
                    Message::text(format!("{head}{}\"]}}", "x".repeat(pad)))
                };
                let want = format!("\"id\":{id},");
                let t0 = Instant::now();
                if ws.send(msg).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return lat;
                }
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Binary(_))) if binary => break,
                        Some(Ok(Message::Text(t))) if !binary && t.as_str().contains(&want) => break,
                        Some(Ok(_)) => continue,
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            return lat;
                        }
                    }
                }
                if recording.load(Ordering::Relaxed) {
                    lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
            }
            let _ = ws.close(None).await;
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    recording.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(Ok(l)) = tokio::time::timeout(Duration::from_secs(10), t).await {
            all.extend(l);
        }
    }
    all.sort_unstable();
    println!(
        "{{\"rate\":{:.1},\"p50_us\":{},\"p99_us\":{},\"count\":{},\"errors\":{}}}",
        all.len() as f64 / elapsed,
        pct(&all, 0.50),
        pct(&all, 0.99),
        all.len(),
        errors.load(Ordering::Relaxed)
    );
}

async fn ws_idle(args: &[String]) {
    let url = arg(args, 2).to_string();
    let origin = arg(args, 3).to_string();
    let cookie = arg(args, 4).to_string();
    let conns: usize = num(args, 5);
    let mode = args.get(6).cloned().unwrap_or_else(|| "greeting".into());
    if !["greeting", "call", "quiet"].contains(&mode.as_str()) {
        eprintln!("ws-idle mode must be greeting, call or quiet, not {mode}");
        std::process::exit(2)
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (url, origin, cookie, sem, mode) = (
            url.clone(),
            origin.clone(),
            cookie.clone(),
            sem.clone(),
            mode.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.ok()?;
            // One more try after a failed open, counted apart: the memory figure needs every
            // socket open, and a socket that failed once shows in "retried" (with its error on
            // stderr) instead of leaving the figure unmeasured.
            let mut retried = false;
            let mut ws = match open(&url, &origin, &cookie).await {
                Ok(ws) => ws,
                Err(e) => {
                    eprintln!("open failed, trying once more: {e}");
                    retried = true;
                    open(&url, &origin, &cookie).await.map_err(|e| eprintln!("{e}")).ok()?
                }
            };
            match mode.as_str() {
                "greeting" => {
                    // Both legs are established once the greeting has come through.
                    let _ = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
                }
                "call" => {
                    let call = r#"{"jsonrpc":"2.0","id":1,"method":"EngineVersion","handle":-1,"params":[]}"#;
                    ws.send(Message::text(call)).await.map_err(|e| eprintln!("{e}")).ok()?;
                    let answered = tokio::time::timeout(Duration::from_secs(5), async {
                        while let Some(Ok(m)) = ws.next().await {
                            if let Message::Text(t) = m {
                                if t.as_str().contains("\"id\":1") {
                                    return true;
                                }
                            }
                        }
                        false
                    })
                    .await;
                    if answered != Ok(true) {
                        eprintln!("no answer to the first call");
                        return None;
                    }
                }
                // The gateway and nginx dial Qlik before they answer the upgrade: both legs
                // are open now.
                _ => {}
            }
            Some((ws, retried))
        }));
    }
    let mut held = Vec::new();
    let (mut errors, mut retries) = (0, 0);
    for t in tasks {
        match t.await {
            Ok(Some((ws, retried))) => {
                retries += usize::from(retried);
                held.push(ws)
            }
            _ => errors += 1,
        }
    }
    // Each socket then reads in the background (answers pings; notices a close).
    let closed = Arc::new(AtomicU64::new(0));
    for mut ws in held.drain(..) {
        let closed = closed.clone();
        tokio::spawn(async move {
            while let Some(Ok(_)) = ws.next().await {}
            closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    println!(
        "{{\"open\":{},\"errors\":{errors},\"retried\":{retries}}}",
        conns - errors
    );
    let mut buf = [0u8; 64];
    let _ = tokio::io::stdin().read(&mut buf).await;
    eprintln!("closed while held: {}", closed.load(Ordering::Relaxed));
}

/// `login` (`relogin`: a new session for every request) and `get` (one session per loop).
async fn login(args: &[String], relogin: bool) {
    let base = arg(args, 2).to_string();
    let path = arg(args, 3).to_string();
    let conns: usize = num(args, 4);
    let secs: f64 = num(args, 5);
    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(conns)
            .build_http();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, base, path, stop, errors, first_error) = (
            client.clone(),
            base.clone(),
            path.clone(),
            stop.clone(),
            errors.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let fail = |why: String| {
                errors.fetch_add(1, Ordering::Relaxed);
                first_error.lock().unwrap().get_or_insert(why);
            };
            let mut session = None;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let cookie = match session.take() {
                    Some(c) if !relogin => c,
                    _ => match login_once(&client, &base, None).await {
                        Ok(c) => c,
                        Err(e) => {
                            fail(e);
                            continue;
                        }
                    },
                };
                let req = http::Request::get(format!("{base}{path}"))
                    .header("cookie", &cookie)
                    .body(Empty::new())
                    .unwrap();
                match client.request(req).await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.into_body().collect().await;
                        lat.push(t0.elapsed().as_micros() as u32);
                    }
                    Ok(r) => fail(format!("proxied request answered {}", r.status())),
                    Err(e) => fail(format!("proxied request: {e}")),
                }
                session = Some(cookie);
            }
            lat
        }));
    }
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(l) = t.await {
            all.extend(l);
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    all.sort_unstable();
    let fe = first_error.lock().unwrap().clone().unwrap_or_default();
    println!(
        "{{\"rate\":{:.1},\"p50_us\":{},\"p99_us\":{},\"count\":{},\"errors\":{},\"first_error\":{:?}}}",
        all.len() as f64 / elapsed,
        pct(&all, 0.50),
        pct(&all, 0.99),
        all.len(),
        errors.load(Ordering::Relaxed),
        fe
    );
}

/// The load generator's HTTP client: plain HTTP, pooled.
type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

/// Logs in once (`GET /_gateway/login`, as `user` for the trusted_header provider when given):
/// the new session's cookies.
async fn login_once(client: &Client, base: &str, user: Option<&str>) -> Result<String, String> {
    let mut req = http::Request::get(format!("{base}/_gateway/login"));
    if let Some(user) = user {
        req = req.header("x-remote-user", user);
    }
    let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("login: {e}"))?;
    let cookie = login_cookie(&resp);
    let _ = resp.into_body().collect().await;
    cookie
}

async fn logins(args: &[String]) {
    let bases: Arc<Vec<String>> = Arc::new(arg(args, 2).split(',').map(String::from).collect());
    let total: u64 = num(args, 3);
    let conns: usize = num(args, 4);
    let path = match args.get(5).map(String::as_str) {
        None | Some("" | "-") => None,
        Some(p) => Some(p.to_string()),
    };
    let users: u64 = args.get(6).map_or(0, |_| num(args, 6));
    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(conns)
            .build_http();
    // Loops claim login numbers from one counter, so that exactly `total` are attempted however
    // unevenly the loops progress.
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, bases, path, next, errors, first_error) = (
            client.clone(),
            bases.clone(),
            path.clone(),
            next.clone(),
            errors.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let fail = |why: String| {
                errors.fetch_add(1, Ordering::Relaxed);
                first_error.lock().unwrap().get_or_insert(why);
            };
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= total {
                    break;
                }
                let n = bases.len() as u64;
                let login_base = &bases[(k % n) as usize];
                let t = Instant::now();
                let mut req = http::Request::get(format!("{login_base}/_gateway/login"));
                if users > 0 {
                    req = req.header("x-remote-user", format!("bench{}", k % users));
                }
                let resp = match client.request(req.body(Empty::new()).unwrap()).await {
                    Ok(r) => r,
                    Err(e) => {
                        fail(format!("login: {e}"));
                        continue;
                    }
                };
                let cookie = login_cookie(&resp);
                let _ = resp.into_body().collect().await;
                let cookie = match cookie {
                    Ok(c) => c,
                    Err(e) => {
                        fail(e);
                        continue;
                    }
                };
                if let Some(path) = &path {
                    let base = &bases[((k + 1) % n) as usize];
                    let req = http::Request::get(format!("{base}{path}"))
                        .header("cookie", cookie)
                        .body(Empty::new())
                        .unwrap();
                    match client.request(req).await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.into_body().collect().await;
                        }
                        Ok(r) => {
                            fail(format!("proxied request answered {}", r.status()));
                            continue;
                        }
                        Err(e) => {
                            fail(format!("proxied request: {e}"));
                            continue;
                        }
                    }
                }
                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(l) = t.await {
            all.extend(l);
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    all.sort_unstable();
    let fe = first_error.lock().unwrap().clone().unwrap_or_default();
    println!(
        "{{\"rate\":{:.1},\"p50_us\":{},\"p99_us\":{},\"count\":{},\"errors\":{},\"secs\":{:.3},\"first_error\":{:?}}}",
        all.len() as f64 / elapsed,
        pct(&all, 0.50),
        pct(&all, 0.99),
        all.len(),
        errors.load(Ordering::Relaxed),
        elapsed,
        fe
    );
}
