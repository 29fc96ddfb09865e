//! End-to-end checks of `mashup::static_files::StaticFiles` over real HTTP on 127.0.0.1.
//!
//! Normal requests go through hyper's client; traversal attempts are written to a raw socket
//! so no client library gets the chance to normalise the path first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use qlik_gateway::mashup::static_files::StaticFiles;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const INDEX_HTML: &str = "<!doctype html><title>mashup</title><div id=app></div>";
const DOCS_INDEX: &str = "<!doctype html><title>docs</title>";
const HASHED_JS: &str = "console.log('hashed');";
const SECRET: &str = "TOP-SECRET-OUTSIDE-ROOT";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    addr: SocketAddr,
    client: Client<HttpConnector, Empty<Bytes>>,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
            .unwrap_or("")
    }
}

fn write(path: &Path, contents: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, contents).expect("write");
}

async fn serve_static(State(files): State<Arc<StaticFiles>>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    files.serve(&parts).await
}

async fn start() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("site");
    write(&root.join("index.html"), INDEX_HTML);
    write(&root.join("assets/index-BX3k2a9f.js"), HASHED_JS);
    write(&root.join("assets/app.3f9a8c1e.css"), "body{margin:0}");
    write(
        &root.join("assets/logo.svg"),
        "<svg xmlns='http://www.w3.org/2000/svg'/>",
    );
    write(&root.join("assets/font-Ab12Cd34.woff2"), [0u8, 1, 2, 3]);
    write(&root.join("data.json"), "{}");
    write(&root.join("robots.txt"), "User-agent: *");
    write(&root.join("img.png"), [0x89, b'P', b'N', b'G']);
    write(&root.join("docs/index.html"), DOCS_INDEX);
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    write(&root.join("big.bin"), big);
    // Outside the served directory: must never be reachable.
    write(&dir.path().join("secret.txt"), SECRET);
    write(&dir.path().join("outside/secret.txt"), SECRET);
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        symlink(dir.path().join("secret.txt"), root.join("escape")).expect("symlink");
        symlink(dir.path().join("secret.txt"), root.join("escape.txt")).expect("symlink");
        symlink(dir.path().join("outside"), root.join("escape-dir")).expect("symlink");
        // A link that stays inside the root is fine to follow.
        symlink("assets/index-BX3k2a9f.js", root.join("inner-link.js")).expect("symlink");
    }

    let files = Arc::new(StaticFiles::new(&root).expect("valid root"));
    let app = Router::new().fallback(serve_static).with_state(files);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    let client = Client::builder(TokioExecutor::new()).build_http();
    Fixture {
        _dir: dir,
        root,
        addr,
        client,
    }
}

impl Fixture {
    async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = self
            .client
            .request(req.body(Empty::new()).expect("request"))
            .await
            .expect("response");
        let (parts, body) = res.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(Method::GET, path, headers).await
    }

    /// Sends `target` byte-for-byte as the request target and returns (status, whole response).
    async fn raw(&self, target: &str, extra_headers: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra_headers}\r\n"
        );
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, text)
    }
}

const NAVIGATE: &[(&str, &str)] = &[
    ("sec-fetch-mode", "navigate"),
    ("accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
];

#[tokio::test]
async fn root_and_index_html_are_served_uncached() {
    let f = start().await;
    for path in ["/", "/index.html"] {
        let r = f.get(path, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.body, INDEX_HTML, "{path}");
        assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
        assert_eq!(r.header("cache-control"), "no-cache");
        assert_eq!(r.header("x-content-type-options"), "nosniff");
        assert_eq!(r.header("content-length"), INDEX_HTML.len().to_string());
        assert!(r.header("etag").starts_with('"') && r.header("etag").ends_with('"'));
        assert!(httpdate::parse_http_date(r.header("last-modified")).is_ok());
    }
}

#[tokio::test]
async fn content_types_follow_the_extension() {
    let f = start().await;
    let cases = [
        (
            "/assets/index-BX3k2a9f.js",
            "text/javascript; charset=utf-8",
        ),
        ("/assets/app.3f9a8c1e.css", "text/css; charset=utf-8"),
        ("/assets/logo.svg", "image/svg+xml; charset=utf-8"),
        ("/data.json", "application/json; charset=utf-8"),
        ("/robots.txt", "text/plain; charset=utf-8"),
        ("/img.png", "image/png"),
        ("/assets/font-Ab12Cd34.woff2", "font/woff2"),
        ("/big.bin", "application/octet-stream"),
    ];
    for (path, expected) in cases {
        let r = f.get(path, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let ct = r.header("content-type");
        // mime_guess has used both spellings for JavaScript over its versions.
        let ok = ct == expected
            || (expected.starts_with("text/javascript")
                && ct == "application/javascript; charset=utf-8");
        assert!(ok, "{path}: {ct}");
        assert_eq!(r.header("x-content-type-options"), "nosniff", "{path}");
    }
}

#[tokio::test]
async fn hashed_assets_are_immutable_everything_else_revalidates() {
    let f = start().await;
    for path in [
        "/assets/index-BX3k2a9f.js",
        "/assets/app.3f9a8c1e.css",
        "/assets/font-Ab12Cd34.woff2",
    ] {
        let r = f.get(path, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.header("cache-control"), IMMUTABLE, "{path}");
    }
    for path in [
        "/",
        "/index.html",
        "/docs/",
        "/robots.txt",
        "/assets/logo.svg",
        "/data.json",
    ] {
        let r = f.get(path, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.header("cache-control"), "no-cache", "{path}");
    }
    let r = f.get("/dashboard", NAVIGATE).await;
    assert_eq!(r.header("cache-control"), "no-cache", "fallback index");
}

#[cfg(unix)]
#[tokio::test]
async fn cache_policy_follows_the_requested_name_not_the_link_target() {
    let f = start().await;
    let r = f.get("/inner-link.js", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, HASHED_JS);
    // The URL is not hashed, so its content may change: never freeze it in caches.
    assert_eq!(r.header("cache-control"), "no-cache");
}

#[tokio::test]
async fn directories_serve_their_index() {
    let f = start().await;
    for path in ["/docs", "/docs/", "//docs//"] {
        let r = f.get(path, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.body, DOCS_INDEX, "{path}");
        assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
    }
    // A directory without index.html behaves like a missing path.
    assert_eq!(f.get("/assets/", &[]).await.status, StatusCode::NOT_FOUND);
    let r = f.get("/assets/", NAVIGATE).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, INDEX_HTML);
}

#[tokio::test]
async fn spa_fallback_only_for_navigations_to_extensionless_paths() {
    let f = start().await;
    let navigations: [&[(&str, &str)]; 3] = [
        NAVIGATE,
        &[("sec-fetch-mode", "navigate"), ("accept", "*/*")],
        &[("accept", "text/html")],
    ];
    for headers in navigations {
        for path in ["/dashboard", "/dashboard/sales/2024", "/app/", "/a%20b"] {
            let r = f.get(path, headers).await;
            assert_eq!(r.status, StatusCode::OK, "{path} {headers:?}");
            assert_eq!(r.body, INDEX_HTML, "{path}");
            assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
            assert_eq!(r.header("cache-control"), "no-cache");
            assert!(r.header("vary").contains("Sec-Fetch-Mode"), "{path}");
        }
    }
    // Not a navigation: fetch/XHR and script loads get an honest 404.
    for headers in [
        &[][..],
        &[("accept", "application/json")][..],
        &[("sec-fetch-mode", "cors"), ("accept", "*/*")][..],
    ] {
        let r = f.get("/dashboard", headers).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{headers:?}");
        assert!(!r.body.starts_with(b"<!doctype"), "{headers:?}");
    }
    // Missing files with an extension are 404 even for navigations.
    for path in [
        "/assets/x.js",
        "/assets/index-Zz99Zz99.js",
        "/report.pdf",
        "/a/b.css",
    ] {
        let r = f.get(path, NAVIGATE).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_ne!(r.body, INDEX_HTML, "{path}");
        assert!(r.header("content-type").starts_with("text/plain"), "{path}");
    }
}

#[tokio::test]
async fn if_none_match_gives_304() {
    let f = start().await;
    let first = f.get("/assets/index-BX3k2a9f.js", &[]).await;
    let etag = first.header("etag").to_owned();
    let lm = first.header("last-modified").to_owned();
    assert!(!etag.is_empty());
    let weak = format!("W/{etag}");
    let list = format!("\"nope\", {etag}, \"other\"");
    for inm in [etag.as_str(), weak.as_str(), list.as_str(), "*"] {
        let r = f
            .get("/assets/index-BX3k2a9f.js", &[("if-none-match", inm)])
            .await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "If-None-Match: {inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), etag);
        assert_eq!(r.header("cache-control"), IMMUTABLE);
        assert_eq!(
            r.header("content-type"),
            "",
            "304 carries no content metadata"
        );
    }
    let r = f
        .get(
            "/assets/index-BX3k2a9f.js",
            &[("if-none-match", "\"stale\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, HASHED_JS);
    // If-None-Match decides alone when present: a matching date must not override a mismatch.
    let r = f
        .get(
            "/assets/index-BX3k2a9f.js",
            &[("if-none-match", "\"stale\""), ("if-modified-since", &lm)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // The SPA fallback revalidates against index.html's validator.
    let index = f.get("/", &[]).await;
    let mut headers = NAVIGATE.to_vec();
    headers.push(("if-none-match", index.header("etag")));
    let r = f.get("/dashboard/sales", &headers).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.header("cache-control"), "no-cache");
    assert_eq!(r.header("etag"), index.header("etag"));
}

#[tokio::test]
async fn if_modified_since_gives_304() {
    let f = start().await;
    let first = f.get("/robots.txt", &[]).await;
    let lm = first.header("last-modified").to_owned();
    let lm_time = httpdate::parse_http_date(&lm).expect("valid Last-Modified");
    let later = httpdate::fmt_http_date(lm_time + std::time::Duration::from_secs(3600));
    for ims in [lm.as_str(), later.as_str()] {
        let r = f.get("/robots.txt", &[("if-modified-since", ims)]).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_MODIFIED,
            "If-Modified-Since: {ims}"
        );
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), first.header("etag"));
        assert_eq!(r.header("cache-control"), "no-cache");
    }
    let earlier = httpdate::fmt_http_date(lm_time - std::time::Duration::from_secs(3600));
    for ims in [earlier.as_str(), "not a date"] {
        let r = f.get("/robots.txt", &[("if-modified-since", ims)]).await;
        assert_eq!(r.status, StatusCode::OK, "If-Modified-Since: {ims}");
        assert_eq!(r.body, "User-agent: *");
    }
}

#[tokio::test]
async fn head_has_get_headers_and_no_body() {
    let f = start().await;
    for (path, headers) in [
        ("/", &[][..]),
        ("/assets/index-BX3k2a9f.js", &[][..]),
        ("/big.bin", &[][..]),
        ("/deep/route", NAVIGATE),
    ] {
        let get = f.get(path, headers).await;
        let head = f.request(Method::HEAD, path, headers).await;
        assert_eq!(head.status, StatusCode::OK, "{path}");
        assert!(head.body.is_empty(), "{path}");
        for name in [
            "content-type",
            "content-length",
            "etag",
            "last-modified",
            "cache-control",
            "x-content-type-options",
        ] {
            assert_eq!(head.header(name), get.header(name), "{path} {name}");
        }
        assert_eq!(head.header("content-length"), get.body.len().to_string());
    }
}

#[tokio::test]
async fn other_methods_are_405() {
    let f = start().await;
    for method in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ] {
        for path in ["/", "/assets/index-BX3k2a9f.js", "/missing"] {
            let r = f.request(method.clone(), path, &[]).await;
            assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(r.header("allow"), "GET, HEAD");
        }
    }
}

#[tokio::test]
async fn large_files_stream_intact_with_length() {
    let f = start().await;
    let r = f.get("/big.bin", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let expected = std::fs::read(f.root.join("big.bin")).expect("read");
    assert_eq!(r.header("content-length"), expected.len().to_string());
    assert!(r.body == expected, "streamed body differs");
}

#[tokio::test]
async fn traversal_attempts_never_escape_the_root() {
    let f = start().await;
    let targets = [
        "/../secret.txt",
        "/../../../../../../etc/passwd",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%2fsecret.txt",
        "/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/assets%2f..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/..%5c..%5csecret.txt",
        "/%252e%252e/secret.txt",
        "/%252e%252e%252fsecret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/%ff",
        "/index.html%00",
        "/index.html%00.js",
        "/%2e%2e",
        "/%2e%2e/outside/secret.txt",
    ];
    for nav in ["", "Sec-Fetch-Mode: navigate\r\nAccept: text/html\r\n"] {
        for target in targets {
            let (status, text) = f.raw(target, nav).await;
            assert_eq!(status, 404, "{target} ({nav:?}) got {status}");
            assert!(!text.contains(SECRET), "{target} leaked the secret");
            assert!(!text.contains("root:"), "{target} leaked /etc/passwd");
            assert!(!text.contains(INDEX_HTML), "{target} fell back to the app");
        }
    }
    // An absolute-looking path stays inside the root: a miss, so the app for navigations.
    let (status, text) = f.raw("//etc/passwd", "").await;
    assert_eq!(status, 404);
    assert!(!text.contains("root:"));
    let (status, text) = f.raw("//etc/passwd", "Accept: text/html\r\n").await;
    assert_eq!(status, 200);
    assert!(text.contains(INDEX_HTML) && !text.contains("root:"));

    // Raw backslashes get through hyper's parser, so they must be refused here.
    for target in ["/..\\secret.txt", "/assets\\..\\..\\secret.txt", "/a\\b"] {
        let (status, text) = f.raw(target, "Accept: text/html\r\n").await;
        assert_eq!(status, 404, "{target}");
        assert!(!text.contains(SECRET), "{target} leaked the secret");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_out_of_the_root_are_404() {
    let f = start().await;
    for target in [
        "/escape",
        "/escape.txt",
        "/escape-dir/secret.txt",
        "/escape-dir/",
        "/escape-dir",
    ] {
        for nav in ["", "Sec-Fetch-Mode: navigate\r\nAccept: text/html\r\n"] {
            let (status, text) = f.raw(target, nav).await;
            assert_eq!(status, 404, "{target} ({nav:?})");
            assert!(!text.contains(SECRET), "{target} leaked the secret");
        }
    }
}

#[test]
fn new_rejects_unusable_roots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("does-not-exist");
    let err = StaticFiles::new(&missing).expect_err("missing dir");
    assert!(err.to_string().contains("does-not-exist"), "{err}");

    let file = dir.path().join("plain-file");
    write(&file, "x");
    let err = StaticFiles::new(&file).expect_err("file as root");
    assert!(err.to_string().contains("plain-file"), "{err}");

    let empty = dir.path().join("no-index");
    std::fs::create_dir(&empty).expect("mkdir");
    let err = StaticFiles::new(&empty).expect_err("no index.html");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains("no-index"), "{err}");
    assert!(err.to_string().contains("index.html"), "{err}");

    let dir_index = dir.path().join("dir-index");
    std::fs::create_dir_all(dir_index.join("index.html")).expect("mkdir");
    assert!(StaticFiles::new(&dir_index).is_err());

    let ok = dir.path().join("ok");
    write(&ok.join("index.html"), INDEX_HTML);
    let files = StaticFiles::new(&ok).expect("valid root");
    assert!(files.root().is_absolute());
}

#[cfg(unix)]
#[tokio::test]
async fn broken_links_are_misses_and_loops_are_500() {
    let f = start().await;
    std::os::unix::fs::symlink("nowhere", f.root.join("dangling")).expect("symlink");
    std::os::unix::fs::symlink("loop", f.root.join("loop")).expect("symlink");
    assert_eq!(f.get("/dangling", &[]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(f.get("/dangling", NAVIGATE).await.body, INDEX_HTML);
    let r = f.get("/loop", NAVIGATE).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        !body.contains(&*f.root.to_string_lossy()),
        "500 must not reveal paths"
    );
}
