//! The Global object's methods (handle -1): versions, the doc list, the user, opening a doc.

use super::rpc::{param, Outcome, RpcError, RpcResult};
use crate::apps::{self, App};
use crate::engine_session::{EngineSession, DOC_HANDLE};
use crate::state::User;
use serde_json::{json, Value};

/// Engine version reported by `EngineVersion` and `ProductVersion`.
const ENGINE_VERSION: &str = "12.2027.0";

/// The `qReturn` of `OpenDoc` and `GetActiveDoc`.
fn doc_ref(app: &App) -> Value {
    json!({"qType": "Doc", "qHandle": DOC_HANDLE, "qGenericId": app.id})
}

/// Calls Global method `method`.
pub(super) fn global(
    user: &User,
    engine: &mut EngineSession,
    method: &str,
    params: &Value,
) -> RpcResult {
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
