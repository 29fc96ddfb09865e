//! The built-in page shown when no mashup is configured (and by `qlik-gateway demo`): the user from
//! `/_gateway/me` and live data from the first app over the engine websocket, with no auth code.

use axum::response::{Html, IntoResponse, Response};
use http::{header, HeaderValue};

/// The page, with the Qlik mount path filled in.
pub fn page(mount: &str) -> Response {
    let mount_js = serde_json::to_string(mount).unwrap_or_else(|_| "\"/\"".into());
    let html = PAGE.replace("__MOUNT__", &mount_js);
    let csp = crate::html::script_page_csp(&html);
    let mut r = Html(html).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    crate::html::secure(h, csp);
    r
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>qlik-gateway</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1d2433}
 header{background:#1d2433;color:#fff;padding:.8em 1.5em;display:flex;justify-content:space-between;align-items:center}
 main{max-width:60em;margin:1.5em auto;padding:0 1em}
 .card{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;padding:1em 1.5em;margin-bottom:1em}
 table{border-collapse:collapse;width:100%} td,th{padding:.35em .6em;border-bottom:1px solid #e3e6ea;text-align:left}
 td.num{text-align:right;font-variant-numeric:tabular-nums} .bar{background:#3b82f6;height:1em;border-radius:3px}
 #status{font-size:.9em;color:#555} button{background:#fff;border:1px solid #fff8;color:#fff;background:transparent;padding:.4em 1em;border-radius:4px;cursor:pointer}
 code{background:#eef;padding:0 .3em;border-radius:3px}
</style></head>
<body>
<header><strong>qlik-gateway</strong><span><span id="user">…</span> <button id="logout">Log out</button></span></header>
<main>
 <div class="card"><h2 id="title">Connecting to the engine…</h2><div id="status"></div></div>
 <div class="card"><table id="cube"><thead></thead><tbody></tbody></table></div>
 <div class="card"><p>This page has no authentication code. It opens <code id="wsurl"></code> on its own origin;
 the gateway logged you in, holds your Qlik session server-side and injects it into the engine websocket.</p></div>
</main>
<script>
const MOUNT = __MOUNT__;
const $ = (id) => document.getElementById(id);
fetch('/_gateway/me', {headers: {Accept: 'application/json'}}).then(r => r.json()).then(me => {
  $('user').textContent = me.userDirectory ? me.userDirectory + '\\' + me.userId : 'not logged in';
});
$('logout').onclick = async () => {
  const r = await fetch('/_gateway/logout', {method: 'POST', headers: {Accept: 'application/json'}});
  const out = await r.json().catch(() => ({}));
  // An IdP with its own session (OIDC) must end it too, or the next visit logs straight back in.
  location.href = out.end_session_url || '/_gateway/logged-out';
};
function connect() {
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + MOUNT + '/app/';
  $('wsurl').textContent = url;
  const ws = new WebSocket(url);
  let seq = 0; const pending = new Map();
  const call = (handle, method, params) => new Promise((resolve, reject) => {
    const id = ++seq; pending.set(id, {resolve, reject});
    ws.send(JSON.stringify({jsonrpc: '2.0', id, handle, method, params}));
  });
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.id && pending.has(msg.id)) {
      const p = pending.get(msg.id); pending.delete(msg.id);
      msg.error ? p.reject(new Error(msg.error.message)) : p.resolve(msg.result);
    } else if (msg.method) {
      $('status').textContent = msg.method + (msg.params && msg.params.qSessionState ? ' ' + msg.params.qSessionState : '');
    }
  };
  ws.onclose = (ev) => { $('status').textContent = 'engine connection closed (' + ev.code + '), reconnecting…'; setTimeout(connect, 2000); };
  ws.onopen = async () => {
    try {
      const docs = (await call(-1, 'GetDocList', [])).qDocList;
      const doc = (await call(-1, 'OpenDoc', [docs[0].qDocId])).qReturn;
      const layout = (await call(doc.qHandle, 'GetAppLayout', [])).qLayout;
      $('title').textContent = layout.qTitle;
      // The app's own chart object (Region × Sales, Live); a session object if the app has none.
      let obj;
      try { obj = (await call(doc.qHandle, 'GetObject', ['sales-by-region'])).qReturn; }
      catch (e) {
        obj = (await call(doc.qHandle, 'CreateSessionObject', [{qInfo: {qType: 'table'}, qHyperCubeDef: {
          qDimensions: [{qDef: {qFieldDefs: ['Region']}}], qMeasures: [{qDef: {qDef: 'Sum(Sales)'}}],
          qInitialDataFetch: [{qTop: 0, qLeft: 0, qWidth: 2, qHeight: 50}]}}])).qReturn;
      }
      const render = async () => {
        const cube = (await call(obj.qHandle, 'GetLayout', [])).qLayout.qHyperCube;
        const heads = [...cube.qDimensionInfo, ...cube.qMeasureInfo].map(i => '<th>' + i.qFallbackTitle + '</th>').join('');
        $('cube').tHead.innerHTML = '<tr>' + heads + '<th></th></tr>';
        const rows = cube.qDataPages[0].qMatrix;
        const max = Math.max(...rows.map(r => r[1].qNum || 0), 1);
        $('cube').tBodies[0].innerHTML = rows.map(r => '<tr>' + r.map((c, i) => '<td' + (i ? ' class="num"' : '') + '>' + c.qText + '</td>').join('') +
          '<td style="width:40%"><div class="bar" style="width:' + (100 * (r[1].qNum || 0) / max) + '%"></div></td></tr>').join('');
        $('status').textContent = 'live · updated ' + new Date().toLocaleTimeString();
      };
      await render();
      const timer = setInterval(() => render().catch(() => clearInterval(timer)), 2000);
      ws.addEventListener('close', () => clearInterval(timer));
    } catch (e) { $('status').textContent = 'engine error: ' + e.message; }
  };
}
connect();
</script>
</body></html>
"#;
