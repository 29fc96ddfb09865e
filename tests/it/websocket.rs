//! The engine websocket through the gateway, against qlik-sim: the handshake checks (Origin,
//! session), what reaches Qlik, recovery from a Qlik session that Qlik lost, frames passing
//! intact, the size limit, logout, and single-flight Qlik session creation.

use std::future::Future;
use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use qlik_sim::{AuthInfoTiming, SimOptions, SALES_APP_ID};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Raw = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A safety net so a broken gateway fails the test instead of hanging it; never a synchronisation.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn app_path() -> String {
    format!("/mashup/app/{SALES_APP_ID}")
}

/// The HTTP status of a refused handshake.
fn refused_status(r: Result<Ws, tungstenite::Error>) -> u16 {
    match r {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP answer to the handshake, got {e}"),
        Ok(_) => panic!("the handshake should have been refused"),
    }
}

fn ws_requests_at_qlik(env: &Env) -> usize {
    env.sim()
        .control()
        .requests()
        .iter()
        .filter(|r| r.websocket)
        .count()
}

/// Everything the client receives until the socket closes: the JSON frames and the close frame.
async fn read_until_close(ws: &mut Ws) -> (Vec<Value>, Option<CloseFrame>) {
    let mut frames = Vec::new();
    loop {
        match ws.inner.next().await {
            Some(Ok(Message::Text(t))) => {
                frames.push(serde_json::from_str(t.as_str()).expect("JSON frame"))
            }
            Some(Ok(Message::Close(f))) => return (frames, f),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (frames, None),
        }
    }
}

/// Sends a request with a caller-chosen id and returns every JSON frame up to its response.
async fn send_and_collect(
    ws: &mut Ws,
    id: u64,
    handle: i64,
    method: &str,
    params: Value,
) -> Vec<Value> {
    let req =
        json!({"jsonrpc": "2.0", "id": id, "handle": handle, "method": method, "params": params});
    ws.inner
        .send(Message::text(req.to_string()))
        .await
        .expect("send");
    let mut seen = Vec::new();
    loop {
        let v = ws
            .next_json()
            .await
            .unwrap_or_else(|| panic!("socket closed awaiting {method}; saw {seen:?}"));
        let done = v["id"] == id;
        seen.push(v);
        if done {
            return seen;
        }
    }
}

fn auth_infos(frames: &[Value]) -> Vec<&Value> {
    frames
        .iter()
        .filter(|f| f["method"] == "OnAuthenticationInformation")
        .map(|f| &f["params"])
        .collect()
}

/// Waits for the greeting of a healthy socket and returns `qSessionState`.
async fn expect_authenticated(ws: &mut Ws) -> String {
    let auth = within(
        "OnAuthenticationInformation",
        ws.wait_notification("OnAuthenticationInformation"),
    )
    .await;
    assert_eq!(auth["mustAuthenticate"], false, "{auth}");
    let connected = within("OnConnected", ws.wait_notification("OnConnected")).await;
    connected["qSessionState"]
        .as_str()
        .expect("qSessionState")
        .to_string()
}

/// Logs in and opens an engine socket that Qlik has greeted as authenticated.
async fn authenticated_ws(env: &Env) -> (String, Ws) {
    let cookie = env.login().await;
    let mut ws = env.ws(&app_path(), Some(&cookie)).await.expect("ws");
    expect_authenticated(&mut ws).await;
    (cookie, ws)
}

/// `POST /_gateway/logout` as a program would send it; the gateway answers 200.
async fn logout(env: &Env, cookie: &str) {
    let r = http_client()
        .post(format!("{}/_gateway/logout", env.url))
        .header("origin", &env.url)
        .header("cookie", cookie)
        .header("accept", "application/json")
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 200);
}

/// Closes the client side cleanly (so the relay ends now, not after its close grace period).
async fn close(mut ws: Ws) {
    let _ = ws.inner.close(None).await;
    while let Some(Ok(_)) = ws.inner.next().await {}
}

/// `Ws::call` for a socket opened without the harness (raw stream, caller-chosen id).
async fn raw_call(ws: &mut Raw, id: u64, handle: i64, method: &str, params: Value) -> Value {
    let req =
        json!({"jsonrpc": "2.0", "id": id, "handle": handle, "method": method, "params": params});
    ws.send(Message::text(req.to_string())).await.expect("send");
    loop {
        let v = raw_next_json(ws)
            .await
            .unwrap_or_else(|| panic!("socket closed awaiting {method}"));
        if v["id"] == id {
            return v;
        }
    }
}

async fn raw_next_json(ws: &mut Raw) -> Option<Value> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

async fn raw_wait_notification(ws: &mut Raw, method: &str) -> Value {
    loop {
        let v = raw_next_json(ws)
            .await
            .unwrap_or_else(|| panic!("socket closed before {method}"));
        if v["method"] == method {
            return v["params"].clone();
        }
    }
}

async fn connect_with_headers(
    env: &Env,
    path: &str,
    headers: &[(&str, String)],
) -> Result<Raw, tungstenite::Error> {
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}{}",
        env.addr, path
    ))?;
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    Ok(ws)
}

#[tokio::test]
async fn foreign_origin_is_refused_before_qlik_is_contacted() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let before = env.sim().control().counters();
    let r = env
        .ws_with_origin(&app_path(), Some(&cookie), Some("https://evil.example"))
        .await;
    assert_eq!(refused_status(r), 403);
    let after = env.sim().control().counters();
    assert_eq!(after.ws_upgrades, before.ws_upgrades);
    assert_eq!(after.csrf_tokens_issued, before.csrf_tokens_issued);
    assert_eq!(ws_requests_at_qlik(&env), 0);
    env.stop().await;
}

#[tokio::test]
async fn missing_origin_is_refused() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let r = env.ws_with_origin(&app_path(), Some(&cookie), None).await;
    assert_eq!(refused_status(r), 403);
    assert_eq!(env.sim().control().counters().ws_upgrades, 0);
    assert_eq!(ws_requests_at_qlik(&env), 0);
    env.stop().await;
}

#[tokio::test]
async fn origin_listed_in_allowed_origins_is_accepted() {
    let env = Env::with(Setup {
        security: "allowed_origins = [\"https://reports.example.com\"]".into(),
        ..Setup::default()
    })
    .await;
    let cookie = env.login().await;
    let mut ws = env
        .ws_with_origin(
            &app_path(),
            Some(&cookie),
            Some("https://reports.example.com"),
        )
        .await
        .expect("an allowed origin may open the engine websocket");
    expect_authenticated(&mut ws).await;
    // A look-alike is still foreign.
    let r = env
        .ws_with_origin(
            &app_path(),
            Some(&cookie),
            Some("https://reports.example.com.evil.example"),
        )
        .await;
    assert_eq!(refused_status(r), 403);
    close(ws).await;
    env.stop().await;
}

#[tokio::test]
async fn handshake_without_a_gateway_session_gets_401() {
    let env = Env::start().await;
    let r = env.ws(&app_path(), None).await;
    match r {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401);
            let body: Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or(b"{}")).expect("JSON body");
            assert!(
                body["login_url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("/_gateway/login")),
                "{body}"
            );
        }
        Err(e) => panic!("expected 401, got {e}"),
        Ok(_) => panic!("expected 401, got a websocket"),
    }
    // An unknown cookie is no session either.
    let r = env.ws(&app_path(), Some("qlik-gateway=forged")).await;
    assert_eq!(refused_status(r), 401);
    assert_eq!(env.sim().control().counters().ws_upgrades, 0);
    assert_eq!(env.sim().control().counters().sessions_created, 0);
    env.stop().await;
}

#[tokio::test]
async fn engine_session_works_and_qlik_sees_only_the_gateways_credentials() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let raw = connect_with_headers(
        &env,
        &app_path(),
        &[
            ("origin", env.url.clone()),
            (
                "cookie",
                format!("{cookie}; X-Qlik-Session-mashup=evil-session; pref=1"),
            ),
            ("x-qlik-user", "UserDirectory=EVIL; UserId=admin".into()),
            ("x-qlik-session-mashup", "evil-header".into()),
            ("x-qlik-security", "Context=ManagementAccess".into()),
            ("authorization", "Bearer evil".into()),
        ],
    )
    .await
    .expect("websocket");
    let mut ws = raw;

    let auth = within(
        "auth",
        raw_wait_notification(&mut ws, "OnAuthenticationInformation"),
    )
    .await;
    assert_eq!(auth["mustAuthenticate"], false);
    assert_eq!(auth["userId"], "alice");
    assert_eq!(auth["userDirectory"], "DEV");
    let connected = within("connected", raw_wait_notification(&mut ws, "OnConnected")).await;
    assert_eq!(connected["qSessionState"], "SESSION_CREATED");

    let v = within(
        "EngineVersion",
        raw_call(&mut ws, 1, -1, "EngineVersion", json!([])),
    )
    .await;
    assert!(
        v["result"]["qVersion"]["qComponentVersion"].is_string(),
        "{v}"
    );
    let v = within(
        "GetAuthenticatedUser",
        raw_call(&mut ws, 2, -1, "GetAuthenticatedUser", json!([])),
    )
    .await;
    assert_eq!(v["result"]["qReturn"], "UserDirectory=DEV; UserId=alice");
    let v = within(
        "OpenDoc",
        raw_call(&mut ws, 3, -1, "OpenDoc", json!([SALES_APP_ID])),
    )
    .await;
    assert_eq!(v["result"]["qReturn"]["qType"], "Doc", "{v}");
    let doc = v["result"]["qReturn"]["qHandle"]
        .as_i64()
        .expect("doc handle");
    let v = within(
        "GetAppLayout",
        raw_call(&mut ws, 4, doc, "GetAppLayout", json!([])),
    )
    .await;
    assert_eq!(v["result"]["qLayout"]["qTitle"], "Sales", "{v}");
    let props = json!({
        "qInfo": {"qType": "table"},
        "qHyperCubeDef": {
            "qDimensions": [{"qDef": {"qFieldDefs": ["Region"]}}],
            "qMeasures": [{"qDef": {"qDef": "Sum(Sales)", "qLabel": "Sales"}}],
            "qInitialDataFetch": [{"qLeft": 0, "qTop": 0, "qWidth": 2, "qHeight": 10}]
        }
    });
    let v = within(
        "CreateSessionObject",
        raw_call(&mut ws, 5, doc, "CreateSessionObject", json!([props])),
    )
    .await;
    let obj = v["result"]["qReturn"]["qHandle"]
        .as_i64()
        .unwrap_or_else(|| panic!("object handle in {v}"));
    let v = within(
        "GetLayout",
        raw_call(&mut ws, 6, obj, "GetLayout", json!([])),
    )
    .await;
    let matrix = v["result"]["qLayout"]["qHyperCube"]["qDataPages"][0]["qMatrix"]
        .as_array()
        .unwrap_or_else(|| panic!("qMatrix in {v}"))
        .clone();
    let sales: Vec<(String, f64)> = matrix
        .iter()
        .map(|row| {
            (
                row[0]["qText"].as_str().unwrap_or_default().to_string(),
                row[1]["qNum"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect();
    assert_eq!(
        sales,
        vec![
            ("North".to_string(), 1500.0),
            ("South".to_string(), 1350.0),
            ("East".to_string(), 1700.0),
            ("West".to_string(), 1050.0)
        ]
    );

    // What Qlik saw on the upgrade.
    let sessions = env.sim().control().sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let qlik_session = &sessions[0].session_id;
    let upgrades: Vec<_> = env
        .sim()
        .control()
        .requests()
        .into_iter()
        .filter(|r| r.websocket)
        .collect();
    assert_eq!(upgrades.len(), 1, "{upgrades:?}");
    let up = &upgrades[0];
    assert_eq!(up.path, format!("/mashup/app/{SALES_APP_ID}"));
    let header = |name: &str| up.headers.get(name).cloned().unwrap_or_default();
    assert_eq!(header("origin"), vec![env.sim().proxy_url()]);
    let cookies = header("cookie").join("; ");
    assert!(
        cookies.contains(&format!("X-Qlik-Session-mashup={qlik_session}")),
        "{cookies}"
    );
    assert!(!cookies.contains("evil"), "{cookies}");
    assert!(!cookies.contains("qlik-gateway"), "{cookies}");
    assert_eq!(
        cookies.matches("X-Qlik-Session").count(),
        1,
        "exactly one Qlik session cookie: {cookies}"
    );
    let query = up.query.clone().unwrap_or_default();
    assert!(
        query
            .split('&')
            .any(|p| p.starts_with("qlik-csrf-token=") && p.len() > "qlik-csrf-token=".len()),
        "{query}"
    );
    let forbidden: Vec<_> = up
        .headers
        .keys()
        .filter(|k| k.starts_with("x-qlik-") || k.as_str() == "authorization")
        .collect();
    assert!(
        forbidden.is_empty(),
        "client headers reached Qlik: {forbidden:?}"
    );
    let _ = ws.close(None).await;
    while let Some(Ok(_)) = ws.next().await {}
    env.stop().await;
}

/// Qlik expired every session before the client connects: the client must only ever see
/// `mustAuthenticate: false` and get answers, whatever the Qlik proxy's exact behaviour.
async fn expired_before_connect(timing: AuthInfoTiming, close_after_must_authenticate: bool) {
    let env = Env::with(Setup {
        sim: SimOptions {
            auth_info_timing: timing,
            close_after_must_authenticate,
            ..SimOptions::default()
        },
        ..Setup::default()
    })
    .await;
    let cookie = env.login().await;
    // A first socket makes the Qlik session (and the gateway caches its CSRF token).
    let mut first = env.ws(&app_path(), Some(&cookie)).await.expect("ws");
    let _ = within("first answer", first.call(-1, "EngineVersion", json!([]))).await;
    close(first).await;
    assert_eq!(env.sim().control().counters().sessions_created, 1);

    env.sim().control().expire_all_sessions();
    assert!(env.sim().control().sessions().is_empty());

    let mut ws = env.ws(&app_path(), Some(&cookie)).await.expect("ws");
    // The AfterFirstFrame proxy says nothing until the client speaks: the gateway must replay
    // this request on the new upstream socket. With Immediate it is sent before anything arrives.
    let frames = within(
        "EngineVersion",
        send_and_collect(&mut ws, 100, -1, "EngineVersion", json!([])),
    )
    .await;
    let response = frames.last().expect("response");
    assert!(
        response["result"]["qVersion"]["qComponentVersion"].is_string(),
        "{response}"
    );
    let mut infos: Vec<Value> = auth_infos(&frames).into_iter().cloned().collect();
    if infos.is_empty() {
        // Immediate greeting may follow after the reply in theory; read until it comes.
        infos.push(within("auth", ws.wait_notification("OnAuthenticationInformation")).await);
    }
    assert!(
        infos.iter().all(|p| p["mustAuthenticate"] == false),
        "the client saw {infos:?}"
    );
    let v = within("OpenDoc", ws.call(-1, "OpenDoc", json!([SALES_APP_ID]))).await;
    assert_eq!(v["result"]["qReturn"]["qType"], "Doc", "{v}");

    let c = env.sim().control().counters();
    assert!(
        c.ws_must_authenticate >= 1,
        "the stale session should have been tried: {c:?}"
    );
    assert_eq!(c.sessions_created, 2, "{c:?}");
    assert_eq!(env.sim().control().sessions().len(), 1);
    close(ws).await;
    env.stop().await;
}

#[tokio::test]
async fn expired_qlik_session_is_hidden_immediate_auth_info_socket_closed() {
    expired_before_connect(AuthInfoTiming::Immediate, true).await;
}

#[tokio::test]
async fn expired_qlik_session_is_hidden_immediate_auth_info_socket_kept() {
    expired_before_connect(AuthInfoTiming::Immediate, false).await;
}

#[tokio::test]
async fn expired_qlik_session_is_hidden_auth_info_after_first_frame_socket_closed() {
    expired_before_connect(AuthInfoTiming::AfterFirstFrame, true).await;
}

#[tokio::test]
async fn expired_qlik_session_is_hidden_auth_info_after_first_frame_socket_kept() {
    expired_before_connect(AuthInfoTiming::AfterFirstFrame, false).await;
}

#[tokio::test]
async fn qlik_timeout_on_an_open_socket_is_passed_on_and_a_reconnect_recovers() {
    let env = Env::start().await;
    let (cookie, mut ws) = authenticated_ws(&env).await;
    let v = within("OpenDoc", ws.call(-1, "OpenDoc", json!([SALES_APP_ID]))).await;
    assert_eq!(v["result"]["qReturn"]["qType"], "Doc", "{v}");

    env.sim().control().expire_all_sessions();
    let (frames, close_frame) = within("close", read_until_close(&mut ws)).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    let n = &frames[0];
    assert_eq!(n["jsonrpc"], "2.0");
    assert_eq!(n["method"], "OnSessionTimedOut", "{n}");
    assert_eq!(n["params"]["severity"], "fatal");
    assert_eq!(
        n["params"]["message"],
        "Session timed out due to inactivity"
    );
    assert!(n["params"]["timestamp"].is_string());
    let close_frame = close_frame.expect("a close frame");
    // Qlik closes with 1000; the gateway relays the reason but makes the code one that clients
    // (enigma.js with suspendOnClose) treat as a lost connection to resume, since the gateway
    // can make a new Qlik session on the next connect.
    assert_eq!(u16::from(close_frame.code), 4002, "{close_frame:?}");
    assert_eq!(
        close_frame.reason.as_str(),
        "Session timed out due to inactivity"
    );
    drop(ws);

    // Reconnecting needs no new login.
    let mut ws = env.ws(&app_path(), Some(&cookie)).await.expect("ws");
    assert_eq!(expect_authenticated(&mut ws).await, "SESSION_CREATED");
    let v = within("OpenDoc", ws.call(-1, "OpenDoc", json!([SALES_APP_ID]))).await;
    assert_eq!(v["result"]["qReturn"]["qType"], "Doc", "{v}");
    assert_eq!(env.sim().control().counters().sessions_created, 2);
    close(ws).await;
    env.stop().await;
}

#[tokio::test]
async fn binary_frames_are_echoed_byte_for_byte() {
    let env = Env::start().await;
    let (_, mut ws) = authenticated_ws(&env).await;
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 256) as u8).collect();
    ws.inner
        .send(Message::binary(payload.clone()))
        .await
        .expect("send");
    let echoed = within("binary echo", async {
        loop {
            match ws.inner.next().await {
                Some(Ok(Message::Binary(b))) => return b,
                Some(Ok(_)) => continue,
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(echoed.as_ref(), payload.as_slice());
    close(ws).await;
    env.stop().await;
}

#[tokio::test]
async fn ping_gets_pong() {
    let env = Env::start().await;
    let (_, mut ws) = authenticated_ws(&env).await;
    ws.inner
        .send(Message::Ping(b"are-you-there".to_vec().into()))
        .await
        .expect("ping");
    let pong = within("pong", async {
        loop {
            match ws.inner.next().await {
                Some(Ok(Message::Pong(p))) => return p,
                Some(Ok(_)) => continue,
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(pong.as_ref(), b"are-you-there");
    // The socket still serves requests afterwards.
    let v = within("EngineVersion", ws.call(-1, "EngineVersion", json!([]))).await;
    assert!(v["result"]["qVersion"].is_object(), "{v}");
    close(ws).await;
    env.stop().await;
}

/// Writes `frames` (masked, as a client does) straight to the socket a few bytes at a time, so
/// that the gateway's reads end inside headers and payloads.
async fn write_in_pieces(ws: &mut Ws, frames: Vec<Frame>) {
    use tokio::io::AsyncWriteExt;
    let mut bytes = Vec::new();
    for mut f in frames {
        f.header_mut().mask = Some([0x11, 0x22, 0x33, 0x44]);
        f.format(&mut bytes).expect("format");
    }
    let MaybeTlsStream::Plain(tcp) = ws.inner.get_mut() else {
        panic!("plain TCP expected")
    };
    let mut at = 0;
    for size in (1..=7).cycle() {
        if at == bytes.len() {
            break;
        }
        let end = (at + size).min(bytes.len());
        tcp.write_all(&bytes[at..end]).await.expect("write");
        tcp.flush().await.expect("flush");
        at = end;
    }
}

#[tokio::test]
async fn split_and_fragmented_frames_cross_the_relay_intact() {
    let env = Env::start().await;
    let (_, mut ws) = authenticated_ws(&env).await;
    // One request in three fragments with a ping between them (RFC 6455 allows control frames
    // inside a fragmented message), a long one (16-bit length) after it.
    let text = "fragmented ".repeat(20);
    let req =
        json!({"jsonrpc": "2.0", "id": 7, "handle": -1, "method": "SimEcho", "params": [text]})
            .to_string();
    let (a, rest) = req.split_at(10);
    let (b, c) = rest.split_at(rest.len() / 2);
    let long = "z".repeat(70_000);
    let req2 =
        json!({"jsonrpc": "2.0", "id": 8, "handle": -1, "method": "SimEcho", "params": [long]})
            .to_string();
    write_in_pieces(
        &mut ws,
        vec![
            Frame::message(a.to_owned(), OpCode::Data(Data::Text), false),
            Frame::ping(b"mid".to_vec()),
            Frame::message(b.to_owned(), OpCode::Data(Data::Continue), false),
            Frame::message(c.to_owned(), OpCode::Data(Data::Continue), true),
            Frame::message(req2, OpCode::Data(Data::Text), true),
        ],
    )
    .await;
    let (mut pong, mut echoed, mut echoed_long) = (None, None, None);
    within("pong and echoes", async {
        while pong.is_none() || echoed.is_none() || echoed_long.is_none() {
            match ws.inner.next().await {
                Some(Ok(Message::Pong(p))) => pong = Some(p),
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                    let r = v["result"]["qReturn"][0].as_str().map(str::to_owned);
                    match v["id"].as_u64() {
                        Some(7) => echoed = r,
                        Some(8) => echoed_long = r,
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(pong.as_deref(), Some(&b"mid"[..]));
    assert_eq!(echoed.as_deref(), Some(text.as_str()));
    assert_eq!(echoed_long.map(|s| s.len()), Some(long.len()));
    close(ws).await;
    env.stop().await;
}

#[tokio::test]
async fn fragmented_message_over_max_websocket_message_closes_the_socket() {
    let env = Env::with(Setup {
        security: "max_websocket_message = 1048576".into(),
        ..Setup::default()
    })
    .await;
    let (_, mut ws) = authenticated_ws(&env).await;
    // Each fragment is under the limit; the message is not.
    let half = "y".repeat(600 * 1024);
    for (i, op) in [Data::Text, Data::Continue].into_iter().enumerate() {
        let _ = ws
            .inner
            .send(Message::Frame(Frame::message(
                half.clone(),
                OpCode::Data(op),
                i == 1,
            )))
            .await;
    }
    let (frames, close_frame) = within("close", read_until_close(&mut ws)).await;
    assert!(frames.iter().all(|f| f.get("id").is_none()), "{frames:?}");
    assert_eq!(close_frame.expect("a close frame").code, CloseCode::Size);
    drop(ws);
    env.stop().await;
}

#[tokio::test]
async fn ten_mib_text_frame_round_trips_intact() {
    let env = Env::start().await;
    let (_, mut ws) = authenticated_ws(&env).await;
    let big: String = (0..10 * 1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let v = within(
        "SimEcho",
        ws.call(-1, "SimEcho", json!({"blob": big, "tail": "ünïcødé ✓"})),
    )
    .await;
    let back = &v["result"]["qReturn"];
    assert_eq!(back["tail"], "ünïcødé ✓");
    let blob = back["blob"].as_str().expect("blob");
    assert_eq!(blob.len(), big.len());
    assert!(blob == big, "the 10 MiB payload changed on the way");
    close(ws).await;
    env.stop().await;
}

/// A logout while Qlik's answer is streaming through the relay: the answer arrives whole, then
/// the logout notice and the close (a close injected mid-frame would corrupt the stream).
#[tokio::test]
async fn logout_while_a_large_frame_streams_closes_after_the_frame() {
    let env = Env::start().await;
    let (cookie, mut ws) = authenticated_ws(&env).await;
    let big = "q".repeat(10 * 1024 * 1024);
    let req =
        json!({"jsonrpc": "2.0", "id": 5, "handle": -1, "method": "SimEcho", "params": [big]});
    ws.inner
        .send(Message::text(req.to_string()))
        .await
        .expect("send");
    // The answer has begun to arrive (nothing else is pending on this socket); it is not read
    // yet, so the gateway is in the middle of writing it.
    let MaybeTlsStream::Plain(tcp) = ws.inner.get_ref() else {
        panic!("plain TCP expected")
    };
    within("the answer's first bytes", tcp.readable())
        .await
        .expect("readable");
    logout(&env, &cookie).await;
    let (frames, close_frame) = within("close", read_until_close(&mut ws)).await;
    let answer = frames.iter().find(|f| f["id"] == 5).expect("the answer");
    assert_eq!(
        answer["result"]["qReturn"][0].as_str().map(str::len),
        Some(big.len())
    );
    let last = frames.last().expect("frames");
    assert_eq!(last["method"], "OnSessionLoggedOut", "{frames:?}");
    assert_eq!(close_frame.expect("close frame").code, CloseCode::Normal);
    drop(ws);
    env.stop().await;
}

#[tokio::test]
async fn close_code_and_reason_from_qlik_are_relayed() {
    let mut env = Env::start().await;
    let (_, mut ws) = authenticated_ws(&env).await;
    // The Qlik proxy going down closes with 1001 "Server shutting down".
    let sim = env.sim.take().expect("sim");
    let shutdown = tokio::spawn(sim.shutdown());
    let (frames, close_frame) = within("close", read_until_close(&mut ws)).await;
    assert!(frames.is_empty(), "{frames:?}");
    let f = close_frame.expect("close frame");
    assert_eq!(f.code, CloseCode::Away);
    assert_eq!(f.reason.as_str(), "Server shutting down");
    drop(ws);
    within("sim shutdown", shutdown).await.expect("sim task");
    env.stop().await;
}

#[tokio::test]
async fn frame_over_max_websocket_message_closes_the_socket() {
    let env = Env::with(Setup {
        security: "max_websocket_message = 1048576".into(),
        ..Setup::default()
    })
    .await;
    let (_, mut ws) = authenticated_ws(&env).await;
    // Under the limit is fine.
    let half: String = "x".repeat(512 * 1024);
    let v = within("SimEcho", ws.call(-1, "SimEcho", json!([half]))).await;
    assert_eq!(
        v["result"]["qReturn"][0].as_str().map(str::len),
        Some(half.len())
    );
    // Over it closes the socket.
    let big = json!({"jsonrpc": "2.0", "id": 99, "handle": -1, "method": "SimEcho", "params": ["y".repeat(2 * 1024 * 1024)]});
    let _ = ws.inner.send(Message::text(big.to_string())).await;
    let (frames, close_frame) = within("close", read_until_close(&mut ws)).await;
    assert!(
        frames.iter().all(|f| f["id"] != 99),
        "the oversized request must not be answered"
    );
    let f = close_frame.expect("a close frame");
    assert_eq!(f.code, CloseCode::Size, "{f:?}");
    drop(ws);
    env.stop().await;
}

#[tokio::test]
async fn logout_closes_that_sessions_websockets_only() {
    let env = Env::start().await;
    let alice_a = env.login().await;
    let alice_b = env.login().await;
    assert_ne!(alice_a, alice_b);
    let mut a = env.ws(&app_path(), Some(&alice_a)).await.expect("ws a");
    let mut b = env.ws(&app_path(), Some(&alice_b)).await.expect("ws b");
    expect_authenticated(&mut a).await;
    expect_authenticated(&mut b).await;

    logout(&env, &alice_a).await;

    let (frames, close_frame) = within("close of a", read_until_close(&mut a)).await;
    let first = frames.first().expect("a notification before the close");
    assert_eq!(first["method"], "OnSessionLoggedOut", "{frames:?}");
    assert_eq!(first["params"]["severity"], "fatal");
    assert!(
        frames
            .iter()
            .all(|f| f["params"]["mustAuthenticate"] != true),
        "{frames:?}"
    );
    let f = close_frame.expect("close frame");
    assert_eq!(f.code, CloseCode::Normal, "{f:?}");
    drop(a);

    // The other session's socket is untouched.
    let v = within("EngineVersion on b", b.call(-1, "EngineVersion", json!([]))).await;
    assert!(v["result"]["qVersion"].is_object(), "{v}");
    // And the logged-out cookie cannot open a new one.
    assert_eq!(
        refused_status(env.ws(&app_path(), Some(&alice_a)).await),
        401
    );
    close(b).await;
    env.stop().await;
}

#[tokio::test]
async fn parallel_first_websockets_create_one_qlik_session() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let path = app_path();
    let opens = (0..8).map(|_| async {
        let mut ws = env.ws(&path, Some(&cookie)).await.expect("ws");
        expect_authenticated(&mut ws).await;
        ws
    });
    let sockets = within("8 sockets", futures_util::future::join_all(opens)).await;
    let c = env.sim().control().counters();
    assert_eq!(c.sessions_created, 1, "{c:?}");
    assert_eq!(env.sim().control().sessions().len(), 1);
    assert_eq!(env.sim().control().sessions()[0].open_websockets, 8);
    for ws in sockets {
        close(ws).await;
    }
    env.stop().await;
}

#[tokio::test]
async fn logout_closes_websockets_even_when_qlik_keeps_the_session() {
    let env = Env::start().await;
    let (cookie, mut ws) = authenticated_ws(&env).await;
    // QPS cannot delete the Qlik session, so Qlik says nothing: the gateway closes the socket itself.
    env.sim()
        .control()
        .set_fault(Some(qlik_sim::QpsFault::Status(500)));
    logout(&env, &cookie).await;
    let (frames, close_frame) = within("close", read_until_close(&mut ws)).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    let n = &frames[0];
    assert_eq!(n["method"], "OnSessionLoggedOut", "{n}");
    assert_eq!(n["params"]["severity"], "fatal");
    assert_eq!(n["params"]["message"], "User logged out manually");
    let ts = n["params"]["timestamp"].as_str().expect("timestamp");
    assert!(
        ts.len() == 24 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'),
        "an RFC 3339 UTC timestamp like Qlik's: {ts}"
    );
    let f = close_frame.expect("close frame");
    assert_eq!(f.code, CloseCode::Normal, "{f:?}");
    assert_eq!(env.sim().control().sessions().len(), 1);
    drop(ws);
    env.sim().control().set_fault(None);
    env.stop().await;
}

#[tokio::test]
async fn qps_down_while_recovering_is_a_retry_not_a_login_prompt() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let mut first = env.ws(&app_path(), Some(&cookie)).await.expect("ws");
    expect_authenticated(&mut first).await;
    close(first).await;
    env.sim().control().expire_all_sessions();
    env.sim()
        .control()
        .set_fault(Some(qlik_sim::QpsFault::Status(500)));

    let mut ws = env.ws(&app_path(), Some(&cookie)).await.expect("ws");
    let (frames, close_frame) = within("close", read_until_close(&mut ws)).await;
    assert!(
        auth_infos(&frames)
            .iter()
            .all(|p| p["mustAuthenticate"] != true),
        "a QPS failure must not send the user to a login: {frames:?}"
    );
    let f = close_frame.expect("close frame");
    assert_eq!(f.code, CloseCode::Again, "{f:?}");
    drop(ws);

    // Once QPS answers again, the same gateway session recovers.
    env.sim().control().set_fault(None);
    let mut ws = env.ws(&app_path(), Some(&cookie)).await.expect("ws");
    expect_authenticated(&mut ws).await;
    close(ws).await;
    env.stop().await;
}

#[tokio::test]
async fn engine_activity_keeps_the_gateway_session_alive() {
    let env = Env::with(Setup {
        session: "idle_timeout = \"1s\"\nsweep_interval = \"100ms\"\n".into(),
        ..Setup::default()
    })
    .await;
    let busy = env.login().await;
    let idle = env.login().await;
    let mut busy_ws = env.ws(&app_path(), Some(&busy)).await.expect("busy ws");
    let mut idle_ws = env.ws(&app_path(), Some(&idle)).await.expect("idle ws");
    expect_authenticated(&mut busy_ws).await;
    expect_authenticated(&mut idle_ws).await;

    // A user working on an open dashboard for twice the idle timeout, with no HTTP request at
    // all. The pauses are the scenario (time passing), not synchronisation.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        let v = within(
            "EngineVersion",
            busy_ws.call(-1, "EngineVersion", json!([])),
        )
        .await;
        assert!(v["result"]["qVersion"].is_object(), "{v}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(env.get("/_gateway/me", &busy).await.status(), 200);

    // The session of the page nobody touched ended, and its socket with it.
    let (_, close_frame) = within("close of the idle socket", read_until_close(&mut idle_ws)).await;
    assert!(close_frame.is_some(), "the idle socket gets a close frame");
    assert_eq!(env.get("/_gateway/me", &idle).await.status(), 401);
    close(busy_ws).await;
    drop(idle_ws);
    env.stop().await;
}

/// A busy socket outlives nothing: once its session passes the absolute timeout and a request
/// finds it over (and drops it), the socket is still closed with the gateway's close frame.
#[tokio::test]
async fn a_session_found_expired_by_a_request_still_closes_its_websockets() {
    let env = Env::with(Setup {
        // The sweep is rare next to the polling below, so the request is what finds the expiry.
        session: "idle_timeout = \"1h\"\nabsolute_timeout = \"2s\"\nsweep_interval = \"3s\"\n"
            .into(),
        ..Setup::default()
    })
    .await;
    let cookie = env.login().await;
    let mut ws = env.ws(&app_path(), Some(&cookie)).await.expect("ws");
    expect_authenticated(&mut ws).await;
    within("the session to end", async {
        while env.get("/_gateway/me", &cookie).await.status() != 401 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (_, close_frame) = within(
        "close of the expired session's socket",
        read_until_close(&mut ws),
    )
    .await;
    assert!(
        close_frame.is_some(),
        "the socket gets the gateway's close frame"
    );
    drop(ws);
    env.stop().await;
}

#[tokio::test]
async fn websockets_beyond_the_per_session_limit_get_429_before_qlik_is_contacted() {
    let env = Env::with(Setup {
        security: "max_websockets_per_session = 2".into(),
        ..Setup::default()
    })
    .await;
    let cookie = env.login().await;
    let other = env.login().await;
    let mut a = env.ws(&app_path(), Some(&cookie)).await.expect("first ws");
    let mut b = env.ws(&app_path(), Some(&cookie)).await.expect("second ws");
    expect_authenticated(&mut a).await;
    expect_authenticated(&mut b).await;
    let at_qlik = ws_requests_at_qlik(&env);

    assert_eq!(
        refused_status(env.ws(&app_path(), Some(&cookie)).await),
        429
    );
    assert_eq!(
        ws_requests_at_qlik(&env),
        at_qlik,
        "Qlik was never contacted"
    );
    // The limit is per session: another login still connects.
    let mut c = env
        .ws(&app_path(), Some(&other))
        .await
        .expect("another session's ws");
    expect_authenticated(&mut c).await;

    // A closed socket frees its place.
    close(a).await;
    let mut again = within("a place to free up", async {
        loop {
            match env.ws(&app_path(), Some(&cookie)).await {
                Ok(ws) => return ws,
                Err(tungstenite::Error::Http(r)) if r.status() == 429 => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    expect_authenticated(&mut again).await;
    for ws in [b, c, again] {
        close(ws).await;
    }
    env.stop().await;
}

/// The `qlik-csrf-token` values of the upgrades that reached Qlik.
fn csrf_tokens_at_qlik(env: &Env) -> Vec<Vec<String>> {
    env.sim()
        .control()
        .requests()
        .iter()
        .filter(|r| r.websocket)
        .map(|r| {
            let q = r.query.clone().unwrap_or_default();
            q.split('&')
                .filter(|p| p.to_ascii_lowercase().starts_with("qlik-csrf-token="))
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// A URL with its own (stale) token, the way Qlik's Nov 2024 article, `@qlik/api` and a
/// `resume()` of an old URL send it: the gateway's token replaces it, whichever copy Qlik reads.
async fn stale_client_csrf_token(duplicate: qlik_sim::DuplicateParam) {
    let env = Env::with(Setup {
        sim: SimOptions {
            duplicate_param: duplicate,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let cookie = env.login().await;
    let path = format!(
        "{}?reloadUri=https%3A%2F%2Fpage%2Fx&xrfkey=abcdefghijklmnop&qlik-csrf-token=stale&QLIK-CSRF-TOKEN=older&ttl=60",
        app_path()
    );
    let mut ws = env.ws(&path, Some(&cookie)).await.expect("ws");
    expect_authenticated(&mut ws).await;
    close(ws).await;
    let seen = env.sim().control().requests();
    let up = seen
        .iter()
        .rfind(|r| r.websocket)
        .expect("an upgrade at Qlik");
    let q = up.query.clone().unwrap_or_default();
    assert!(
        q.starts_with(
            "reloadUri=https%3A%2F%2Fpage%2Fx&xrfkey=abcdefghijklmnop&ttl=60&qlik-csrf-token="
        ),
        "other parameters pass unchanged, in order: {q}"
    );
    for tokens in csrf_tokens_at_qlik(&env) {
        assert_eq!(tokens.len(), 1, "one token, never two: {tokens:?}");
        assert!(!tokens[0].ends_with("=stale"));
    }

    // Qlik loses the session; the page resumes with the very same URL.
    env.sim().control().expire_all_sessions();
    let mut ws = env.ws(&path, Some(&cookie)).await.expect("ws after expiry");
    expect_authenticated(&mut ws).await;
    let r = ws.call(-1, "EngineVersion", json!({})).await;
    assert!(r["result"]["qVersion"].is_object(), "{r}");
    close(ws).await;
    env.stop().await;
}

#[tokio::test]
async fn a_stale_client_csrf_token_never_breaks_a_socket_when_qlik_reads_the_first() {
    stale_client_csrf_token(qlik_sim::DuplicateParam::First).await;
}

#[tokio::test]
async fn a_stale_client_csrf_token_never_breaks_a_socket_when_qlik_reads_the_last() {
    stale_client_csrf_token(qlik_sim::DuplicateParam::Last).await;
}

#[tokio::test]
async fn a_csrf_token_header_on_the_upgrade_does_not_reach_qlik() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let r = connect_with_headers(
        &env,
        &app_path(),
        &[
            ("cookie", cookie.clone()),
            ("origin", env.url.clone()),
            ("qlik-csrf-token", "stale".to_string()),
        ],
    )
    .await;
    let mut ws = r.expect("ws");
    raw_wait_notification(&mut ws, "OnAuthenticationInformation").await;
    let seen = env.sim().control().requests();
    let up = seen
        .iter()
        .rfind(|r| r.websocket)
        .expect("an upgrade at Qlik");
    assert!(
        !up.headers.contains_key("qlik-csrf-token"),
        "{:?}",
        up.headers
    );
    env.stop().await;
}

#[tokio::test]
async fn the_logout_uri_qlik_announces_is_on_the_gateways_origin() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let mut ws = env.ws(&app_path(), Some(&cookie)).await.expect("ws");
    let auth = within(
        "OnAuthenticationInformation",
        ws.wait_notification("OnAuthenticationInformation"),
    )
    .await;
    assert_eq!(auth["mustAuthenticate"], false);
    assert_eq!(
        auth["logoutUri"],
        format!("{}/mashup/qps/user", env.url),
        "{auth}"
    );
    close(ws).await;
    env.stop().await;
}

/// `DELETE {mount}/qps/user` from the page.
async fn qlik_delete_logout(env: &Env, cookie: &str, origin: Option<&str>) -> reqwest::Response {
    let mut r = http_client()
        .delete(format!("{}/mashup/qps/user", env.url))
        .header("cookie", cookie);
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    r.send().await.expect("DELETE qps/user")
}

#[tokio::test]
async fn qliks_logout_ends_the_gateway_session_and_its_websockets() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let mut ws = env.ws(&app_path(), Some(&cookie)).await.expect("ws");
    expect_authenticated(&mut ws).await;

    // Not from the gateway's own pages: refused, nothing ended.
    for origin in [None, Some("https://evil.example")] {
        let r = qlik_delete_logout(&env, &cookie, origin).await;
        assert_eq!(r.status(), 403, "{origin:?}");
    }
    assert_eq!(env.get("/_gateway/me", &cookie).await.status(), 200);

    let r = qlik_delete_logout(&env, &cookie, Some(&env.url)).await;
    assert_eq!(r.status(), 200);
    assert!(
        cookie_from(&r).is_some_and(|c| c.ends_with('=')),
        "the cookie is cleared"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["session"], "inactive", "{v}");

    let (frames, close_frame) = within("the close", read_until_close(&mut ws)).await;
    assert!(
        frames
            .iter()
            .all(|f| f["params"]["mustAuthenticate"] != true),
        "{frames:?}"
    );
    let f = close_frame.expect("close frame");
    assert_eq!(f.code, CloseCode::Normal, "{f:?}");
    assert_eq!(f.reason.as_str(), "logged out");
    assert!(
        env.sim().control().sessions().is_empty(),
        "the Qlik session ended"
    );
    // Logged out for good: no new Qlik session behind the old cookie.
    assert_eq!(env.get("/_gateway/me", &cookie).await.status(), 401);
    assert_eq!(env.get("/mashup/sim/echo", &cookie).await.status(), 401);
    assert!(env.sim().control().sessions().is_empty());
    env.stop().await;
}

/// A socket neither side has spoken on yet (Qlik's documented order: it greets only after the
/// client's first frame) is parked, holding no buffers; it still ends with its session, and
/// still wakes when the client speaks.
#[tokio::test]
async fn a_quiet_socket_ends_with_its_session_and_wakes_when_the_client_speaks() {
    let env = Env::with(Setup {
        sim: SimOptions {
            auth_info_timing: AuthInfoTiming::AfterFirstFrame,
            ..SimOptions::default()
        },
        ..Setup::default()
    })
    .await;
    let cookie = env.login().await;
    let mut quiet = env.ws(&app_path(), Some(&cookie)).await.expect("ws");
    let mut talking = env.ws(&app_path(), Some(&cookie)).await.expect("ws");
    // Both upstream sockets are open (the gateway dials Qlik before it answers the upgrade).
    assert_eq!(env.sim().control().sessions()[0].open_websockets, 2);

    let v = within("first call", talking.call(-1, "EngineVersion", json!([]))).await;
    assert!(v["result"]["qVersion"].is_object(), "{v}");
    close(talking).await;

    logout(&env, &cookie).await;
    let (frames, close_frame) =
        within("close of the quiet socket", read_until_close(&mut quiet)).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["method"], "OnSessionLoggedOut", "{frames:?}");
    let f = close_frame.expect("close frame");
    assert_eq!(f.code, CloseCode::Normal, "{f:?}");
    drop(quiet);
    env.stop().await;
}

/// Qlik ends a parked socket (the session timed out before anyone spoke): the client gets Qlik's
/// notification and a close, as on a socket that had settled.
#[tokio::test]
async fn qlik_ending_a_quiet_socket_reaches_the_client() {
    let env = Env::with(Setup {
        sim: SimOptions {
            auth_info_timing: AuthInfoTiming::Never,
            ..SimOptions::default()
        },
        ..Setup::default()
    })
    .await;
    let cookie = env.login().await;
    let mut quiet = env.ws(&app_path(), Some(&cookie)).await.expect("ws");
    assert_eq!(env.sim().control().sessions()[0].open_websockets, 1);
    env.sim().control().expire_all_sessions();
    let (frames, close_frame) = within("close", read_until_close(&mut quiet)).await;
    assert!(
        frames.iter().any(|f| f["method"] == "OnSessionTimedOut"),
        "{frames:?}"
    );
    assert!(close_frame.is_some(), "{frames:?}");
    drop(quiet);
    env.stop().await;
}
