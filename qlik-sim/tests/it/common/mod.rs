//! Helpers shared by the qlik-sim integration tests: start a simulator, QPS/proxy clients,
//! websocket connections over plain TCP or TLS.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use qlik_sim::{Sim, SimOptions};
use reqwest::redirect::Policy;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// How long any single wait in a test may take before it fails.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) type Ws = WebSocketStream<Box<dyn Io>>;

pub(crate) struct TestSim {
    pub sim: Sim,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TestSim {
    type Target = Sim;
    fn deref(&self) -> &Sim {
        &self.sim
    }
}

pub(crate) fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub(crate) async fn start(opts: SimOptions) -> TestSim {
    install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(opts, dir.path()).await.expect("sim starts");
    TestSim { sim, _dir: dir }
}

pub(crate) async fn start_default() -> TestSim {
    start(SimOptions::default()).await
}

fn ca(sim: &Sim) -> reqwest::Certificate {
    let pem = std::fs::read(&sim.pki().ca_cert).expect("root.pem");
    reqwest::Certificate::from_pem(&pem).expect("ca cert")
}

/// Which client certificate a QPS client presents.
pub(crate) enum ClientCert {
    None,
    Trusted,
    Untrusted,
}

pub(crate) fn qps_client(sim: &Sim, cert: ClientCert) -> reqwest::Client {
    install_provider();
    let mut b = reqwest::Client::builder()
        .tls_certs_only([ca(sim)])
        .redirect(Policy::none());
    let pair = match cert {
        ClientCert::None => None,
        ClientCert::Trusted => Some((&sim.pki().client_cert, &sim.pki().client_key)),
        ClientCert::Untrusted => Some((
            &sim.pki().untrusted_client_cert,
            &sim.pki().untrusted_client_key,
        )),
    };
    if let Some((c, k)) = pair {
        let mut pem = std::fs::read(c).expect("cert");
        pem.extend(std::fs::read(k).expect("key"));
        b = b.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
    }
    b.build().expect("client")
}

pub(crate) fn proxy_client(sim: &Sim) -> reqwest::Client {
    install_provider();
    reqwest::Client::builder()
        .tls_certs_only([ca(sim)])
        .redirect(Policy::none())
        .build()
        .expect("client")
}

pub(crate) const XRF: &str = "abcdefghij012345";

/// A QPS API call with a correct xrfkey; returns status and JSON (or Null) body.
pub(crate) async fn qps(
    sim: &Sim,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = qps_client(sim, ClientCert::Trusted);
    let url = format!("{}/qps/mashup/{path}?xrfkey={XRF}", sim.qps_api_url());
    let mut req = client.request(method, url).header("X-Qlik-Xrfkey", XRF);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("qps call");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Adds a proxy session for DIR\user through the QPS API; returns its id.
pub(crate) async fn add_session(sim: &Sim, user: &str) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let (status, _) = qps(
        sim,
        reqwest::Method::POST,
        "session",
        Some(json!({"UserDirectory": "DIR", "UserId": user, "Attributes": [{"Group": "g1"}], "SessionId": id})),
    )
    .await;
    assert_eq!(status, 201);
    id
}

pub(crate) fn cookie(sim: &Sim, session_id: &str) -> String {
    let _ = sim;
    format!("X-Qlik-Session-mashup={session_id}")
}

/// Fetches a websocket CSRF token for a session.
pub(crate) async fn csrf_token(sim: &Sim, cookie: &str) -> String {
    let resp = proxy_client(sim)
        .get(format!("{}/mashup/qps/csrftoken", sim.proxy_url()))
        .header("Cookie", cookie)
        .send()
        .await
        .expect("csrftoken");
    assert_eq!(resp.status().as_u16(), 204);
    resp.headers()["qlik-csrf-token"]
        .to_str()
        .expect("token")
        .to_string()
}

/// Opens a websocket at `path_and_query` on the proxy with optional Origin and Cookie.
pub(crate) async fn ws_connect(
    sim: &Sim,
    path_and_query: &str,
    origin: Option<&str>,
    cookie: Option<&str>,
) -> Result<Ws, tungstenite::Error> {
    let proxy = sim.proxy_url();
    let tls = proxy.starts_with("https://");
    let authority = proxy.split("://").nth(1).expect("authority").to_string();
    let scheme = if tls { "wss" } else { "ws" };
    let mut req = format!("{scheme}://{authority}{path_and_query}").into_client_request()?;
    if let Some(o) = origin {
        req.headers_mut()
            .insert("Origin", o.parse().expect("origin"));
    }
    if let Some(c) = cookie {
        req.headers_mut()
            .insert("Cookie", c.parse().expect("cookie"));
    }
    let tcp = tokio::net::TcpStream::connect(&authority).await?;
    let stream: Box<dyn Io> = if tls {
        install_provider();
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&sim.pki().ca_cert).expect("root.pem");
        for c in CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.expect("pem")).expect("add root");
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let host = authority.rsplit_once(':').expect("port").0.to_string();
        let name = ServerName::try_from(host).expect("server name");
        Box::new(connector.connect(name, tcp).await?)
    } else {
        Box::new(tcp)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(128 << 20))
        .max_frame_size(Some(128 << 20));
    let (ws, _resp) =
        tokio_tungstenite::client_async_with_config(req, stream, Some(config)).await?;
    Ok(ws)
}

/// The HTTP status of a refused websocket handshake.
pub(crate) fn refused_status(err: tungstenite::Error) -> u16 {
    match err {
        tungstenite::Error::Http(resp) => resp.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

/// The next message, failing the test after [`WAIT`].
pub(crate) async fn next(ws: &mut Ws) -> Option<Message> {
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(m))) => Some(m),
        Ok(Some(Err(_))) | Ok(None) => None,
        Err(_) => panic!("timed out waiting for a websocket message"),
    }
}

/// The next text frame as JSON.
pub(crate) async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match next(ws).await {
            Some(Message::Text(t)) => return serde_json::from_str(t.as_str()).expect("json frame"),
            Some(Message::Ping(_)) | Some(Message::Pong(_)) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Sends a JSON-RPC request and returns the response with the same id.
pub(crate) async fn call(ws: &mut Ws, id: u64, handle: i64, method: &str, params: Value) -> Value {
    let req =
        json!({"jsonrpc": "2.0", "id": id, "method": method, "handle": handle, "params": params});
    ws.send(Message::Text(req.to_string().into()))
        .await
        .expect("send");
    loop {
        let v = next_json(ws).await;
        if v["id"] == json!(id) {
            return v;
        }
    }
}

/// Reads until the socket closes; returns the close frame code, if one came. After a close
/// frame it reads on until the end, so that the reply goes out and the handshake completes.
pub(crate) async fn closed(ws: &mut Ws) -> Option<u16> {
    loop {
        match next(ws).await {
            Some(Message::Close(frame)) => {
                while next(ws).await.is_some() {}
                return frame.map(|f| u16::from(f.code));
            }
            Some(_) => continue,
            None => return None,
        }
    }
}

/// An authenticated engine websocket for a fresh session of DIR\`user` on `app`.
pub(crate) async fn open_engine(sim: &Sim, user: &str, app: &str) -> (String, Ws) {
    let sid = add_session(sim, user).await;
    let cookie = cookie(sim, &sid);
    let token = csrf_token(sim, &cookie).await;
    let origin = sim.proxy_url();
    let ws = ws_connect(
        sim,
        &format!("/mashup/app/{app}?qlik-csrf-token={token}"),
        Some(&origin),
        Some(&cookie),
    )
    .await
    .expect("upgrade");
    (sid, ws)
}

/// A rustls client config trusting the sim's CA, presenting `cert` (if any).
pub(crate) fn tls_config(sim: &Sim, cert: ClientCert) -> rustls::ClientConfig {
    install_provider();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&sim.pki().ca_cert).expect("root.pem");
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.expect("pem")).expect("add root");
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let pair = match cert {
        ClientCert::None => return builder.with_no_client_auth(),
        ClientCert::Trusted => (&sim.pki().client_cert, &sim.pki().client_key),
        ClientCert::Untrusted => (
            &sim.pki().untrusted_client_cert,
            &sim.pki().untrusted_client_key,
        ),
    };
    let certs = CertificateDer::pem_file_iter(pair.0)
        .expect("cert file")
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(pair.1).expect("key");
    builder
        .with_client_auth_cert(certs, key)
        .expect("client auth")
}

/// Opens a websocket at `url` (`ws://` or `wss://`) with extra request headers and a TLS
/// client config (for `wss://`).
pub(crate) async fn ws_open(
    url: &str,
    headers: &[(&str, &str)],
    tls: Option<rustls::ClientConfig>,
) -> Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error> {
    let mut req = url.into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().append(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            tungstenite::http::HeaderValue::from_bytes(v.as_bytes()).expect("value"),
        );
    }
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("authority")
        .to_string();
    let tcp = tokio::net::TcpStream::connect(&authority).await?;
    let stream: Box<dyn Io> = if url.starts_with("wss://") {
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(tls.expect("a TLS config for wss")));
        let host = authority.rsplit_once(':').expect("port").0.to_string();
        let name = ServerName::try_from(host).expect("server name");
        Box::new(connector.connect(name, tcp).await?)
    } else {
        Box::new(tcp)
    };
    tokio_tungstenite::client_async(req, stream).await
}

/// The proxy's websocket URL for `path_and_query`.
pub(crate) fn proxy_ws_url(sim: &Sim, path_and_query: &str) -> String {
    let proxy = sim.proxy_url();
    let (scheme, authority) = proxy.split_once("://").expect("url");
    let ws = if scheme == "https" { "wss" } else { "ws" };
    format!("{ws}://{authority}{path_and_query}")
}

/// Opens a websocket on the proxy with extra headers (Origin = the proxy's own).
pub(crate) async fn proxy_ws(
    sim: &Sim,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error> {
    let origin = sim.proxy_url();
    let mut all = vec![("Origin", origin.as_str())];
    all.extend_from_slice(headers);
    ws_open(
        &proxy_ws_url(sim, path_and_query),
        &all,
        Some(tls_config(sim, ClientCert::None)),
    )
    .await
}

/// The `name=value` part of the first `Set-Cookie` header.
pub(crate) fn set_cookie_pair(resp: &reqwest::Response) -> Option<String> {
    let v = resp.headers().get("set-cookie")?.to_str().ok()?;
    Some(v.split(';').next()?.trim().to_string())
}
