//! `soak`: simulated users against the gateway for a fixed time, while Qlik (qlik-sim with
//! `--expire-random-every-ms`) drops their Qlik sessions at random.
//!
//!   bench-loadgen soak BASE APP USERS SECS
//!
//! Each user (`X-Remote-User: soak<i>`, the gateway's `trusted_header` provider) loops: log in,
//! one to three page views (in half of them a proxied HTTP request to Qlik, then an engine
//! websocket: open the app, get a field and a chart, 5–15 selections, each followed by the
//! chart's layout), log out. Requests are sent in pairs without waiting (a selection and its
//! layout) and matched to replies by id.
//!
//! What is counted (one JSON line at the end; a progress line on stderr every 5 s):
//! - `must_authenticate`: `OnAuthenticationInformation` with `mustAuthenticate: true` seen by a
//!   client. The gateway re-creates lost Qlik sessions itself, so this must stay 0.
//! - `lost`: requests without a reply: no reply within 10 s on an open socket, or the socket ended
//!   any way other than the gateway's "Qlik session renewed; reconnect" (a session-ending
//!   notification, then close 4002). Must stay 0.
//! - `interrupted`: requests in flight when such a renewal closed the socket (the session they
//!   belonged to is gone, as in Qlik itself); the user reconnects, reopens the app and carries on
//!   (the interrupted selection is made again). `reconnects` counts those reconnections.
//! - `errors`: anything else a user would notice (a login, request, upgrade or logout that
//!   failed, an engine error reply, an unexpected close or reply); `first_errors` has examples.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::{arg, login_once, num, open, Client, Ws};

/// The gateway's close code after it renewed a Qlik session that Qlik ended under the socket.
const CLOSE_QLIK_SESSION_RENEWED: u16 = 4002;
/// Qlik's proxy notifications that end the Qlik session (the gateway renews it, then closes 4002).
const SESSION_ENDING: [&str; 3] = ["OnSessionTimedOut", "OnSessionClosed", "OnSessionLoggedOut"];
/// A reply slower than this on an open socket counts as lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnections one engine session may need before the user gives up on it (an error).
const MAX_RECONNECTS: u32 = 20;
/// How many error messages and mustAuthenticate frames are kept for the report.
const EXAMPLES: usize = 10;

/// The counters, printed as they are named here.
#[derive(Default, serde::Serialize)]
struct Counts {
    logins: AtomicU64,
    logouts: AtomicU64,
    http_requests: AtomicU64,
    websockets: AtomicU64,
    reconnects: AtomicU64,
    selections: AtomicU64,
    requests_sent: AtomicU64,
    replies: AtomicU64,
    interrupted: AtomicU64,
    lost: AtomicU64,
    must_authenticate: AtomicU64,
    session_notices: AtomicU64,
    errors: AtomicU64,
}

struct Ctx {
    base: String,
    ws_url: String,
    app: String,
    client: Client,
    stop: AtomicBool,
    n: Counts,
    examples: Mutex<(Vec<String>, Vec<String>)>,
}

impl Ctx {
    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn error(&self, why: String) {
        self.n.errors.fetch_add(1, Ordering::Relaxed);
        let mut ex = self.examples.lock().unwrap();
        if ex.0.len() < EXAMPLES {
            ex.0.push(why);
        }
    }

    fn must_authenticate(&self, user: usize, frame: &str) {
        self.n.must_authenticate.fetch_add(1, Ordering::Relaxed);
        let mut ex = self.examples.lock().unwrap();
        if ex.1.len() < EXAMPLES {
            ex.1.push(format!("soak{user}: {frame}"));
        }
    }
}

/// xorshift64*: think times and choices need no cryptographic randomness (and no extra crate).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

pub async fn run(args: &[String]) {
    let base = arg(args, 2).trim_end_matches('/').to_string();
    let app = arg(args, 3).to_string();
    let users: usize = num(args, 4);
    let secs: f64 = num(args, 5);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(4)
        .build_http();
    let ctx = Arc::new(Ctx {
        ws_url: format!("{}/mashup/app/{app}", base.replacen("http", "ws", 1)),
        base,
        app,
        client,
        stop: AtomicBool::new(false),
        n: Counts::default(),
        examples: Mutex::new((Vec::new(), Vec::new())),
    });
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..users {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            // Staggered over the first two seconds, so logins do not all land at once.
            tokio::time::sleep(Duration::from_millis(
                (i as u64 * 2000) / users.max(1) as u64,
            ))
            .await;
            user(i, &ctx).await;
        }));
    }
    let progress = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let n = &ctx.n;
                eprintln!(
                    "soak {:>4.0}s: logins {} selections {} reconnects {} mustAuthenticate {} lost {} errors {}",
                    t0.elapsed().as_secs_f64(),
                    n.logins.load(Ordering::Relaxed),
                    n.selections.load(Ordering::Relaxed),
                    n.reconnects.load(Ordering::Relaxed),
                    n.must_authenticate.load(Ordering::Relaxed),
                    n.lost.load(Ordering::Relaxed),
                    n.errors.load(Ordering::Relaxed)
                );
            }
        })
    };
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    ctx.stop.store(true, Ordering::Relaxed);
    // Users finish what they are doing (close the socket, log out); a user still busy after
    // this is stuck, which is an error.
    let mut stuck = 0;
    for t in tasks {
        if tokio::time::timeout(REPLY_TIMEOUT * 3, t).await.is_err() {
            stuck += 1;
        }
    }
    progress.abort();
    if stuck > 0 {
        ctx.error(format!(
            "{stuck} users did not finish within 30 s of the end"
        ));
    }
    let ex = ctx.examples.lock().unwrap();
    let mut report = serde_json::to_value(&ctx.n).unwrap();
    report["users"] = json!(users);
    report["secs"] = json!(t0.elapsed().as_secs_f64().round());
    report["first_errors"] = json!(ex.0);
    report["must_authenticate_frames"] = json!(ex.1);
    println!("{report}");
}

async fn user(i: usize, ctx: &Ctx) {
    let mut rng = Rng::new(i as u64 + 1);
    while !ctx.done() {
        let cookie = match login(ctx, i).await {
            Ok(c) => c,
            Err(e) => {
                ctx.error(format!("soak{i}: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        ctx.n.logins.fetch_add(1, Ordering::Relaxed);
        // Page views: a proxied request (the page's resources), then an engine session. The
        // pauses between them leave Qlik sessions idle, so random expiry hits them there too:
        // the next request or upgrade then finds the Qlik session gone.
        for _ in 0..1 + rng.below(3) {
            if ctx.done() {
                break;
            }
            // Half the views skip it (a single-page app moving on), so the upgrade is the first
            // to find an expired Qlik session.
            if rng.below(2) == 0 {
                match get(ctx, &format!("{}/mashup/sim/echo", ctx.base), &cookie).await {
                    Ok(200) => {
                        ctx.n.http_requests.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(s) => ctx.error(format!("soak{i}: proxied GET answered {s}")),
                    Err(e) => ctx.error(format!("soak{i}: proxied GET: {e}")),
                }
            }
            engine_session(i, ctx, &cookie, &mut rng).await;
            tokio::time::sleep(rng.millis(200, 1000)).await;
        }
        if let Err(e) = logout(ctx, &cookie).await {
            ctx.error(format!("soak{i}: {e}"));
        } else {
            ctx.n.logouts.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(rng.millis(100, 500)).await;
    }
}

async fn login(ctx: &Ctx, i: usize) -> Result<String, String> {
    login_once(&ctx.client, &ctx.base, Some(&format!("soak{i}"))).await
}

async fn get(ctx: &Ctx, url: &str, cookie: &str) -> Result<u16, String> {
    let req = http::Request::get(url)
        .header("cookie", cookie)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = ctx.client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}

async fn logout(ctx: &Ctx, cookie: &str) -> Result<(), String> {
    let req = http::Request::post(format!("{}/_gateway/logout", ctx.base))
        .header("cookie", cookie)
        .header("origin", &ctx.base)
        .header("accept", "application/json")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = ctx
        .client
        .request(req)
        .await
        .map_err(|e| format!("logout: {e}"))?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    if !status.is_success() {
        return Err(format!("logout answered {status}"));
    }
    Ok(())
}

/// How a socket ended.
enum End {
    /// The user's work on it is done (its selections made, or the soak is over).
    Finished,
    /// The gateway renewed the Qlik session and asked for a reconnect (4002).
    Renewed,
    /// Anything else: already counted as an error.
    Failed,
}

/// One engine session of a user: `target` selections, reconnecting when the gateway says the Qlik
/// session was renewed.
async fn engine_session(i: usize, ctx: &Ctx, cookie: &str, rng: &mut Rng) {
    let target = 5 + rng.below(11);
    let mut made = 0;
    for attempt in 0..=MAX_RECONNECTS {
        if attempt > 0 {
            ctx.n.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        match socket(i, ctx, cookie, rng, target, &mut made).await {
            End::Renewed => continue,
            End::Finished | End::Failed => return,
        }
    }
    ctx.error(format!(
        "soak{i}: {MAX_RECONNECTS} reconnects in one engine session"
    ));
}

struct Conn<'a> {
    user: usize,
    ctx: &'a Ctx,
    ws: Ws,
    next_id: u64,
    /// Requests sent and not yet answered: id → method.
    pending: HashMap<u64, &'static str>,
    /// Replies received and not yet taken: id → the reply.
    replies: HashMap<u64, Value>,
    /// A session-ending notification arrived: a 4002 close may follow.
    session_ended: bool,
}

impl Conn<'_> {
    async fn send(&mut self, method: &'static str, handle: i64, params: Value) -> Result<u64, End> {
        let id = self.next_id;
        self.next_id += 1;
        let text = json!({"jsonrpc": "2.0", "id": id, "method": method, "handle": handle, "params": params})
            .to_string();
        if let Err(e) = self.ws.send(Message::text(text)).await {
            return Err(self.failed(format!("sending {method}: {e}")));
        }
        self.ctx.n.requests_sent.fetch_add(1, Ordering::Relaxed);
        self.pending.insert(id, method);
        Ok(id)
    }

    /// The in-flight requests become lost (or interrupted, for a renewal) and `why` an error.
    fn failed(&mut self, why: String) -> End {
        self.ctx
            .n
            .lost
            .fetch_add(self.pending.len() as u64, Ordering::Relaxed);
        self.pending.clear();
        self.ctx.error(format!("soak{}: {why}", self.user));
        End::Failed
    }

    /// Reads frames until `id` is answered; returns its `result`.
    async fn reply(&mut self, id: u64) -> Result<Value, End> {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            if let Some(v) = self.replies.remove(&id) {
                if let Some(err) = v.get("error") {
                    let method = v.get("method").and_then(Value::as_str).unwrap_or("?");
                    self.ctx
                        .error(format!("soak{}: engine error {err} ({method})", self.user));
                    return Err(End::Failed);
                }
                return Ok(v.get("result").cloned().unwrap_or(Value::Null));
            }
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => {
                    let method = self.pending.get(&id).copied().unwrap_or("?");
                    return Err(
                        self.failed(format!("no reply to {method} within {REPLY_TIMEOUT:?}"))
                    );
                }
                Ok(frame) => self.frame(frame)?,
            }
        }
    }

    /// Reads frames for `d` (think time: notifications may arrive meanwhile).
    async fn idle(&mut self, d: Duration) -> Result<(), End> {
        let until = tokio::time::Instant::now() + d;
        while let Ok(frame) = tokio::time::timeout_at(until, self.ws.next()).await {
            self.frame(frame)?;
        }
        Ok(())
    }

    fn frame(
        &mut self,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), End> {
        match frame {
            Some(Ok(Message::Text(t))) => self.text(t.as_str()),
            Some(Ok(Message::Close(c))) => {
                let code = c.as_ref().map(|c| u16::from(c.code));
                if code == Some(CLOSE_QLIK_SESSION_RENEWED) && self.session_ended {
                    self.ctx
                        .n
                        .interrupted
                        .fetch_add(self.pending.len() as u64, Ordering::Relaxed);
                    self.pending.clear();
                    Err(End::Renewed)
                } else {
                    Err(self.failed(format!(
                        "socket closed by the server with {code:?} ({}), after a session notice: {}",
                        c.map(|c| c.reason.to_string()).unwrap_or_default(),
                        self.session_ended
                    )))
                }
            }
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(self.failed(format!("socket: {e}"))),
            None => Err(self.failed("socket ended without a close frame".into())),
        }
    }

    fn text(&mut self, t: &str) -> Result<(), End> {
        let v: Value = match serde_json::from_str(t) {
            Ok(v) => v,
            Err(e) => return Err(self.failed(format!("frame is not JSON ({e}): {t:.200}"))),
        };
        if let Some(id) = v.get("id").and_then(Value::as_u64) {
            let Some(method) = self.pending.remove(&id) else {
                return Err(self.failed(format!("reply to no pending request: {t:.200}")));
            };
            self.ctx.n.replies.fetch_add(1, Ordering::Relaxed);
            let mut v = v;
            v["method"] = json!(method);
            self.replies.insert(id, v);
            return Ok(());
        }
        match v.get("method").and_then(Value::as_str) {
            Some("OnAuthenticationInformation") => {
                if v.pointer("/params/mustAuthenticate") == Some(&Value::Bool(true)) {
                    self.ctx.must_authenticate(self.user, t);
                }
            }
            Some(m) if SESSION_ENDING.contains(&m) => {
                self.ctx.n.session_notices.fetch_add(1, Ordering::Relaxed);
                self.session_ended = true;
            }
            Some("OnConnected") | None => {}
            Some(other) => {
                if v.pointer("/params/severity").and_then(Value::as_str) == Some("fatal") {
                    return Err(self.failed(format!("fatal notification {other}: {t:.200}")));
                }
            }
        }
        Ok(())
    }

    /// Closes the socket (normal close) and reads until the server's close.
    async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let drained = tokio::time::timeout(REPLY_TIMEOUT, async {
            while let Some(Ok(m)) = self.ws.next().await {
                if let Message::Text(t) = m {
                    // A notification can still arrive; a mustAuthenticate here counts too.
                    let _ = self.text(t.as_str());
                }
            }
        })
        .await;
        if drained.is_err() {
            self.ctx.error(format!(
                "soak{}: the server never completed the close",
                self.user
            ));
        }
    }
}

async fn socket(
    i: usize,
    ctx: &Ctx,
    cookie: &str,
    rng: &mut Rng,
    target: u64,
    made: &mut u64,
) -> End {
    // A fresh engine session per socket (Qlik keeps one per Qlik session, app and identity: a
    // second socket of the same login would find the app already open).
    let n = ctx.n.websockets.load(Ordering::Relaxed);
    let url = format!("{}/identity/soak{i}-{n}", ctx.ws_url);
    let ws = match open(&url, &ctx.base, cookie).await {
        Ok(ws) => ws,
        Err(e) => {
            ctx.error(format!("soak{i}: upgrade: {e}"));
            return End::Failed;
        }
    };
    ctx.n.websockets.fetch_add(1, Ordering::Relaxed);
    let mut c = Conn {
        user: i,
        ctx,
        ws,
        next_id: 1,
        pending: HashMap::new(),
        replies: HashMap::new(),
        session_ended: false,
    };
    match work(&mut c, rng, target, made).await {
        Ok(()) => {
            c.close().await;
            End::Finished
        }
        Err(End::Renewed) => {
            // Completes the close handshake the gateway started.
            let _ = tokio::time::timeout(REPLY_TIMEOUT, async {
                while let Some(Ok(_)) = c.ws.next().await {}
            })
            .await;
            End::Renewed
        }
        Err(end) => end,
    }
}

/// Opens the app (sent at once, before Qlik's greeting: the gateway replays it when it has to
/// re-create the Qlik session), then makes selections until `made` reaches `target`.
async fn work(c: &mut Conn<'_>, rng: &mut Rng, target: u64, made: &mut u64) -> Result<(), End> {
    let open = c.send("OpenDoc", -1, json!([c.ctx.app])).await?;
    let doc = c.reply(open).await?;
    let doc = handle(c, &doc)?;
    let field = c.send("GetField", doc, json!(["Region"])).await?;
    let chart = c.send("GetObject", doc, json!(["sales-by-region"])).await?;
    let field = c.reply(field).await?;
    let field = handle(c, &field)?;
    let chart = c.reply(chart).await?;
    let chart = handle(c, &chart)?;
    while *made < target && !c.ctx.done() {
        c.idle(rng.millis(50, 250)).await?;
        let pick = rng.below(4);
        let sel = c
            .send("LowLevelSelect", field, json!([[pick], false, false]))
            .await?;
        let layout = c.send("GetLayout", chart, json!([])).await?;
        let r = c.reply(sel).await?;
        if !r.get("qReturn").is_some_and(Value::is_boolean) {
            return Err(c.failed(format!("LowLevelSelect answered {r}")));
        }
        c.reply(layout).await?;
        *made += 1;
        c.ctx.n.selections.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn handle(c: &mut Conn<'_>, result: &Value) -> Result<i64, End> {
    match result.pointer("/qReturn/qHandle").and_then(Value::as_i64) {
        Some(h) => Ok(h),
        None => Err(c.failed(format!("no handle in {result}"))),
    }
}
