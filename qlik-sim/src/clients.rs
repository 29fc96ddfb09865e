//! What Qlik's client libraries ask the virtual proxy for besides the engine websocket:
//! `product-info.json` (platform detection), `api/v1/user-locale` (`@qlik/api`'s resume check),
//! a stand-in `qlik-embed/main.js`, `qrs/about` behind the xrfkey check, and the Single and App
//! Integration pages (`single/`, `sense/app/…`), which open the engine websocket themselves.

use crate::apps;
use crate::qps_api::{xrfkey_ok, XSRF_MESSAGE};
use crate::state::User;
use crate::util::query_param;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, StatusCode};
use serde_json::{json, Value};

/// The release `product-info.json` and `qrs/about` claim.
const RELEASE: &str = "November 2024";
const BUILD: &str = "14.212.0";

/// The stand-in for Qlik's qlik-embed runtime. It takes the place of `window.QlikMain`, which is
/// what the npm loader (`@qlik/embed-web-components`) and `@qlik/api` in a browser wait for once
/// their authentication check passed; every `<qlik-embed>` then shows which props reached it,
/// and runtime modules a page registered in `window.__qlikSimRuntimeModules` are handed out.
/// Qlik's real runtime is not part of the simulator.
const EMBED_MAIN_JS: &str = r#"/* qlik-sim stand-in for {prefix}/qlik-embed/main.js: Qlik's runtime is not available here. */
(() => {
  const loadedFrom = document.currentScript ? document.currentScript.src : "";
  window.__qlikSimEmbedMain = { loadedFrom, mounted: [] };
  window.QlikMain = {
    getRootUrl: () => loadedFrom.replace(/\/qlik-embed\/main\.js.*$/, ""),
    resourceNeedsCredentials: () => true,
    PRODUCT_INFO: { composition: { deploymentType: "QlikSenseServer" } },
    import: async (name) => {
      // Runtime modules a page brought along (examples/qlik-api/sim-runtime.js: @qlik/api's own).
      const provided = window.__qlikSimRuntimeModules && window.__qlikSimRuntimeModules[name];
      if (provided) return provided;
      if (name !== "embed-vanilla@v1") throw new Error("qlik-sim: the qlik-embed runtime module " + name + " is not available here");
      return {
        mountVanillaEmbedComponent: ({ target, props }) => {
          const note = document.createElement("p");
          note.dataset.testid = "qlik-embed-stand-in";
          note.dataset.ui = props.ui || "";
          note.dataset.appId = props.appId || "";
          note.textContent = "qlik-sim stand-in for qlik-embed (" + (props.ui || "?") + ", app " + (props.appId || "?") + "): Qlik's runtime is not available here";
          target.appendChild(note);
          window.__qlikSimEmbedMain.mounted.push({ ui: props.ui, appId: props.appId });
          return { $set() {}, $destroy() { note.remove(); } };
        },
      };
    },
  };
})();
"#;

/// The client of the Single and App Integration pages: like Qlik's, it fetches the CSRF token
/// and opens the engine websocket relative to the page, then shows each object's hypercube
/// (updated on every change; a click on a row selects it).
const INTEGRATION_JS: &str = r#"(() => {
  const cfg = JSON.parse(document.getElementById("qlik-sim-config").textContent);
  const at = location.pathname.indexOf(cfg.marker);
  const prefix = at >= 0 ? location.pathname.slice(0, at) : "";
  const pending = new Map();
  const onChange = new Map();
  let ws;
  let nextId = 1;
  const call = (handle, method, params) => new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    ws.send(JSON.stringify({ jsonrpc: "2.0", id, handle, method, params }));
  });
  async function render(handle, table) {
    const { qLayout } = await call(handle, "GetLayout", []);
    const page = qLayout.qHyperCube.qDataPages[0] || { qMatrix: [] };
    const rows = page.qMatrix.map((row) => {
      const tr = document.createElement("tr");
      tr.dataset.testid = "row";
      tr.dataset.state = row[0].qState;
      tr.addEventListener("click", () => call(handle, "SelectHyperCubeValues", ["/qHyperCubeDef", 0, [row[0].qElemNumber], true]));
      for (const cell of row) {
        const td = document.createElement("td");
        td.textContent = cell.qText;
        tr.appendChild(td);
      }
      return tr;
    });
    table.replaceChildren(...rows);
    table.dataset.layouts = String(Number(table.dataset.layouts || 0) + 1);
  }
  async function connect() {
    const t = await fetch(prefix + "/qps/csrftoken", { credentials: "same-origin" });
    const token = t.headers.get("qlik-csrf-token") || "";
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(scheme + "//" + location.host + prefix + "/app/" + encodeURIComponent(cfg.appId) + "?qlik-csrf-token=" + encodeURIComponent(token));
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      const p = m.id !== undefined && pending.get(m.id);
      if (p) {
        pending.delete(m.id);
        if (m.error) p.reject(Object.assign(new Error(m.error.message), { code: m.error.code })); else p.resolve(m.result);
      }
      for (const h of m.change || []) onChange.get(h)?.();
    };
    ws.onclose = (e) => { document.body.dataset.state = "closed"; document.body.dataset.closeCode = String(e.code); };
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error("websocket failed")); });
    // Another page of the same user and app shares the engine session, app already open (1002).
    const opened = await call(-1, "OpenDoc", [cfg.appId]).catch((e) => {
      if (e.code === 1002) return call(-1, "GetActiveDoc", []);
      throw e;
    });
    const doc = opened.qReturn.qHandle;
    document.querySelector("[data-testid=title]").textContent = (await call(doc, "GetAppLayout", [])).qLayout.qTitle;
    for (const id of cfg.objects) {
      const handle = (await call(doc, "GetObject", [id])).qReturn.qHandle;
      const table = document.createElement("table");
      table.dataset.testid = "object";
      table.dataset.objectId = id;
      document.getElementById("objects").appendChild(table);
      onChange.set(handle, () => render(handle, table));
      await render(handle, table);
    }
    document.body.dataset.state = "live";
  }
  connect().catch((e) => { document.body.dataset.state = "error"; document.body.dataset.error = String(e && e.message || e); });
})();"#;

fn json_ok(value: Value) -> Response {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/json; charset=utf-8")],
        value.to_string(),
    )
        .into_response()
}

/// An answer Qlik gives without a session where the proxy's usual one (its login redirect) does
/// not apply; `None` for the login redirect.
pub(crate) fn without_session(rest: &str, method: &Method) -> Option<Response> {
    // The locale API answers a request without a session 401 (JSON), which @qlik/api reads as
    // "unauthorized" in its resume check.
    (rest == "api/v1/user-locale" && method == Method::GET).then(|| {
        (
            StatusCode::UNAUTHORIZED,
            [(CONTENT_TYPE, "application/json; charset=utf-8")],
            json!({"errors": [{"code": "HTTP-401", "title": "Unauthorized", "status": "401"}]})
                .to_string(),
        )
            .into_response()
    })
}

/// The answer to `rest` (the path under the virtual proxy) for a request with a session, or
/// `None` when it is not one of these.
pub(crate) fn with_session(req: &Request, rest: &str, user: &User) -> Option<Response> {
    if req.method() != Method::GET {
        return None;
    }
    Some(match rest {
        "resources/autogenerated/product-info.json" => json_ok(json!({
            "composition": {
                "contentHash": "qlik-sim",
                "senseId": format!("qliksenseserver:{BUILD}"),
                "version": BUILD,
                "provider": "Qlik",
                "deploymentType": "QlikSenseServer",
                "releaseLabel": RELEASE,
                "productName": "Qlik Sense"
            },
            "externalUris": {}
        })),
        "api/v1/user-locale" => json_ok(json!({
            "locale": "en-US",
            "userId": format!("{}\\{}", user.user_directory, user.user_id)
        })),
        "qlik-embed/main.js" => (
            StatusCode::OK,
            [
                (CONTENT_TYPE, "application/javascript; charset=utf-8"),
                (CACHE_CONTROL, "no-store"),
            ],
            EMBED_MAIN_JS,
        )
            .into_response(),
        "qrs/about" => {
            if !xrfkey_ok(req) {
                tracing::info!("proxy: QRS xrfkey check failed");
                return Some(
                    (
                        StatusCode::FORBIDDEN,
                        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                        XSRF_MESSAGE,
                    )
                        .into_response(),
                );
            }
            json_ok(json!({
                "buildVersion": format!("{BUILD}.0"),
                "buildDate": "2024-11-11T00:00:00.000Z",
                "databaseProvider": "Devart.Data.PostgreSql",
                "nodeType": 1,
                "sharedPersistence": true,
                "requiresBootstrap": false,
                "singleNodeOnly": false,
                "schemaPath": "About"
            }))
        }
        "single" | "single/" => single(req),
        _ => {
            let app_path = rest.strip_prefix("sense/app/")?;
            app_integration(app_path)
        }
    })
}

/// `single/?appid=…&obj=…`: one object of an app.
fn single(req: &Request) -> Response {
    let q = req.uri().query();
    let (Some(app_id), Some(obj)) = (query_param(q, "appid"), query_param(q, "obj")) else {
        return not_found("give appid and obj");
    };
    let Some(app) = apps::find(&app_id) else {
        return not_found("App not found");
    };
    if app.object(&obj).is_none() {
        return not_found("Object not found");
    }
    integration_page(app.title, "/single/", app.id, &[obj])
}

/// `sense/app/{appid}[/sheet/{sheet}/state/analysis]`: the app's objects, as a sheet would.
fn app_integration(app_path: &str) -> Response {
    let app_id = app_path.split('/').next().unwrap_or("");
    let Some(app) = apps::find(&crate::util::decode_component(app_id)) else {
        return not_found("App not found");
    };
    let objects: Vec<String> = app
        .objects
        .iter()
        .filter_map(|o| o.pointer("/qInfo/qId").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    integration_page(app.title, "/sense/app/", app.id, &objects)
}

fn not_found(why: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        why.to_string(),
    )
        .into_response()
}

/// The page: the ids come from the sample apps, never from the request, and the configuration
/// is JSON in a non-script element so nothing in it runs.
fn integration_page(title: &str, marker: &str, app_id: &str, objects: &[String]) -> Response {
    let config = json!({"marker": marker, "appId": app_id, "objects": objects})
        .to_string()
        .replace('<', "\\u003c");
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title} - Qlik Sense</title></head>\
         <body data-state=\"connecting\"><h1 data-testid=\"title\"></h1><div id=\"objects\"></div>\
         <script type=\"application/json\" id=\"qlik-sim-config\">{config}</script>\
         <script>{INTEGRATION_JS}</script></body></html>"
    );
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}
