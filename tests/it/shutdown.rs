//! SIGTERM on the real binary: in-flight requests finish, websockets get close 1001, the process exits.

use crate::common;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The `Origin` the gateways here allow for websockets.
const ORIGIN: &str = "http://gateway.test";

/// qlik-sim and the gateway binary in front of it, with `server.drain_timeout = drain` and
/// `security` as more `[security]` lines.
async fn start(drain: &str, security: &str) -> (tempfile::TempDir, qlik_sim::Sim, common::Binary) {
    start_with(&format!("drain_timeout = \"{drain}\""), security).await
}

/// [`start`] with `server` as the `[server]` lines.
async fn start_with(
    server: &str,
    security: &str,
) -> (tempfile::TempDir, qlik_sim::Sim, common::Binary) {
    let dir = tempfile::tempdir().unwrap();
    let sim = qlik_sim::Sim::start(qlik_sim::SimOptions::default(), &dir.path().join("pki"))
        .await
        .unwrap();
    let setup = common::Setup {
        server: server.to_owned(),
        security: format!("allowed_origins = [\"{ORIGIN}\"]\n{security}"),
        ..Default::default()
    };
    let toml = common::config_toml(&sim, &setup, "127.0.0.1:0".parse().unwrap());
    let gw = common::Binary::start(dir.path(), &toml, &[]).await;
    (dir, sim, gw)
}

/// Logs in (static provider) and returns the gateway's `Cookie` header value.
async fn login(client: &reqwest::Client, url: &str) -> String {
    let resp = client
        .get(format!("{url}/_gateway/login"))
        .send()
        .await
        .unwrap();
    common::cookie_from(&resp).expect("the login sets the gateway cookie")
}

/// An engine websocket through the gateway at `addr`, read past Qlik's greeting (so it is
/// relayed end to end).
async fn engine_socket(
    addr: &str,
    cookie: &str,
) -> WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>> {
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{addr}/mashup/app/"
    ))
    .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket");
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("OnConnected") => return ws,
            Some(Ok(_)) => continue,
            other => panic!("socket ended before its greeting: {other:?}"),
        }
    }
}

#[tokio::test]
async fn sigterm_drains_requests_and_websockets() {
    let (_dir, sim, gw) = start("10s", "").await;
    let addr = gw.addr.clone();
    let url = format!("http://{addr}");
    let client = common::http_client();
    let cookie = login(&client, &url).await;

    // An engine websocket, past its greeting.
    let mut ws = engine_socket(&addr, &cookie).await;

    // A large download in flight: read its first chunk, then ask the gateway to stop.
    let n: usize = 16 << 20;
    let mut download = client
        .get(format!("{url}/mashup/sim/bytes?n={n}"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let mut got = download
        .chunk()
        .await
        .unwrap()
        .map(|c| c.len())
        .unwrap_or(0);

    let stopped = tokio::spawn(gw.stop());

    // The websocket is closed by the gateway with 1001 Going Away.
    let close = loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    drop(ws);

    // The in-flight download completes.
    while let Some(chunk) = download.chunk().await.unwrap() {
        got += chunk.len();
    }
    assert_eq!(got, n, "in-flight response finished during drain");

    let (status, log) = stopped.await.unwrap();
    assert!(status.success(), "{status:?}");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "no longer accepting"
    );
    sim.shutdown().await;
}

/// Raises this process's open-file limit (inherited by the gateway it starts) to at least `n`,
/// up to the hard limit: a thousand relayed websockets hold two sockets each in the gateway.
fn raise_nofile(n: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let Some((soft, hard)) = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| {
            let mut f = l.split_whitespace().skip(3);
            Some((f.next()?.parse::<u64>().ok()?, f.next()?.to_string()))
        })
    else {
        return;
    };
    if soft >= n {
        return;
    }
    let ok = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={hard}:{hard}"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "open-file limit {soft} is below {n} and prlimit could not raise it: run with `ulimit -n {n}`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_1000_open_websockets_and_requests_in_flight() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use std::convert::Infallible;

    const SESSIONS: usize = 4;
    const PER_SESSION: usize = 250;
    const SOCKETS: usize = SESSIONS * PER_SESSION;
    const DOWNLOADS: usize = 4;
    const DOWNLOAD_BYTES: usize = 32 << 20;
    const UPLOADS: usize = 4;
    const UPLOAD_CHUNK: usize = 256 << 10;
    const UPLOAD_CHUNKS: usize = 8;
    raise_nofile(8 * SOCKETS as u64);

    // Four serving threads whatever the machine: the sockets and requests are spread over
    // them, and each thread's runtime must outlive its connections while the drain runs.
    let (_dir, sim, gw) = start_with(
        "drain_timeout = \"15s\"\nthreads = 4",
        &format!("max_websockets_per_session = {PER_SESSION}"),
    )
    .await;
    assert!(
        gw.log_so_far().contains("\"threads\":4"),
        "{}",
        gw.log_so_far()
    );
    let addr = gw.addr.clone();
    let url = format!("http://{addr}");
    let client = common::http_client();
    let mut cookies = Vec::new();
    for _ in 0..SESSIONS {
        cookies.push(login(&client, &url).await);
    }

    // A thousand engine websockets, each past its greeting (relayed end to end).
    let sockets: Vec<_> = futures_util::stream::iter(
        cookies
            .iter()
            .flat_map(|c| std::iter::repeat_n(c, PER_SESSION)),
    )
    .map(|cookie| engine_socket(&addr, cookie))
    .buffer_unordered(64)
    .collect()
    .await;
    assert_eq!(sockets.len(), SOCKETS);

    // Downloads with their head and first chunk read, the rest still to come.
    let mut downloads = Vec::new();
    for i in 0..DOWNLOADS {
        let mut resp = client
            .get(format!("{url}/mashup/sim/bytes?n={DOWNLOAD_BYTES}"))
            .header("cookie", &cookies[i % SESSIONS])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let first = resp.chunk().await.unwrap().expect("a first chunk");
        downloads.push((resp, first));
    }

    // Uploads that Qlik has begun to receive, their bodies unfinished: no answer has started.
    sim.control().clear_requests();
    let upload_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<StreamBody<_>>();
    let mut uploads = Vec::new();
    for i in 0..UPLOADS {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(UPLOAD_CHUNKS);
        let body = StreamBody::new(Box::pin(futures_util::stream::unfold(
            rx,
            |mut rx| async move {
                let b = rx.recv().await?;
                Some((Ok::<_, Infallible>(Frame::data(b)), rx))
            },
        )));
        let req = http::Request::post(format!("{url}/mashup/sim/echo"))
            .header("cookie", &cookies[i % SESSIONS])
            .header("accept", "application/json")
            .header("content-type", "application/octet-stream")
            .body(body)
            .unwrap();
        tx.send(Bytes::from(vec![7u8; UPLOAD_CHUNK])).await.unwrap();
        uploads.push((tokio::spawn(upload_client.request(req)), tx));
    }
    let started = std::time::Instant::now();
    while sim
        .control()
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/sim/echo"))
        .count()
        < UPLOADS
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the uploads did not reach Qlik"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let stopped = tokio::spawn(gw.stop());

    // Every websocket: a close frame 1001 with the gateway's reason, then a clean end (the
    // closing handshake completed, no reset).
    let closes: Vec<_> = futures_util::future::join_all(sockets.into_iter().map(|mut ws| {
        tokio::spawn(async move {
            let frame = loop {
                match ws.next().await {
                    Some(Ok(Message::Close(frame))) => break frame,
                    Some(Ok(_)) => continue,
                    other => return Err(format!("expected a close frame, got {other:?}")),
                }
            };
            match ws.next().await {
                None => Ok(frame),
                other => Err(format!("after the close frame: {other:?}")),
            }
        })
    }))
    .await;
    for c in closes {
        let frame = c.unwrap().unwrap_or_else(|e| panic!("{e}"));
        let frame = frame.expect("a close frame with a code");
        assert_eq!(frame.code, CloseCode::Away);
        assert_eq!(frame.reason.as_str(), "gateway shutting down");
    }

    // Draining, with requests still in flight: new connections are refused.
    let refused = std::net::TcpStream::connect(&addr).map_err(|e| e.kind());
    assert_eq!(
        refused.err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "a connection made while draining"
    );
    let late = client.get(format!("{url}/_gateway/healthz")).send().await;
    assert!(late.as_ref().is_err_and(|e| e.is_connect()), "{late:?}");

    // The uploads finish and are answered in full.
    for (resp, tx) in uploads {
        for _ in 1..UPLOAD_CHUNKS {
            tx.send(Bytes::from(vec![7u8; UPLOAD_CHUNK])).await.unwrap();
        }
        drop(tx);
        let resp = resp.await.unwrap().expect("the upload is answered");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["body_len"], UPLOAD_CHUNK * UPLOAD_CHUNKS);
    }
    // The downloads finish, every byte intact.
    for (mut resp, first) in downloads {
        let mut got = 0usize;
        let mut chunk = Some(first);
        while let Some(c) = chunk {
            assert!(
                c.iter()
                    .enumerate()
                    .all(|(i, b)| *b == ((got + i) % 251) as u8),
                "download corrupted after byte {got}"
            );
            got += c.len();
            chunk = resp.chunk().await.unwrap();
        }
        assert_eq!(got, DOWNLOAD_BYTES, "in-flight response finished");
    }

    // Exit 0 (within the drain timeout: `stop` gives it 20 s), saying what it closed.
    let (status, log) = stopped.await.unwrap();
    assert!(status.success(), "{status:?}\n{log}");
    let finished = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "drain finished")
        .unwrap_or_else(|| panic!("no drain summary:\n{log}"));
    assert_eq!(finished["websockets_closed"], SOCKETS, "{finished}");
    assert_eq!(finished["websockets_left"], 0, "{finished}");
    sim.shutdown().await;
}
