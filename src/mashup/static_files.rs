//! The mashup's static files (`mashup.dir`): a built single-page app served from one directory.
//!
//! Behaves like nginx's `try_files $uri $uri/index.html /index.html` with caching suited to
//! bundler output: content-hashed assets are immutable, everything else is revalidated by
//! `ETag`/`Last-Modified`. The request path is attacker-controlled, so it is decoded once,
//! reduced to plain name segments, and the resolved file must still lie under the canonical
//! root after symlinks are followed; anything else is a 404 that reveals nothing.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::response::Response;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use mime_guess::mime;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

const INDEX: &str = "index.html";
const NO_CACHE: &str = "no-cache";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Read size per body chunk: large enough that big bundles do not cost a syscall per 4 KiB,
/// small enough that many concurrent downloads stay cheap.
const CHUNK: usize = 64 * 1024;
/// Longer names cannot exist on common file systems; refusing them up front keeps
/// `ENAMETOOLONG` from surfacing as a 500.
const MAX_SEGMENT: usize = 255;
const MAX_PATH: usize = 4096;

/// Serves a built single-page app from a directory.
///
/// Only `GET` and `HEAD` are answered. A path that names no file falls back to the root
/// `index.html` for browser navigations to extension-less paths (client-side routes), and is
/// a 404 otherwise, so a missing script never comes back as HTML.
#[derive(Debug, Clone)]
pub struct StaticFiles {
    /// Canonical (absolute, symlink-free) root; every served file must resolve beneath it.
    root: PathBuf,
    /// Canonical path of the root `index.html`, the SPA fallback.
    index: PathBuf,
}

/// Where a sanitised request path led.
enum Resolution {
    /// A regular file under the root; `name` is the name the client asked for (or
    /// `index.html` for a directory) and drives the content type and cache policy.
    File { path: PathBuf, name: String },
    /// Nothing there: eligible for the SPA fallback.
    Missing,
    /// Something there that must not be served (outside the root, unreadable, special file).
    Refused,
    /// Unexpected I/O failure, already logged.
    Failed,
}

impl StaticFiles {
    /// Checks `root` and remembers its canonical form.
    ///
    /// Fails (with an `io::Error` naming the path) if `root` is not a readable directory or has
    /// no regular, readable `index.html` inside it. The root is canonicalised once here, so a
    /// later swap of a symlinked root is not picked up until restart.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let given = root.into();
        let context = |what: &str, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("mashup.dir {}: {what}: {e}", given.display()),
            )
        };
        let root = std::fs::canonicalize(&given).map_err(|e| context("cannot resolve", e))?;
        let meta = std::fs::metadata(&root).map_err(|e| context("cannot stat", e))?;
        if !meta.is_dir() {
            return Err(context(
                "not a directory",
                io::Error::new(io::ErrorKind::NotADirectory, "expected a directory"),
            ));
        }
        // Listing proves the directory is searchable by this process, which a stat does not.
        std::fs::read_dir(&root).map_err(|e| context("not readable", e))?;

        let index =
            std::fs::canonicalize(root.join(INDEX)).map_err(|e| context("has no index.html", e))?;
        if !index.starts_with(&root) {
            return Err(context(
                "index.html resolves outside the directory",
                io::Error::new(io::ErrorKind::InvalidInput, index.display().to_string()),
            ));
        }
        if !std::fs::metadata(&index)
            .map_err(|e| context("cannot stat index.html", e))?
            .is_file()
        {
            return Err(context(
                "index.html is not a regular file",
                io::Error::new(io::ErrorKind::InvalidInput, index.display().to_string()),
            ));
        }
        std::fs::File::open(&index).map_err(|e| context("index.html not readable", e))?;
        Ok(Self { root, index })
    }

    /// The canonical directory being served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Answers GET/HEAD for `parts.uri.path()` (the full request path; the mashup is mounted
    /// at `/`). Never fails: problems become 404 (or 500 for unexpected I/O errors, logged).
    pub async fn serve(&self, parts: &http::request::Parts) -> Response {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            let mut res = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return res;
        }
        let raw = parts.uri.path();
        let Some(segments) = sanitize(raw) else {
            // Debug, not warn: anyone can send these, and they must not flood the logs.
            tracing::debug!(path = raw, "refused unsafe static file path");
            return plain(StatusCode::NOT_FOUND, "Not Found");
        };
        match self.resolve(&segments).await {
            Resolution::File { path, name } => self.send(&path, &name, parts, false).await,
            Resolution::Missing => {
                // Client-side routes have no extension; anything with one is a real asset that
                // is genuinely absent, and answering it with HTML would hide the breakage.
                let route_like = segments
                    .last()
                    .is_none_or(|s| Path::new(s).extension().is_none());
                if route_like && is_navigation(&parts.headers) {
                    self.send(&self.index, INDEX, parts, true).await
                } else {
                    let mut res = plain(StatusCode::NOT_FOUND, "Not Found");
                    if route_like {
                        // The same URL would have been the app for a navigation.
                        add_vary(res.headers_mut());
                    }
                    res
                }
            }
            Resolution::Refused => plain(StatusCode::NOT_FOUND, "Not Found"),
            Resolution::Failed => plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        }
    }

    async fn resolve(&self, segments: &[String]) -> Resolution {
        let mut candidate = self.root.clone();
        candidate.extend(segments);
        let real = match self.canonical_inside(&candidate).await {
            Ok(real) => real,
            Err(resolution) => return resolution,
        };
        let meta = match tokio::fs::metadata(&real).await {
            Ok(meta) => meta,
            Err(e) => return lookup_error(&real, e),
        };
        if meta.is_file() {
            let name = segments.last().map_or(INDEX, String::as_str).to_owned();
            return Resolution::File { path: real, name };
        }
        if !meta.is_dir() {
            tracing::warn!(path = %real.display(), "refusing to serve a special file");
            return Resolution::Refused;
        }
        let index = match self.canonical_inside(&real.join(INDEX)).await {
            Ok(index) => index,
            Err(resolution) => return resolution,
        };
        match tokio::fs::metadata(&index).await {
            Ok(meta) if meta.is_file() => Resolution::File {
                path: index,
                name: INDEX.to_owned(),
            },
            // A directory without an index is treated like nothing being there, so navigations
            // to it still reach the app.
            Ok(_) => Resolution::Missing,
            Err(e) => lookup_error(&index, e),
        }
    }

    /// Canonicalises `candidate` and insists it stayed under the root: symlinks inside the
    /// served directory may point anywhere, and following them blindly would publish that.
    async fn canonical_inside(&self, candidate: &Path) -> Result<PathBuf, Resolution> {
        let real = tokio::fs::canonicalize(candidate)
            .await
            .map_err(|e| lookup_error(candidate, e))?;
        if real.starts_with(&self.root) {
            Ok(real)
        } else {
            tracing::warn!(
                path = %candidate.display(),
                target = %real.display(),
                "static file resolves outside mashup.dir; refusing"
            );
            Err(Resolution::Refused)
        }
    }

    async fn send(
        &self,
        path: &Path,
        name: &str,
        parts: &http::request::Parts,
        fallback: bool,
    ) -> Response {
        let file = match tokio::fs::File::open(path).await {
            Ok(file) => file,
            Err(e) => return open_error(path, e),
        };
        // Metadata from the open handle, so validators and length describe the bytes we stream
        // even if the path is replaced meanwhile (deploys do that).
        let meta = match file.metadata().await {
            Ok(meta) => meta,
            Err(e) => return open_error(path, e),
        };
        if !meta.is_file() {
            return plain(StatusCode::NOT_FOUND, "Not Found");
        }
        let len = meta.len();
        let since_epoch = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok());
        // Length plus nanosecond mtime changes on any realistic rewrite without hashing the file
        // on every request. Without an mtime there is nothing trustworthy to validate against.
        let etag = since_epoch.map(|d| format!("\"{len:x}-{:x}\"", d.as_nanos()));
        // HTTP dates have second precision; truncating keeps If-Modified-Since round-trips exact.
        let last_modified = since_epoch.map(|d| UNIX_EPOCH + Duration::from_secs(d.as_secs()));

        let mut headers = HeaderMap::new();
        let cache = if name == INDEX || !is_hashed(name) {
            NO_CACHE
        } else {
            IMMUTABLE
        };
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        if let Some(tag) = etag.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
            headers.insert(header::ETAG, tag);
        }
        if let Some(lm) = last_modified {
            if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(lm)) {
                headers.insert(header::LAST_MODIFIED, v);
            }
        }
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if fallback {
            add_vary(&mut headers);
        }

        if not_modified(&parts.headers, etag.as_deref(), last_modified) {
            let mut res = Response::new(Body::empty());
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            *res.headers_mut() = headers;
            return res;
        }

        headers.insert(header::CONTENT_TYPE, content_type(name));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        let body = if parts.method == Method::HEAD {
            Body::empty()
        } else {
            // `take` keeps the body within the advertised Content-Length if the file grows
            // while it is being sent.
            Body::from_stream(ReaderStream::with_capacity(file.take(len), CHUNK))
        };
        let mut res = Response::new(body);
        *res.headers_mut() = headers;
        res
    }
}

/// Decodes a request path once and reduces it to plain file-name segments.
///
/// Returns `None` for anything that could step outside the root or alias another name:
/// invalid UTF-8, `..`, backslashes (a separator on Windows), NUL, absurd lengths, and
/// anything the platform would parse as more than one normal path component. Decoding exactly
/// once means `%252e%252e` stays the literal name `%2e%2e`, never `..`.
fn sanitize(raw: &str) -> Option<Vec<String>> {
    if raw.len() > MAX_PATH {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    if decoded.contains(['\\', '\0']) {
        return None;
    }
    let mut segments = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => continue,
            ".." => return None,
            _ => {}
        }
        // On Windows `C:` is a drive and `name:stream` an alternate data stream.
        if seg.len() > MAX_SEGMENT || (cfg!(windows) && seg.contains(':')) {
            return None;
        }
        let mut components = Path::new(seg).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(c)), None) if c == seg => segments.push(seg.to_owned()),
            _ => return None,
        }
    }
    Some(segments)
}

/// True if `name` carries a bundler content hash right before its extension, e.g.
/// `index-BX3k2a9f.js`, `app.3f9a8c1e.css`, or the source map `index-BX3k2a9f.js.map`.
///
/// Such files never change under the same name, so they may be cached forever. Requiring both
/// letters and digits keeps ordinary words like `vendor-polyfills.js` from being frozen in
/// caches; a hash that happens to lack one of them just gets revalidated, which is safe.
fn is_hashed(name: &str) -> bool {
    let mut stem = name;
    // Two extensions at most: `.js.map` and similar double extensions are bundler output too.
    for _ in 0..2 {
        let Some((rest, _ext)) = stem.rsplit_once('.') else {
            return false;
        };
        if rest.is_empty() {
            return false;
        }
        if ends_with_hash(rest) {
            return true;
        }
        stem = rest;
    }
    false
}

fn ends_with_hash(stem: &str) -> bool {
    // Rollup/Vite: `name-XXXXXXXX` where the 8 characters are base64url and may themselves hold
    // `-` or `_` (`index-3NOf-C0O`).
    let b = stem.as_bytes();
    if b.len() >= 10 && b[b.len() - 9] == b'-' {
        let token = &b[b.len() - 8..];
        if token
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
            && token.iter().any(u8::is_ascii_digit)
            && token.iter().any(u8::is_ascii_alphabetic)
            && token.iter().any(u8::is_ascii_uppercase)
            && token.iter().any(u8::is_ascii_lowercase)
        {
            return true;
        }
    }
    let Some(sep) = stem.rfind(['-', '.']) else {
        return false;
    };
    let token = &stem.as_bytes()[sep + 1..];
    token.len() >= 8
        && token
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        && token.iter().any(u8::is_ascii_alphabetic)
        && token.iter().any(u8::is_ascii_digit)
}

/// A browser loading a page rather than a script, style or fetch.
fn is_navigation(headers: &HeaderMap) -> bool {
    let navigate = headers
        .get("sec-fetch-mode")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("navigate"));
    navigate
        || headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

/// RFC 9110 §13.2.2 evaluation for GET/HEAD: `If-None-Match` (weak comparison, lists, `*`)
/// decides on its own when present; `If-Modified-Since` only counts without it.
fn not_modified(
    headers: &HeaderMap,
    etag: Option<&str>,
    last_modified: Option<SystemTime>,
) -> bool {
    let mut inm = headers.get_all(header::IF_NONE_MATCH).iter().peekable();
    if inm.peek().is_some() {
        return inm
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || etag.is_some_and(|ours| weak_eq(tag, ours)));
    }
    let Some(last_modified) = last_modified else {
        return false;
    };
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
        .is_some_and(|since| last_modified <= since)
}

fn weak_eq(a: &str, b: &str) -> bool {
    let strip = |t: &str| t.strip_prefix("W/").unwrap_or(t).to_owned();
    let (a, b) = (strip(a), strip(b));
    a.len() >= 2 && a.starts_with('"') && a.ends_with('"') && a == b
}

fn content_type(name: &str) -> HeaderValue {
    let guess = mime_guess::from_path(name).first_or_octet_stream();
    // Without a charset browsers guess one, and text assets from bundlers are UTF-8.
    let textual = guess.type_() == mime::TEXT
        || matches!(
            guess.essence_str(),
            "application/javascript"
                | "application/json"
                | "application/manifest+json"
                | "application/xml"
                | "image/svg+xml"
        );
    let value = if textual && guess.get_param(mime::CHARSET).is_none() {
        format!("{}; charset=utf-8", guess.essence_str())
    } else {
        guess.to_string()
    };
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// Responses that depend on navigation headers must say so, or a shared cache could hand the
/// app's HTML to a script request (or a 404 to a navigation).
fn add_vary(headers: &mut HeaderMap) {
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Sec-Fetch-Mode"),
    );
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// Maps a failure while locating a file: absence is routine (and may fall back to the app),
/// permission problems are hidden as absence but logged, the rest is a logged 500.
fn lookup_error(path: &Path, e: io::Error) -> Resolution {
    match e.kind() {
        // NotADirectory: a file used as a directory, e.g. `/index.html/x`.
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Resolution::Missing,
        io::ErrorKind::PermissionDenied => {
            tracing::warn!(path = %path.display(), error = %e, "static file not accessible");
            Resolution::Refused
        }
        _ => {
            tracing::warn!(path = %path.display(), error = %e, "static file lookup failed");
            Resolution::Failed
        }
    }
}

/// Like [`lookup_error`] for a file that was already located; vanishing now means a deploy
/// raced us, which is a 404 rather than a fallback.
fn open_error(path: &Path, e: io::Error) -> Response {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
            tracing::warn!(path = %path.display(), error = %e, "static file vanished while serving");
            plain(StatusCode::NOT_FOUND, "Not Found")
        }
        io::ErrorKind::PermissionDenied => {
            tracing::warn!(path = %path.display(), error = %e, "static file not readable");
            plain(StatusCode::NOT_FOUND, "Not Found")
        }
        _ => {
            tracing::warn!(path = %path.display(), error = %e, "static file open failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(raw: &str) -> Option<Vec<String>> {
        sanitize(raw)
    }

    fn some(expected: &[&str]) -> Option<Vec<String>> {
        Some(expected.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn sanitize_accepts_plain_paths() {
        assert_eq!(segs("/"), some(&[]));
        assert_eq!(segs(""), some(&[]));
        assert_eq!(segs("/index.html"), some(&["index.html"]));
        assert_eq!(
            segs("/assets/index-BX3k2a9f.js"),
            some(&["assets", "index-BX3k2a9f.js"])
        );
        assert_eq!(segs("//a///b/"), some(&["a", "b"]));
        assert_eq!(segs("/./a/./b"), some(&["a", "b"]));
        assert_eq!(segs("/my%20file.txt"), some(&["my file.txt"]));
        assert_eq!(segs("/caf%C3%A9"), some(&["café"]));
        // Not a traversal: `...` is an ordinary (odd) name, as are dot-prefixed names.
        assert_eq!(segs("/.../x"), some(&["...", "x"]));
        assert_eq!(segs("/.well-known/x"), some(&[".well-known", "x"]));
        // Malformed escapes are left literal rather than guessed at.
        assert_eq!(segs("/100%"), some(&["100%"]));
    }

    #[test]
    fn sanitize_rejects_traversal_and_odd_bytes() {
        for raw in [
            "/..",
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/a/..",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/.%2e/etc/passwd",
            "/..%2fetc%2fpasswd",
            "/a%2f..%2f..%2fetc",
            "/..%5cetc%5cpasswd",
            "/a\\b",
            "/index.html%00",
            "/%00",
            "/%ff",
            "/%c0%ae%c0%ae/etc",
        ] {
            assert_eq!(sanitize(raw), None, "{raw} must be refused");
        }
        let long = format!("/{}", "a".repeat(MAX_SEGMENT + 1));
        assert_eq!(sanitize(&long), None);
        let deep = "/a".repeat(MAX_PATH / 2 + 1);
        assert_eq!(sanitize(&deep), None);
    }

    #[test]
    fn sanitize_decodes_exactly_once() {
        assert_eq!(
            segs("/%252e%252e/etc/passwd"),
            some(&["%2e%2e", "etc", "passwd"])
        );
        assert_eq!(segs("/%252e%252e%252f"), some(&["%2e%2e%2f"]));
    }

    #[test]
    fn hashed_names() {
        for name in [
            "index-BX3k2a9f.js",
            "app.3f9a8c1e.css",
            "main.3f9a8c1e5b7d9f0a1b2c.js",
            "vendor-B_x3k2a9.js",
            "index-BX3k2a9f.js.map",
            "logo-a1b2c3d4e5.svg",
            "chunk.9z8y7x6w.mjs",
            "index-3NOf-C0O.css",
            "vendor-a_B3-x9Z.js",
        ] {
            assert!(is_hashed(name), "{name} should count as hashed");
        }
        for name in [
            "index.html",
            "app.js",
            "favicon.ico",
            "vendor-polyfills.js",
            "jquery-3.7.1.min.js",
            "index-BX3k2a9.js",   // only 7 chars
            "index-ABCDEFGH.js",  // letters only
            "build-20240101.js",  // digits only
            "index-BX3k-2a9f.js", // '-' inside cuts the token short
            "BX3k2a9f",           // no extension at all
            ".BX3k2a9f",          // dotfile, not an extension
            "a-BX3k2a9f!.js",     // punctuation is not hash material
            "robots.txt",
        ] {
            assert!(!is_hashed(name), "{name} should not count as hashed");
        }
    }

    #[test]
    fn weak_comparison() {
        assert!(weak_eq("\"a-1\"", "\"a-1\""));
        assert!(weak_eq("W/\"a-1\"", "\"a-1\""));
        assert!(!weak_eq("a-1", "a-1"));
        assert!(!weak_eq("\"a-2\"", "\"a-1\""));
    }

    #[test]
    fn charset_only_for_text() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("a.css"), "text/css; charset=utf-8");
        assert!(content_type("a.js")
            .to_str()
            .is_ok_and(|v| v.ends_with("javascript; charset=utf-8")));
        assert_eq!(content_type("a.json"), "application/json; charset=utf-8");
        assert_eq!(content_type("a.png"), "image/png");
        assert_eq!(content_type("a.woff2"), "font/woff2");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
