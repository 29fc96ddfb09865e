//! The engine websocket, behind the proxy or direct: proxy notifications
//! (`OnAuthenticationInformation`, fatal session messages; proxy sockets only), `OnConnected`,
//! and a small QIX JSON-RPC 2.0 engine (§4): Global, Doc (objects, `GetField`, `ClearAll`),
//! Field (`Select`, `SelectValues`, `ToggleSelect`, `Clear`, `Lock`, …) and GenericObject
//! (layouts of hypercubes, list objects and current selections; `SelectHyperCubeValues`,
//! `SelectListObjectValues`, `ClearSelections`). Selections belong to the engine session: a
//! change is listed in the caller's `change` array and pushed to the session's other sockets.

use crate::apps::{self, App, Area, Cube};
use crate::options::AuthInfoTiming;
use crate::selections::{self, ListObject, Refused, Selections, State};
use crate::state::{Shared, SocketCmd, SocketKind, User};
use crate::util::now_rfc3339;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// Engine version reported by `EngineVersion` and `ProductVersion`.
const ENGINE_VERSION: &str = "12.2027.0";
/// The doc handle (there is at most one open doc per engine session).
const DOC_HANDLE: i64 = 1;
/// JSON-RPC's "Method not found".
const METHOD_NOT_FOUND: i64 = -32601;
/// How long to wait for the peer's close frame after sending ours.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Per (proxy session, app, identity) engine state; survives reconnects (`SESSION_ATTACHED`)
/// and is shared by every socket attached to it, selections included.
#[derive(Debug)]
pub(crate) struct EngineSession {
    doc: Option<String>,
    objects: HashMap<i64, Value>,
    by_id: HashMap<String, i64>,
    /// Field handles (`Doc.GetField`) → column, and back.
    fields: HashMap<i64, usize>,
    field_handles: HashMap<usize, i64>,
    /// The selections in the open doc (default state).
    selections: Selections,
    next_handle: i64,
    /// The object in selection mode (`BeginSelections` … `EndSelections`), if any.
    modal: Option<Modal>,
    /// Handles a socket's call changed, for the session's other sockets (pushed to them as
    /// `{"jsonrpc":"2.0","change":[..]}`, as Qlik does).
    pushes: broadcast::Sender<Push>,
}

/// An object in selection mode and the selections to go back to if they are not accepted.
#[derive(Debug)]
struct Modal {
    handle: i64,
    before: Selections,
}

/// Handles changed by a call on socket `origin`.
#[derive(Debug, Clone)]
pub(crate) struct Push {
    origin: u64,
    change: Vec<i64>,
}

impl Default for EngineSession {
    fn default() -> Self {
        EngineSession {
            doc: None,
            objects: HashMap::new(),
            by_id: HashMap::new(),
            fields: HashMap::new(),
            field_handles: HashMap::new(),
            selections: Selections::default(),
            next_handle: DOC_HANDLE,
            modal: None,
            pushes: broadcast::channel(64).0,
        }
    }
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
        serve(&mut ws, &shared, &params, socket_id, &mut commands).await;
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

/// The next change another socket of this engine session made (never, without a session).
async fn next_push(pushes: &mut Option<broadcast::Receiver<Push>>, me: u64) -> Vec<i64> {
    let Some(rx) = pushes else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(p) if p.origin != me => return p.change,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

async fn serve(
    ws: &mut WebSocket,
    shared: &Arc<Shared>,
    params: &SocketParams,
    socket_id: u64,
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
        socket_id,
    };
    let mut pushes = match (&params.user, &params.engine) {
        (Some(_), Some((e, _))) => Some(lock(e).pushes.subscribe()),
        _ => None,
    };
    loop {
        tokio::select! {
            cmd = commands.recv() => {
                if let Next::Stop = obey(ws, cmd).await {
                    return;
                }
            }
            change = next_push(&mut pushes, socket_id) => {
                if ws.send(text(json!({"jsonrpc": "2.0", "change": change}))).await.is_err() {
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
        RpcError::new(METHOD_NOT_FOUND, method, "Method not found")
    }
}

/// A successful result plus the handles it changed or closed.
struct Outcome {
    result: Value,
    change: Vec<i64>,
    close: Vec<i64>,
    /// The change concerns the whole engine session: tell its other sockets too.
    shared_change: bool,
}

impl From<Value> for Outcome {
    fn from(result: Value) -> Self {
        Outcome {
            result,
            change: Vec::new(),
            close: Vec::new(),
            shared_change: false,
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
    socket_id: u64,
}

fn lock(engine: &Mutex<EngineSession>) -> std::sync::MutexGuard<'_, EngineSession> {
    engine.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut engine = lock(engine);
        let outcome = match handle {
            Some(-1) => global(user, &mut engine, method, params),
            Some(DOC_HANDLE) if engine.doc.is_some() => doc(&mut engine, method, params),
            Some(h) if engine.objects.contains_key(&h) => {
                object(&self.shared, &mut engine, h, method, params)
            }
            Some(h) if engine.fields.contains_key(&h) => field(&mut engine, h, method, params),
            _ => Err(RpcError::invalid_handle()),
        };
        if let Err(e) = &outcome {
            if e.code == METHOD_NOT_FOUND {
                // What a client library needs that the simulator lacks, for whoever extends it.
                tracing::info!(method, ?handle, "engine: method not implemented");
            }
        }
        if let Ok(o) = &outcome {
            if o.shared_change && !o.change.is_empty() {
                // No receiver (no other socket) is not an error.
                let _ = engine.pushes.send(Push {
                    origin: self.socket_id,
                    change: o.change.clone(),
                });
            }
        }
        outcome
    }
}

/// The open app's id and its selected values by field name (`None` without an open app).
pub(crate) fn selected_values(
    engine: &Mutex<EngineSession>,
) -> Option<(String, std::collections::BTreeMap<String, Vec<String>>)> {
    let engine = lock(engine);
    let app = engine.app()?;
    let fields = app
        .fields
        .iter()
        .enumerate()
        .filter_map(|(col, name)| {
            let set = engine.selections.of(col)?;
            let texts = set.iter().map(|s| app.symbols[col][*s].text.clone());
            Some((name.to_string(), texts.collect()))
        })
        .collect();
    Some((app.id.to_string(), fields))
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
                change: vec![DOC_HANDLE],
                ..json!({"qReturn": doc_ref(&app)}).into()
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
    fn new_handle(&mut self) -> i64 {
        self.next_handle = self.next_handle.max(DOC_HANDLE) + 1;
        self.next_handle
    }

    fn add_object(&mut self, id: String, props: Value) -> i64 {
        if let Some(&h) = self.by_id.get(&id) {
            self.objects.insert(h, props);
            return h;
        }
        let h = self.new_handle();
        self.objects.insert(h, props);
        self.by_id.insert(id, h);
        h
    }

    /// The handle of field `col` (one per field and session, like an object's).
    fn field_handle(&mut self, col: usize) -> i64 {
        if let Some(&h) = self.field_handles.get(&col) {
            return h;
        }
        let h = self.new_handle();
        self.fields.insert(h, col);
        self.field_handles.insert(col, h);
        h
    }

    /// The selections whose rows object `handle` shows: those before `BeginSelections`
    /// while it is in selection mode.
    fn modal_rows(&self, handle: i64) -> Option<&Selections> {
        self.modal
            .as_ref()
            .filter(|m| m.handle == handle)
            .map(|m| &m.before)
    }

    fn app(&self) -> Option<App> {
        self.doc.as_deref().and_then(apps::find)
    }

    /// Runs `change` on a copy of the selections and keeps the result unless it was refused.
    /// Returns whether it was accepted and the handles whose layout changed: the doc, then
    /// every open generic object whose layout (data, states, current selections) differs —
    /// nothing when the selections stayed the same.
    fn reselect(
        &mut self,
        app: &App,
        change: impl FnOnce(&mut Selections) -> Result<(), Refused>,
    ) -> (bool, Vec<i64>) {
        let mut next = self.selections.clone();
        if change(&mut next).is_err() {
            return (false, Vec::new());
        }
        if next == self.selections {
            return (true, Vec::new());
        }
        let mut handles: Vec<i64> = self.objects.keys().copied().collect();
        handles.sort_unstable();
        // The live measure's tick is held still: only the selections may make a difference.
        let changed = handles.into_iter().filter(|h| {
            let props = &self.objects[h];
            let rows = self.modal_rows(*h);
            apps::object_layout(app, props, 0, &self.selections, rows)
                != apps::object_layout(app, props, 0, &next, rows)
        });
        let change = std::iter::once(DOC_HANDLE).chain(changed).collect();
        self.selections = next;
        (true, change)
    }
}

/// The outcome of a selection call: `{key: accepted}` (or `{}` without a key) plus the
/// changed handles, for this socket and the session's others.
fn selection_outcome(key: Option<&str>, (accepted, change): (bool, Vec<i64>)) -> Outcome {
    let mut result = json!({});
    if let Some(k) = key {
        result[k] = json!(accepted);
    }
    Outcome {
        change,
        shared_change: true,
        ..result.into()
    }
}

fn invalid_param(name: &str) -> RpcError {
    RpcError::new(-32602, name, "Invalid Params")
}

/// An optional boolean parameter (absent or null: false).
fn opt_bool(params: &Value, index: usize, name: &str) -> Result<bool, RpcError> {
    match param(params, index, name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid_param(name)),
    }
}

/// A mandatory string parameter.
fn req_str<'a>(params: &'a Value, index: usize, name: &str) -> Result<&'a str, RpcError> {
    param(params, index, name)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_param(name))
}

/// A mandatory array of element numbers (`qValues`).
fn req_elements(params: &Value, index: usize, name: &str) -> Result<Vec<i64>, RpcError> {
    param(params, index, name)
        .and_then(Value::as_array)
        .and_then(|l| l.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
        .ok_or_else(|| invalid_param(name))
}

/// The element numbers of `values` that exist in `col` (others are ignored, as by Qlik).
fn existing_elements(app: &App, col: usize, values: &[i64]) -> BTreeSet<usize> {
    values
        .iter()
        .filter_map(|v| usize::try_from(*v).ok())
        .filter(|v| *v < app.symbols[col].len())
        .collect()
}

/// The simulator has only the default state: `qStateName` must be empty or `$`.
fn default_state(params: &Value, index: usize) -> Result<(), RpcError> {
    match param(params, index, "qStateName") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s.is_empty() || s == "$" => Ok(()),
        Some(Value::String(s)) => Err(RpcError::new(2, s.as_str(), "State not found")),
        Some(_) => Err(invalid_param("qStateName")),
    }
}

fn doc(engine: &mut EngineSession, method: &str, params: &Value) -> RpcResult {
    let Some(app) = engine.app() else {
        return Err(RpcError::invalid_handle());
    };
    Ok(match method {
        "GetAppLayout" => json!({"qLayout": app.layout()}).into(),
        "GetAppProperties" => json!({"qProp": app.properties()}).into(),
        "GetLocaleInfo" => json!({"qReturn": apps::locale_info()}).into(),
        "AbortModal" => {
            let accept = opt_bool(params, 0, "qAccept")?;
            end_selections(engine, &app, accept)
        }
        "GetObject" => {
            let id = param(params, 0, "qId")
                .and_then(Value::as_str)
                .unwrap_or("");
            // A session object made on this engine session, else a sample object of the app.
            if let Some((&h, props)) = engine
                .by_id
                .get(id)
                .and_then(|h| engine.objects.get_key_value(h))
            {
                return Ok(json!({"qReturn": object_ref(h, props)}).into());
            }
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
                close: vec![h],
                ..json!({"qSuccess": true}).into()
            }
        }
        "GetField" => {
            let name = req_str(params, 0, "qFieldName")?;
            default_state(params, 1)?;
            let Some(col) = app.column(name) else {
                return Err(RpcError::new(2, name, "Field not found"));
            };
            let h = engine.field_handle(col);
            json!({"qReturn": {"qType": "Field", "qHandle": h}}).into()
        }
        "ClearAll" => {
            let locked_also = opt_bool(params, 0, "qLockedAlso")?;
            default_state(params, 1)?;
            let done = engine.reselect(&app, |s| {
                s.clear_all(locked_also);
                Ok(())
            });
            selection_outcome(None, done)
        }
        "LockAll" | "UnlockAll" => {
            default_state(params, 0)?;
            let lock = method == "LockAll";
            let done = engine.reselect(&app, |s| {
                if lock {
                    s.lock_all();
                } else {
                    s.unlock_all();
                }
                Ok(())
            });
            selection_outcome(None, done)
        }
        _ => return Err(RpcError::method_not_found(method)),
    })
}

/// The definition at `qPath` (parameter `index`) of an object's properties, which must end
/// in `kind` (`qHyperCubeDef`, `qListObjectDef`); a missing path means `/{kind}`.
fn def_at<'a>(
    props: &'a Value,
    params: &Value,
    index: usize,
    kind: &str,
) -> Result<&'a Value, RpcError> {
    let path = match param(params, index, "qPath") {
        None | Some(Value::Null) => format!("/{kind}"),
        Some(Value::String(p)) => p.clone(),
        Some(_) => return Err(invalid_param("qPath")),
    };
    match props.pointer(&path) {
        Some(def) if def.is_object() && path.ends_with(kind) => Ok(def),
        _ => Err(RpcError::new(2, path, "Not found")),
    }
}

fn object(
    shared: &Shared,
    engine: &mut EngineSession,
    handle: i64,
    method: &str,
    params: &Value,
) -> RpcResult {
    let (Some(app), Some(props)) = (engine.app(), engine.objects.get(&handle).cloned()) else {
        return Err(RpcError::invalid_handle());
    };
    let props = &props;
    let tick = if apps::is_live(props) {
        shared.live_tick.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        shared.live_tick.load(Ordering::Relaxed)
    };
    let sel = &engine.selections;
    Ok(match method {
        "GetLayout" => {
            let rows = engine.modal_rows(handle);
            let mut layout = apps::object_layout(&app, props, tick, sel, rows);
            if let Some(m) = engine.modal.as_ref().filter(|m| m.handle == handle) {
                layout["qSelectionInfo"] =
                    json!({"qInSelections": true, "qMadeSelections": m.before != *sel});
            }
            json!({"qLayout": layout}).into()
        }
        // No master items or extensions here: the effective properties are the properties.
        "GetProperties" | "GetEffectiveProperties" => json!({"qProp": props}).into(),
        "GetFullPropertyTree" => json!({
            "qPropEntry": {"qProperty": props, "qChildren": [], "qEmbeddedSnapshotRef": null}
        })
        .into(),
        "SetProperties" | "SetFullPropertyTree" => {
            let pointer = if method == "SetProperties" {
                "/0"
            } else {
                "/0/qProperty"
            };
            let named = if method == "SetProperties" {
                "/qProp"
            } else {
                "/qPropEntry/qProperty"
            };
            let new = match params {
                Value::Array(_) => params.pointer(pointer),
                _ => params.pointer(named),
            };
            let Some(new) = new.filter(|p| p.is_object()) else {
                return Err(invalid_param(named.trim_start_matches('/')));
            };
            set_properties(engine, handle, props, new.clone())
        }
        "ApplyPatches" => {
            let patches = param(params, 0, "qPatches")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid_param("qPatches"))?;
            let mut new = props.clone();
            for p in patches {
                apply_patch(&mut new, p)?;
            }
            set_properties(engine, handle, props, new)
        }
        "GetLinkedObjects" => json!({"qItems": []}).into(),
        "GetChildInfos" => json!({"qInfos": []}).into(),
        "BeginSelections" => {
            // Another object in selection mode gives it up, its selections kept (as Qlik).
            let mut out = end_selections(engine, &app, true);
            engine.modal = Some(Modal {
                handle,
                before: engine.selections.clone(),
            });
            out.change.push(handle);
            out.result = json!({});
            out
        }
        "EndSelections" => {
            let accept = opt_bool(params, 0, "qAccept")?;
            end_selections(engine, &app, accept)
        }
        "ResetMadeSelections" => {
            let Some(before) = engine.modal.as_ref().map(|m| m.before.clone()) else {
                return Ok(json!({}).into());
            };
            let done = engine.reselect(&app, |s| {
                *s = before;
                Ok(())
            });
            selection_outcome(None, done)
        }
        "GetInfo" => json!({"qInfo": props.get("qInfo").cloned().unwrap_or(Value::Null)}).into(),
        "GetHyperCubeData" => {
            let def = def_at(props, params, 0, "qHyperCubeDef")?;
            let rows = engine.modal_rows(handle).unwrap_or(sel);
            let cube = Cube::evaluate(&app, def, tick, sel, rows);
            let pages: Vec<Value> = Area::list(param(params, 1, "qPages"))
                .into_iter()
                .map(|a| cube.page(a))
                .collect();
            json!({"qDataPages": pages}).into()
        }
        "GetListObjectData" => {
            let def = def_at(props, params, 0, "qListObjectDef")?;
            let list = ListObject::evaluate(&app, def, sel);
            let pages: Vec<Value> = Area::list(param(params, 1, "qPages"))
                .into_iter()
                .map(|a| list.page(&app, a))
                .collect();
            json!({"qDataPages": pages}).into()
        }
        "SelectHyperCubeValues" => {
            let def = def_at(props, params, 0, "qHyperCubeDef")?;
            let dims = apps::dimension_fields(def);
            let dim = param(params, 1, "qDimNo")
                .and_then(Value::as_u64)
                .and_then(|d| usize::try_from(d).ok())
                .filter(|d| *d < dims.len())
                .ok_or_else(|| invalid_param("qDimNo"))?;
            let values = req_elements(params, 2, "qValues")?;
            let toggle = opt_bool(params, 3, "qToggleMode")?;
            let Some(col) = app.column(&dims[dim]) else {
                return Ok(selection_outcome(Some("qSuccess"), (false, Vec::new())));
            };
            let values = existing_elements(&app, col, &values);
            let done = engine.reselect(&app, |s| s.select(col, &values, toggle, false));
            selection_outcome(Some("qSuccess"), done)
        }
        "SelectListObjectValues" => {
            let def = def_at(props, params, 0, "qListObjectDef")?;
            let values = req_elements(params, 1, "qValues")?;
            let toggle = opt_bool(params, 2, "qToggleMode")?;
            let soft_lock = opt_bool(params, 3, "qSoftLock")?;
            let field = def
                .pointer("/qDef/qFieldDefs/0")
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some(col) = app.column(field.trim_start_matches('=')) else {
                return Ok(selection_outcome(Some("qSuccess"), (false, Vec::new())));
            };
            let values = existing_elements(&app, col, &values);
            let done = engine.reselect(&app, |s| s.select(col, &values, toggle, soft_lock));
            selection_outcome(Some("qSuccess"), done)
        }
        "ClearSelections" => {
            let path = param(params, 0, "qPath")
                .and_then(Value::as_str)
                .unwrap_or("");
            let kind = if path.ends_with("qListObjectDef") {
                "qListObjectDef"
            } else {
                "qHyperCubeDef"
            };
            let def = def_at(props, params, 0, kind)?;
            let fields: Vec<String> = if kind == "qListObjectDef" {
                def.pointer("/qDef/qFieldDefs/0")
                    .and_then(Value::as_str)
                    .map(|f| vec![f.trim_start_matches('=').to_string()])
                    .unwrap_or_default()
            } else {
                let dims = apps::dimension_fields(def);
                match param(params, 1, "qColIndices").and_then(Value::as_array) {
                    Some(cols) => cols
                        .iter()
                        .filter_map(Value::as_u64)
                        .filter_map(|c| dims.get(c as usize).cloned())
                        .collect(),
                    None => dims,
                }
            };
            let cols: Vec<usize> = fields.iter().filter_map(|f| app.column(f)).collect();
            let done = engine.reselect(&app, |s| {
                for col in cols {
                    // Locked fields keep their selection.
                    let _ = s.clear(col, false);
                }
                Ok(())
            });
            selection_outcome(None, done)
        }
        _ => return Err(RpcError::method_not_found(method)),
    })
}

/// Replaces an object's properties (its id stays); the object changed if they differ.
fn set_properties(engine: &mut EngineSession, handle: i64, old: &Value, mut new: Value) -> Outcome {
    new["qInfo"]["qId"] = old.pointer("/qInfo/qId").cloned().unwrap_or(Value::Null);
    let change = if new == *old { vec![] } else { vec![handle] };
    engine.objects.insert(handle, new);
    Outcome {
        change,
        shared_change: true,
        ..json!({}).into()
    }
}

/// Applies one `NxPatch` (`qOp` add / replace / remove, `qPath` a JSON pointer, `qValue` the
/// new value as JSON text) to `props`.
fn apply_patch(props: &mut Value, patch: &Value) -> Result<(), RpcError> {
    let op = patch.get("qOp").and_then(Value::as_str).unwrap_or("");
    let path = patch.get("qPath").and_then(Value::as_str).unwrap_or("");
    let value = || -> Result<Value, RpcError> {
        let text = patch.get("qValue").and_then(Value::as_str).unwrap_or("");
        serde_json::from_str(text).map_err(|_| invalid_param("qValue"))
    };
    let (parent, key) = match path.rsplit_once('/') {
        Some((parent, key)) if !key.is_empty() => {
            (parent, key.replace("~1", "/").replace("~0", "~"))
        }
        _ => return Err(invalid_param("qPath")),
    };
    let Some(parent) = props.pointer_mut(parent) else {
        return Err(RpcError::new(2, path, "Not found"));
    };
    match (op.to_ascii_lowercase().as_str(), parent) {
        ("add" | "replace", Value::Object(map)) => {
            map.insert(key, value()?);
        }
        ("remove", Value::Object(map)) => {
            map.remove(&key);
        }
        ("add", Value::Array(list)) if key == "-" => list.push(value()?),
        (op, Value::Array(list)) => {
            let i = key.parse::<usize>().map_err(|_| invalid_param("qPath"))?;
            match op {
                "add" if i <= list.len() => list.insert(i, value()?),
                "replace" if i < list.len() => list[i] = value()?,
                "remove" if i < list.len() => {
                    list.remove(i);
                }
                _ => return Err(invalid_param("qPath")),
            }
        }
        _ => return Err(invalid_param("qOp")),
    }
    Ok(())
}

/// Ends selection mode, if an object is in it: keeps the selections made in it, or with
/// `accept` false goes back to those before `BeginSelections`.
fn end_selections(engine: &mut EngineSession, app: &App, accept: bool) -> Outcome {
    let Some(modal) = engine.modal.take() else {
        return json!({}).into();
    };
    let (_, mut change) = if accept {
        (true, Vec::new())
    } else {
        engine.reselect(app, |s| {
            *s = modal.before;
            Ok(())
        })
    };
    if !change.contains(&modal.handle) {
        change.push(modal.handle);
    }
    Outcome {
        change,
        shared_change: true,
        ..json!({}).into()
    }
}

fn field(engine: &mut EngineSession, handle: i64, method: &str, params: &Value) -> RpcResult {
    let (Some(app), Some(&col)) = (engine.app(), engine.fields.get(&handle)) else {
        return Err(RpcError::invalid_handle());
    };
    let select = |engine: &mut EngineSession, values: BTreeSet<usize>, toggle, soft_lock| {
        let done = engine.reselect(&app, |s| {
            if values.is_empty() {
                return Err(Refused::NoMatch);
            }
            s.select(col, &values, toggle, soft_lock)
        });
        selection_outcome(Some("qReturn"), done)
    };
    // Values in the given states (`SelectPossible`, `SelectExcluded`, …).
    let in_states = |engine: &EngineSession, want: &[State]| -> BTreeSet<usize> {
        engine
            .selections
            .states(&app, col)
            .iter()
            .enumerate()
            .filter(|(_, s)| want.contains(s))
            .map(|(i, _)| i)
            .collect()
    };
    Ok(match method {
        "GetCardinal" => json!({"qReturn": app.symbols[col].len()}).into(),
        "GetAndMode" => json!({"qReturn": false}).into(),
        "Select" | "ToggleSelect" => {
            let pattern = req_str(params, 0, "qMatch")?;
            let soft_lock = opt_bool(params, 1, "qSoftLock")?;
            match param(params, 2, "qExcludedValuesMode") {
                None | Some(Value::Null) => {}
                Some(v) if v.is_i64() => {}
                Some(_) => return Err(invalid_param("qExcludedValuesMode")),
            }
            let values = selections::search(&app, col, pattern);
            select(engine, values, method == "ToggleSelect", soft_lock)
        }
        "SelectValues" => {
            let values = param(params, 0, "qFieldValues")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid_param("qFieldValues"))?;
            let toggle = opt_bool(params, 1, "qToggleMode")?;
            let soft_lock = opt_bool(params, 2, "qSoftLock")?;
            let values = selections::matching_values(&app, col, values);
            select(engine, values, toggle, soft_lock)
        }
        "LowLevelSelect" => {
            let values = req_elements(params, 0, "qValues")?;
            let toggle = opt_bool(params, 1, "qToggleMode")?;
            let soft_lock = opt_bool(params, 2, "qSoftLock")?;
            let values = existing_elements(&app, col, &values);
            select(engine, values, toggle, soft_lock)
        }
        "SelectAll" | "SelectPossible" | "SelectExcluded" | "SelectAlternative" => {
            let soft_lock = opt_bool(params, 0, "qSoftLock")?;
            let values = match method {
                "SelectAll" => (0..app.symbols[col].len()).collect(),
                "SelectPossible" => {
                    in_states(engine, &[State::Optional, State::Selected, State::Locked])
                }
                "SelectExcluded" => in_states(engine, &[State::Alternative, State::Excluded]),
                _ => in_states(engine, &[State::Alternative]),
            };
            select(engine, values, false, soft_lock)
        }
        "Clear" => {
            let done = engine.reselect(&app, |s| s.clear(col, false));
            selection_outcome(Some("qReturn"), done)
        }
        "ClearAllButThis" => {
            let soft_lock = opt_bool(params, 0, "qSoftLock")?;
            let done = engine.reselect(&app, |s| {
                s.clear_all_but(col, soft_lock);
                Ok(())
            });
            selection_outcome(Some("qReturn"), done)
        }
        "Lock" | "Unlock" => {
            let lock = method == "Lock";
            let done = engine.reselect(&app, |s| {
                if lock {
                    s.lock(col);
                } else {
                    s.unlock(col);
                }
                Ok(())
            });
            selection_outcome(Some("qReturn"), done)
        }
        _ => return Err(RpcError::method_not_found(method)),
    })
}
