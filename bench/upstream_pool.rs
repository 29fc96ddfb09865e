//! The gateway's upstream pool (`net::upstream`) against hyper-util's pooled client, side by side:
//! the same loopback HTTP/1.1 server (512-byte answers), the same concurrency, rounds alternating
//! between the two so that drift on the machine hits both. Prints requests/s and latency
//! percentiles per round and the median of each, and the ratio.
//!
//!   cargo bench --bench upstream_pool                      # 6 rounds of 3 s, 4 and 32 in flight
//!   ROUNDS=10 SECS=5 CONCURRENCY=4,32,128 cargo bench --bench upstream_pool
//!
//! The client side runs on one runtime thread (as a pinned gateway does), the server on another.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

const BODY: [u8; 512] = [b'x'; 512];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A keep-alive HTTP/1.1 server answering every request with 512 bytes, on its own thread.
fn server() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(l.local_addr().expect("addr")).expect("send addr");
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(&BODY))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    });
    rx.recv().expect("server address")
}

#[derive(Clone, Copy)]
enum Which {
    Gateway,
    HyperUtil,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Gateway => "gateway pool",
            Which::HyperUtil => "hyper-util",
        }
    }
}

struct Round {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// `concurrency` tasks sending requests back to back for `secs`, through one client.
async fn round(which: Which, addr: SocketAddr, concurrency: usize, secs: u64) -> Round {
    let uri: http::Uri = format!("http://{addr}/x").parse().expect("uri");
    let ours =
        qlik_gateway::net::upstream::client(rustls::RootCertStore::empty(), Duration::from_secs(5))
            .expect("gateway client");
    let theirs: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(50))
        .build_http();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (ours, theirs, uri) = (ours.clone(), theirs.clone(), uri.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let n = match which {
                    Which::Gateway => {
                        let req = Request::get(uri.clone())
                            .body(Body::empty())
                            .expect("request");
                        let resp = ours.request(req).await.expect("gateway pool request");
                        resp.into_body()
                            .collect()
                            .await
                            .expect("body")
                            .to_bytes()
                            .len()
                    }
                    Which::HyperUtil => {
                        let req = Request::get(uri.clone())
                            .body(Empty::new())
                            .expect("request");
                        let resp = theirs.request(req).await.expect("hyper-util request");
                        resp.into_body()
                            .collect()
                            .await
                            .expect("body")
                            .to_bytes()
                            .len()
                    }
                };
                assert_eq!(n, BODY.len());
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Round {
        rps: all.len() as f64 / secs as f64,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = env_or("ROUNDS", 6);
    let secs: u64 = env_or("SECS", 3);
    let levels: Vec<usize> = std::env::var("CONCURRENCY")
        .unwrap_or_else(|_| "4,32".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let addr = server();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    println!(
        "| in flight | client | req/s (median of {rounds}) | p50 µs | p99 µs | rounds req/s |"
    );
    println!("|---|---|---|---|---|---|");
    for &c in &levels {
        let mut res: Vec<(Which, Vec<Round>)> =
            vec![(Which::Gateway, Vec::new()), (Which::HyperUtil, Vec::new())];
        for _ in 0..rounds {
            for (w, out) in res.iter_mut() {
                out.push(rt.block_on(round(*w, addr, c, secs)));
            }
        }
        let mut medians = Vec::new();
        for (w, out) in &res {
            let rps = median(out.iter().map(|r| r.rps).collect());
            let p50 = median(out.iter().map(|r| r.p50.as_secs_f64() * 1e6).collect());
            let p99 = median(out.iter().map(|r| r.p99.as_secs_f64() * 1e6).collect());
            let each: Vec<String> = out.iter().map(|r| format!("{:.0}", r.rps)).collect();
            println!(
                "| {c} | {} | {rps:.0} | {p50:.0} | {p99:.0} | {} |",
                w.name(),
                each.join(", ")
            );
            medians.push(rps);
        }
        println!(
            "| {c} | gateway / hyper-util | {:.2} | | | |",
            medians[0] / medians[1]
        );
    }
}
