//! The engine websocket, behind the proxy or direct: proxy notifications
//! (`OnAuthenticationInformation`, fatal session messages; proxy sockets only), `OnConnected`,
//! and a small QIX JSON-RPC 2.0 engine (§4).

use crate::apps::{self, App, Area, Cube};
use crate::options::AuthInfoTiming;
use crate::state::{Shared, SocketCmd, SocketKind, User};
use crate::util::now_rfc3339;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Engine version reported by `EngineVersion` and `ProductVersion`.
const ENGINE_VERSION: &str = "12.2027.0";
/// The doc handle (there is at most one open doc per engine session).
const DOC_HANDLE: i64 = 1;
/// How long to wait for the peer's close frame after sending ours.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Per (proxy session, app, identity) engine state; survives reconnects (`SESSION_ATTACHED`).
#[derive(Debug, Default)]
pub(crate) struct EngineSession {
    doc: Option<String>,
    objects: HashMap<i64, Value>,
    by_id: HashMap<String, i64>,
    next_handle: i64,
}

/// What the listener decided before upgrading.
pub(crate) struct SocketParams {
    /// Through the proxy or direct.
    pub kind: SocketKind,
    /// The proxy session (proxy sockets with a session only).
    pub session_id: Option<String>,
    /// The user, or `None` for a `mustAuthenticate` proxy socket.
    pub user: Option<User>,
    /// The engine session and whether it already existed.
    pub engine: Option<(Arc<Mutex<EngineSession>>, bool)>,
    /// `loginUri` for the `mustAuthenticate` notification (proxy sockets).
    pub login_uri: String,
    /// Direct sockets: the direct engine session's key and TTL, released on close.
    pub direct: Option<EnginePath>,
}

/// The parsed tail of `app/{appId}[/identity/{x}][/ttl/{sec}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnginePath {
    /// App (lowercase, `enginedata` when empty) and identity: `app|identity`.
    pub key: String,
    /// The `/ttl/{sec}` segment (zero when absent).
    pub ttl: Duration,
}

/// Parses what follows `app/`, or `None` if malformed.
pub(crate) fn engine_path(after_app: &str) -> Option<EnginePath> {
    let mut segments = after_app.split('/');
    let app = segments.next().unwrap_or("");
    let app = if app.is_empty() { "engineData" } else { app };
    let mut identity = "";
    let mut ttl = Duration::ZERO;
    let rest: Vec<&str> = segments.filter(|s| !s.is_empty()).collect();
    for pair in rest.chunks(2) {
        match pair {
            ["identity", x] => identity = x,
            ["ttl", n] => ttl = Duration::from_secs(n.parse::<u32>().ok()?.into()),
            _ => return None,
        }
    }
    Some(EnginePath {
        key: format!("{}|{identity}", app.to_ascii_lowercase()),
        ttl,
    })
}

fn notification(method: &str, params: Value) -> Message {
    text(json!({"jsonrpc": "2.0", "method": method, "params": params}))
}

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

async fn close(ws: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.to_string().into(),
    };
    if ws.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    // Wait for the peer's close frame so the closing handshake completes.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = ws.recv().await {}
    })
    .await;
}

/// Serves one upgraded engine websocket until it closes.
pub(crate) async fn run(mut ws: WebSocket, shared: Arc<Shared>, params: SocketParams) {
    let (socket_id, mut commands, alive) = shared.register_socket(
        params.kind,
        params.session_id.as_deref(),
        params.user.as_ref(),
    );
    if alive {
        serve(&mut ws, &shared, &params, &mut commands).await;
    } else {
        close(&mut ws, 1000, "Session ended").await;
    }
    shared.unregister_socket(socket_id);
    if let Some(path) = &params.direct {
        shared.release_direct_engine(&path.key, path.ttl);
    }
}

fn greeting(shared: &Shared, params: &SocketParams) -> Vec<Message> {
    let connected = |attached: bool| {
        notification(
            "OnConnected",
            json!({"qSessionState": if attached { "SESSION_ATTACHED" } else { "SESSION_CREATED" }}),
        )
    };
    match (params.kind, &params.user, &params.engine) {
        // The engine itself says only OnConnected; OnAuthenticationInformation is the proxy's.
        (SocketKind::Direct, _, Some((_, attached))) => vec![connected(*attached)],
        (SocketKind::Proxy, Some(user), Some((_, attached))) => vec![
            notification(
                "OnAuthenticationInformation",
                json!({
                    "userId": user.user_id,
                    "userDirectory": user.user_directory,
                    "logoutUri": format!("{}/qps/user", shared.proxy_base()),
                    "mustAuthenticate": false
                }),
            ),
            connected(*attached),
        ],
        _ => vec![notification(
            "OnAuthenticationInformation",
            json!({"loginUri": params.login_uri, "mustAuthenticate": true}),
        )],
    }
}

/// What a websocket command asks of the serving loop.
enum Next {
    Continue,
    Stop,
}

async fn obey(ws: &mut WebSocket, cmd: Option<SocketCmd>) -> Next {
    match cmd {
        Some(SocketCmd::Fatal {
            method,
            message,
            close: then_close,
        }) => {
            let mut params = json!({"severity": "fatal", "timestamp": now_rfc3339()});
            if let Some(m) = message {
                params["message"] = json!(m);
            }
            if ws.send(notification(method, params)).await.is_err() {
                return Next::Stop;
            }
            if !then_close {
                return Next::Continue;
            }
            close(ws, 1000, message.unwrap_or("")).await;
        }
        Some(SocketCmd::Shutdown) | None => close(ws, 1001, "Server shutting down").await,
        // Dropping the socket drops the connection, without a close frame.
        Some(SocketCmd::Abort) => {}
    }
    Next::Stop
}

async fn serve(
    ws: &mut WebSocket,
    shared: &Arc<Shared>,
    params: &SocketParams,
    commands: &mut tokio::sync::mpsc::UnboundedReceiver<SocketCmd>,
) {
    let authenticated = params.user.is_some();
    let closes_unauthenticated = !authenticated && shared.opts.close_after_must_authenticate;
    let mut greeted = false;
    if params.kind == SocketKind::Direct
        || shared.opts.auth_info_timing == AuthInfoTiming::Immediate
    {
        for m in greeting(shared, params) {
            if ws.send(m).await.is_err() {
                return;
            }
        }
        greeted = true;
        if closes_unauthenticated {
            close(ws, 1000, "Authentication required").await;
            return;
        }
    }
    let mut rpc = Rpc {
        shared: shared.clone(),
        user: params.user.clone(),
        engine: params.engine.as_ref().map(|(e, _)| e.clone()),
    };
    loop {
        tokio::select! {
            cmd = commands.recv() => {
                if let Next::Stop = obey(ws, cmd).await {
                    return;
                }
            }
            msg = ws.recv() => {
                let Some(Ok(msg)) = msg else { return };
                if let Some(id) = &params.session_id {
                    shared.touch(id);
                }
                if !greeted {
                    greeted = true;
                    for m in greeting(shared, params) {
                        if ws.send(m).await.is_err() {
                            return;
                        }
                    }
                    if closes_unauthenticated {
                        close(ws, 1000, "Authentication required").await;
                        return;
                    }
                }
                let reply = match msg {
                    Message::Text(t) => rpc.handle_frame(t.as_str()).map(text),
                    Message::Binary(b) if authenticated => Some(Message::Binary(b)),
                    // Pings are answered by tungstenite; a close frame is echoed by it too,
                    // and the next recv() ends the loop.
                    _ => None,
                };
                if let Some(reply) = reply {
                    if ws.send(reply).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// A JSON-RPC error.
struct RpcError {
    code: i64,
    parameter: String,
    message: &'static str,
}

impl RpcError {
    fn new(code: i64, parameter: impl Into<String>, message: &'static str) -> Self {
        RpcError {
            code,
            parameter: parameter.into(),
            message,
        }
    }

    fn invalid_handle() -> Self {
        RpcError::new(-32602, "Invalid handle", "Invalid Params")
    }

    fn method_not_found(method: &str) -> Self {
        RpcError::new(-32601, method, "Method not found")
    }
}

/// A successful result plus the handles it changed or closed.
struct Outcome {
    result: Value,
    change: Vec<i64>,
    close: Vec<i64>,
}

impl From<Value> for Outcome {
    fn from(result: Value) -> Self {
        Outcome {
            result,
            change: Vec::new(),
            close: Vec::new(),
        }
    }
}

type RpcResult = Result<Outcome, RpcError>;

/// A positional (`[..]`) or named (`{..}`) parameter.
fn param<'a>(params: &'a Value, index: usize, name: &str) -> Option<&'a Value> {
    match params {
        Value::Array(list) => list.get(index),
        Value::Object(map) => map.get(name),
        _ => None,
    }
}

struct Rpc {
    shared: Arc<Shared>,
    user: Option<User>,
    engine: Option<Arc<Mutex<EngineSession>>>,
}

impl Rpc {
    /// Handles one text frame; returns the reply, if one is due.
    fn handle_frame(&mut self, frame: &str) -> Option<Value> {
        let req: Value = match serde_json::from_str(frame) {
            Ok(v) => v,
            Err(_) => {
                return Some(json!({"jsonrpc": "2.0", "id": null,
                    "error": {"code": -32700, "parameter": "", "message": "Parse error"}}))
            }
        };
        let id = req.get("id").cloned();
        let outcome = match req.get("method").and_then(Value::as_str) {
            None => Err(RpcError::new(-32600, "method", "Invalid Request")),
            Some(method) => {
                let handle = req.get("handle").and_then(Value::as_i64);
                let params = req.get("params").cloned().unwrap_or(Value::Null);
                self.call(method, handle, &params)
            }
        };
        let id = id?;
        let mut reply = json!({"jsonrpc": "2.0", "id": id});
        match outcome {
            Ok(o) => {
                reply["result"] = o.result;
                if !o.change.is_empty() {
                    reply["change"] = json!(o.change);
                }
                if !o.close.is_empty() {
                    reply["close"] = json!(o.close);
                }
            }
            Err(e) => {
                reply["error"] =
                    json!({"code": e.code, "parameter": e.parameter, "message": e.message});
            }
        }
        Some(reply)
    }

    fn call(&mut self, method: &str, handle: Option<i64>, params: &Value) -> RpcResult {
        let (Some(user), Some(engine)) = (&self.user, &self.engine) else {
            return Err(RpcError::new(5, "", "Access denied"));
        };
        let mut engine = engine.lock().unwrap_or_else(|p| p.into_inner());
        match handle {
            Some(-1) => global(user, &mut engine, method, params),
            Some(DOC_HANDLE) if engine.doc.is_some() => doc(&mut engine, method, params),
            Some(h) if engine.objects.contains_key(&h) => {
                object(&self.shared, &engine, h, method, params)
            }
            _ => Err(RpcError::invalid_handle()),
        }
    }
}

fn doc_ref(app: &App) -> Value {
    json!({"qType": "Doc", "qHandle": DOC_HANDLE, "qGenericId": app.id})
}

fn global(user: &User, engine: &mut EngineSession, method: &str, params: &Value) -> RpcResult {
    Ok(match method {
        "EngineVersion" => json!({"qVersion": {"qComponentVersion": ENGINE_VERSION}}).into(),
        "ProductVersion" => json!({"qReturn": ENGINE_VERSION}).into(),
        "IsDesktopMode" => json!({"qReturn": false}).into(),
        "GetDocList" => {
            let list: Vec<Value> = apps::all().iter().map(App::doc_entry).collect();
            json!({"qDocList": list}).into()
        }
        "GetAuthenticatedUser" => json!({
            "qReturn": format!("UserDirectory={}; UserId={}", user.user_directory, user.user_id)
        })
        .into(),
        "OpenDoc" => {
            let name = param(params, 0, "qDocName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if engine.doc.is_some() {
                return Err(RpcError::new(1002, name, "App already open"));
            }
            let Some(app) = apps::find(name) else {
                return Err(RpcError::new(1003, name, "App not found"));
            };
            engine.doc = Some(app.id.to_string());
            Outcome {
                result: json!({"qReturn": doc_ref(&app)}),
                change: vec![DOC_HANDLE],
                close: Vec::new(),
            }
        }
        "GetActiveDoc" => match engine.doc.as_deref().and_then(apps::find) {
            Some(app) => json!({"qReturn": doc_ref(&app)}).into(),
            None => return Err(RpcError::new(1017, "", "App not open")),
        },
        "SimEcho" => json!({"qReturn": params}).into(),
        _ => return Err(RpcError::method_not_found(method)),
    })
}

fn object_ref(handle: i64, props: &Value) -> Value {
    json!({
        "qType": "GenericObject",
        "qHandle": handle,
        "qGenericType": props.pointer("/qInfo/qType").cloned().unwrap_or(Value::Null),
        "qGenericId": props.pointer("/qInfo/qId").cloned().unwrap_or(Value::Null),
    })
}

impl EngineSession {
    fn add_object(&mut self, id: String, props: Value) -> i64 {
        if let Some(&h) = self.by_id.get(&id) {
            self.objects.insert(h, props);
            return h;
        }
        self.next_handle = self.next_handle.max(DOC_HANDLE) + 1;
        let h = self.next_handle;
        self.objects.insert(h, props);
        self.by_id.insert(id, h);
        h
    }

    fn app(&self) -> Option<App> {
        self.doc.as_deref().and_then(apps::find)
    }
}

fn doc(engine: &mut EngineSession, method: &str, params: &Value) -> RpcResult {
    let Some(app) = engine.app() else {
        return Err(RpcError::invalid_handle());
    };
    Ok(match method {
        "GetAppLayout" => json!({"qLayout": app.layout()}).into(),
        "GetObject" => {
            let id = param(params, 0, "qId")
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some(props) = app.object(id) else {
                return Err(RpcError::new(2, id, "Object not found"));
            };
            let h = engine.add_object(id.to_string(), props.clone());
            json!({"qReturn": object_ref(h, &props)}).into()
        }
        "CreateSessionObject" => {
            let Some(mut props) = param(params, 0, "qProp").filter(|p| p.is_object()).cloned()
            else {
                return Err(RpcError::new(-32602, "qProp", "Invalid Params"));
            };
            let id = match props.pointer("/qInfo/qId").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => id.to_string(),
                _ => uuid::Uuid::new_v4().simple().to_string(),
            };
            props["qInfo"]["qId"] = json!(id);
            let h = engine.add_object(id, props.clone());
            json!({"qReturn": object_ref(h, &props)}).into()
        }
        "DestroySessionObject" => {
            let id = param(params, 0, "qId")
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some(h) = engine.by_id.remove(id) else {
                return Ok(json!({"qSuccess": false}).into());
            };
            engine.objects.remove(&h);
            Outcome {
                result: json!({"qSuccess": true}),
                change: Vec::new(),
                close: vec![h],
            }
        }
        _ => return Err(RpcError::method_not_found(method)),
    })
}

fn object(
    shared: &Shared,
    engine: &EngineSession,
    handle: i64,
    method: &str,
    params: &Value,
) -> RpcResult {
    let (Some(app), Some(props)) = (engine.app(), engine.objects.get(&handle)) else {
        return Err(RpcError::invalid_handle());
    };
    let tick = if apps::is_live(props) {
        shared.live_tick.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        shared.live_tick.load(Ordering::Relaxed)
    };
    Ok(match method {
        "GetLayout" => json!({"qLayout": apps::object_layout(&app, props, tick)}).into(),
        "GetProperties" => json!({"qProp": props}).into(),
        "GetInfo" => json!({"qInfo": props.get("qInfo").cloned().unwrap_or(Value::Null)}).into(),
        "GetHyperCubeData" => {
            let Some(def) = props.get("qHyperCubeDef") else {
                return Err(RpcError::new(2, "qHyperCubeDef", "Not found"));
            };
            let cube = Cube::evaluate(&app, def, tick);
            let pages: Vec<Value> = Area::list(param(params, 1, "qPages"))
                .into_iter()
                .map(|a| cube.page(a))
                .collect();
            json!({"qDataPages": pages}).into()
        }
        _ => return Err(RpcError::method_not_found(method)),
    })
}
