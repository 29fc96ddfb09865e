//! The GenericObject methods on an object itself: its layout, its properties (set whole or
//! patched) and selection mode (`BeginSelections` … `EndSelections`). The methods on its
//! hypercubes' and list objects' data are in `object_data`.

use super::object_data;
use super::rpc::{invalid_param, opt_bool, param, selection_outcome, Outcome, RpcError, RpcResult};
use crate::apps::App;
use crate::engine_session::{EngineSession, Modal};
use crate::hypercube::is_live;
use crate::layouts::object_layout;
use crate::state::Shared;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// Calls GenericObject method `method` on object `handle`.
pub(super) fn object(
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
    let tick = if is_live(props) {
        shared.live_tick.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        shared.live_tick.load(Ordering::Relaxed)
    };
    Ok(match method {
        "GetLayout" => layout(engine, &app, handle, props, tick),
        // No master items or extensions here: the effective properties are the properties.
        "GetProperties" | "GetEffectiveProperties" => json!({"qProp": props}).into(),
        "GetFullPropertyTree" => json!({
            "qPropEntry": {"qProperty": props, "qChildren": [], "qEmbeddedSnapshotRef": null}
        })
        .into(),
        "SetProperties" | "SetFullPropertyTree" => {
            let new = new_properties(method, params)?;
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
        "BeginSelections" => begin_selections(engine, &app, handle),
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
        _ => return object_data::call(engine, &app, handle, props, tick, method, params),
    })
}

/// `GetLayout`, with `qSelectionInfo` telling whether the object is in selection mode.
fn layout(engine: &EngineSession, app: &App, handle: i64, props: &Value, tick: u64) -> Outcome {
    let sel = &engine.selections;
    let rows = engine.modal_rows(handle);
    let mut layout = object_layout(app, props, tick, sel, rows);
    if let Some(m) = engine.modal.as_ref().filter(|m| m.handle == handle) {
        layout["qSelectionInfo"] =
            json!({"qInSelections": true, "qMadeSelections": m.before != *sel});
    }
    json!({"qLayout": layout}).into()
}

/// The properties `SetProperties` (`qProp`) or `SetFullPropertyTree`
/// (`qPropEntry.qProperty`) was given.
fn new_properties<'a>(method: &str, params: &'a Value) -> Result<&'a Value, RpcError> {
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
    new.filter(|p| p.is_object())
        .ok_or_else(|| invalid_param(named.trim_start_matches('/')))
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

/// `BeginSelections`: another object in selection mode gives it up, its selections kept (as
/// Qlik).
fn begin_selections(engine: &mut EngineSession, app: &App, handle: i64) -> Outcome {
    let mut out = end_selections(engine, app, true);
    engine.modal = Some(Modal {
        handle,
        before: engine.selections.clone(),
    });
    out.change.push(handle);
    out.result = json!({});
    out
}

/// Ends selection mode, if an object is in it: keeps the selections made in it, or with
/// `accept` false goes back to those before `BeginSelections`.
pub(super) fn end_selections(engine: &mut EngineSession, app: &App, accept: bool) -> Outcome {
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
