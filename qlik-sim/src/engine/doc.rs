//! The Doc object's methods (the open app, `DOC_HANDLE`): app layout and properties, generic
//! objects (sample and session objects), field handles and the doc-wide selection calls.

use super::objects::end_selections;
use super::rpc::{
    default_state, opt_bool, param, req_str, selection_outcome, Outcome, RpcError, RpcResult,
};
use crate::apps::{self, App};
use crate::engine_session::EngineSession;
use serde_json::{json, Value};

/// The `qReturn` of a call that hands out a generic object.
fn object_ref(handle: i64, props: &Value) -> Value {
    json!({
        "qType": "GenericObject",
        "qHandle": handle,
        "qGenericType": props.pointer("/qInfo/qType").cloned().unwrap_or(Value::Null),
        "qGenericId": props.pointer("/qInfo/qId").cloned().unwrap_or(Value::Null),
    })
}

/// Calls Doc method `method`.
pub(super) fn doc(engine: &mut EngineSession, method: &str, params: &Value) -> RpcResult {
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
        "GetObject" => return get_object(engine, &app, params),
        "CreateSessionObject" => return create_session_object(engine, params),
        "DestroySessionObject" => destroy_session_object(engine, params),
        "GetField" => return get_field(engine, &app, params),
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

/// `GetObject`: a session object made on this engine session, else a sample object of the app.
fn get_object(engine: &mut EngineSession, app: &App, params: &Value) -> RpcResult {
    let id = param(params, 0, "qId")
        .and_then(Value::as_str)
        .unwrap_or("");
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
    Ok(json!({"qReturn": object_ref(h, &props)}).into())
}

/// `CreateSessionObject`: the object gets the id it asks for, else a new one.
fn create_session_object(engine: &mut EngineSession, params: &Value) -> RpcResult {
    let Some(mut props) = param(params, 0, "qProp").filter(|p| p.is_object()).cloned() else {
        return Err(RpcError::new(-32602, "qProp", "Invalid Params"));
    };
    let id = match props.pointer("/qInfo/qId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => uuid::Uuid::new_v4().simple().to_string(),
    };
    props["qInfo"]["qId"] = json!(id);
    let h = engine.add_object(id, props.clone());
    Ok(json!({"qReturn": object_ref(h, &props)}).into())
}

/// `DestroySessionObject`: its handle is closed.
fn destroy_session_object(engine: &mut EngineSession, params: &Value) -> Outcome {
    let id = param(params, 0, "qId")
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(h) = engine.by_id.remove(id) else {
        return json!({"qSuccess": false}).into();
    };
    engine.objects.remove(&h);
    Outcome {
        close: vec![h],
        ..json!({"qSuccess": true}).into()
    }
}

/// `GetField` (default state only).
fn get_field(engine: &mut EngineSession, app: &App, params: &Value) -> RpcResult {
    let name = req_str(params, 0, "qFieldName")?;
    default_state(params, 1)?;
    let Some(col) = app.column(name) else {
        return Err(RpcError::new(2, name, "Field not found"));
    };
    let h = engine.field_handle(col);
    Ok(json!({"qReturn": {"qType": "Field", "qHandle": h}}).into())
}
