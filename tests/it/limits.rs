//! Exact request and response size limits: the same request gets the same answer however its
//! bytes arrive; refusals are specific (431/414/413/502) and name the key to raise.

use crate::common;
use crate::common::{Env, Setup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: usize = 98304; // server.max_header_bytes' default

/// A GET whose head (request line, headers, final CRLF) is exactly `size` bytes.
fn head_of_size(env: &Env, path: &str, size: usize) -> Vec<u8> {
    let start = format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\nx-pad: ",
        env.addr
    );
    let fixed = start.len() + "\r\n\r\n".len();
    let mut head = start.into_bytes();
    head.extend(std::iter::repeat_n(b'a', size - fixed));
    head.extend_from_slice(b"\r\n\r\n");
    assert_eq!(head.len(), size);
    head
}

/// Sends `bytes` in two writes split at `at`, and returns the response's status code and body.
async fn send_split(env: &Env, bytes: &[u8], at: usize) -> (u16, String) {
    let mut s = TcpStream::connect(env.addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.write_all(&bytes[..at]).await.expect("first part");
    s.flush().await.expect("flush");
    s.write_all(&bytes[at..]).await.expect("second part");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Sends `bytes` in writes of `seg` bytes, each flushed on its own segment (TCP_NODELAY), and
/// returns the response's status code.
async fn send_segments(env: &Env, bytes: &[u8], seg: usize) -> u16 {
    let mut s = TcpStream::connect(env.addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    for part in bytes.chunks(seg) {
        s.writable().await.expect("writable");
        s.write_all(part).await.expect("segment");
        s.flush().await.expect("flush");
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp);
    text.get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"))
}

#[tokio::test]
async fn header_limit_is_exact_whatever_the_segmentation() {
    let env = Env::start().await;
    let at_limit = head_of_size(&env, "/_gateway/healthz", LIMIT);
    let over = head_of_size(&env, "/_gateway/healthz", LIMIT + 1);
    for at in (1024..LIMIT).step_by(1024) {
        let (status, _) = send_split(&env, &at_limit, at).await;
        assert_eq!(status, 200, "a head of exactly the limit, split at {at}");
        let (status, body) = send_split(&env, &over, at).await;
        assert_eq!(status, 431, "a head one byte over the limit, split at {at}");
        assert!(
            body.contains("request_headers_too_large") && body.contains("server.max_header_bytes"),
            "the refusal names the cause and the key: {body}"
        );
    }
    // Every 1 KiB boundary at once: the head arrives in 1 KiB segments.
    assert_eq!(send_segments(&env, &at_limit, 1024).await, 200);
    assert_eq!(send_segments(&env, &over, 1024).await, 431);
    // 100 KiB, the size from the report: 431 whether sent at once or in pieces.
    let big = head_of_size(&env, "/_gateway/healthz", 100 * 1024);
    for at in [1, 4096, 65536, 98304, 100 * 1024 - 1] {
        assert_eq!(send_split(&env, &big, at).await.0, 431, "split at {at}");
    }
    env.stop().await;
}

#[tokio::test]
async fn far_oversized_heads_are_cut_off_by_the_parser_with_431() {
    let env = Env::start().await;
    let huge = head_of_size(&env, "/_gateway/healthz", 400 * 1024);
    for at in [1024, 200 * 1024] {
        let mut s = TcpStream::connect(env.addr).await.expect("connect");
        // The gateway may answer and close before it has read everything: ignore write errors.
        let _ = s.write_all(&huge[..at]).await;
        let _ = s.write_all(&huge[at..]).await;
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp).await;
        assert!(
            resp.starts_with(b"HTTP/1.1 431"),
            "{:?}",
            String::from_utf8_lossy(&resp[..resp.len().min(200)])
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn request_line_and_header_count_limits() {
    let env = Env::with(Setup {
        server: "max_request_line_bytes = 2048\nmax_headers = 20\n".into(),
        ..Setup::default()
    })
    .await;
    let line_of = |n: usize| {
        // "GET " + path + " HTTP/1.1\r\n"
        let path = format!("/_gateway/healthz?{}", "q".repeat(n - 4 - 18 - 11));
        format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            env.addr
        )
    };
    let ok = line_of(2048);
    assert_eq!(send_split(&env, ok.as_bytes(), 100).await.0, 200);
    let long = line_of(2049);
    let (status, body) = send_split(&env, long.as_bytes(), 100).await;
    assert_eq!(status, 414);
    assert!(body.contains("server.max_request_line_bytes"), "{body}");

    let with_headers = |n: usize| {
        let mut r = format!(
            "GET /_gateway/healthz HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n",
            env.addr
        );
        for i in 0..n - 2 {
            r.push_str(&format!("x-h{i}: v\r\n"));
        }
        r.push_str("\r\n");
        r
    };
    assert_eq!(
        send_split(&env, with_headers(20).as_bytes(), 10).await.0,
        200
    );
    let (status, body) = send_split(&env, with_headers(21).as_bytes(), 10).await;
    assert_eq!(status, 431);
    assert!(body.contains("server.max_headers"), "{body}");
    env.stop().await;
}

#[tokio::test]
async fn gateway_endpoint_bodies_are_bounded() {
    let env = Env::with(Setup {
        server: "max_gateway_body_bytes = 1024\n".into(),
        ..Setup::default()
    })
    .await;
    let client = common::http_client();
    let post = |body: Vec<u8>| {
        client
            .post(format!("{}/_gateway/logout", env.url))
            .header("accept", "application/json")
            .body(body)
            .send()
    };
    let small = post(vec![b'a'; 1024]).await.expect("small");
    assert_ne!(small.status(), 413);
    let big = post(vec![b'a'; 1025]).await.expect("big");
    assert_eq!(big.status(), 413);
    assert!(big
        .text()
        .await
        .unwrap_or_default()
        .contains("server.max_gateway_body_bytes"));
    // Without a Content-Length (chunked), counted while read.
    let mut chunked = format!(
        "POST /_gateway/logout HTTP/1.1\r\nhost: {}\r\naccept: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        env.addr
    );
    for _ in 0..4 {
        chunked.push_str(&format!("200\r\n{}\r\n", "a".repeat(512)));
    }
    chunked.push_str("0\r\n\r\n");
    let (status, body) = send_split(&env, chunked.as_bytes(), 100).await;
    assert_eq!(status, 413, "{body}");
    env.stop().await;
}

/// A dev server that answers every request with an endless response header block.
async fn endless_header_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                if s.write_all(b"HTTP/1.1 200 OK\r\n").await.is_err() {
                    return;
                }
                let line = format!("x-endless: {}\r\n", "b".repeat(1000));
                // Until the gateway hangs up: it must, at its limit.
                while s.write_all(line.as_bytes()).await.is_ok() {}
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn an_endless_upstream_header_block_gets_a_specific_502() {
    let (dev, task) = endless_header_server().await;
    let env = Env::with(Setup {
        mashup: format!("upstream = \"http://{dev}\"\n"),
        ..Setup::default()
    })
    .await;
    let cookie = env.login().await;
    let resp = env.get("/index.html", &cookie).await;
    assert_eq!(resp.status(), 502);
    let body = resp.text().await.unwrap_or_default();
    assert!(
        body.contains("upstream_headers_too_large")
            && body.contains("server.max_upstream_header_bytes"),
        "{body}"
    );
    task.abort();
    env.stop().await;
}
