//! The GenericObject methods on the data of an object's hypercubes and list objects: their
//! data pages, and the selections made by clicking their values or clearing them.

use super::rpc::{
    existing_elements, invalid_param, opt_bool, param, req_elements, selection_outcome, Outcome,
    RpcError, RpcResult,
};
use crate::apps::App;
use crate::engine_session::EngineSession;
use crate::hypercube::{dimension_fields, Cube};
use crate::pages::Area;
use crate::selections::ListObject;
use serde_json::{json, Value};

/// Calls GenericObject method `method` on the data of object `handle`, whose properties are
/// `props`; `tick` drives its live measure.
pub(super) fn call(
    engine: &mut EngineSession,
    app: &App,
    handle: i64,
    props: &Value,
    tick: u64,
    method: &str,
    params: &Value,
) -> RpcResult {
    let sel = &engine.selections;
    Ok(match method {
        "GetHyperCubeData" => {
            let def = def_at(props, params, 0, "qHyperCubeDef")?;
            let rows = engine.modal_rows(handle).unwrap_or(sel);
            let cube = Cube::evaluate(app, def, tick, sel, rows);
            let pages: Vec<Value> = Area::list(param(params, 1, "qPages"))
                .into_iter()
                .map(|a| cube.page(a))
                .collect();
            json!({"qDataPages": pages}).into()
        }
        "GetListObjectData" => {
            let def = def_at(props, params, 0, "qListObjectDef")?;
            let list = ListObject::evaluate(app, def, sel);
            let pages: Vec<Value> = Area::list(param(params, 1, "qPages"))
                .into_iter()
                .map(|a| list.page(app, a))
                .collect();
            json!({"qDataPages": pages}).into()
        }
        "SelectHyperCubeValues" => return select_hypercube_values(engine, app, props, params),
        "SelectListObjectValues" => return select_list_object_values(engine, app, props, params),
        "ClearSelections" => return clear_selections(engine, app, props, params),
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

/// `SelectHyperCubeValues`: values of one dimension, by element number.
fn select_hypercube_values(
    engine: &mut EngineSession,
    app: &App,
    props: &Value,
    params: &Value,
) -> RpcResult {
    let def = def_at(props, params, 0, "qHyperCubeDef")?;
    let dims = dimension_fields(def);
    let dim = param(params, 1, "qDimNo")
        .and_then(Value::as_u64)
        .and_then(|d| usize::try_from(d).ok())
        .filter(|d| *d < dims.len())
        .ok_or_else(|| invalid_param("qDimNo"))?;
    let values = req_elements(params, 2, "qValues")?;
    let toggle = opt_bool(params, 3, "qToggleMode")?;
    let col = app.column(&dims[dim]);
    Ok(select_elements(engine, app, col, &values, toggle, false))
}

/// `SelectListObjectValues`: values of the list object's field, by element number.
fn select_list_object_values(
    engine: &mut EngineSession,
    app: &App,
    props: &Value,
    params: &Value,
) -> RpcResult {
    let def = def_at(props, params, 0, "qListObjectDef")?;
    let values = req_elements(params, 1, "qValues")?;
    let toggle = opt_bool(params, 2, "qToggleMode")?;
    let soft_lock = opt_bool(params, 3, "qSoftLock")?;
    let field = def
        .pointer("/qDef/qFieldDefs/0")
        .and_then(Value::as_str)
        .unwrap_or("");
    let col = app.column(field.trim_start_matches('='));
    Ok(select_elements(
        engine, app, col, &values, toggle, soft_lock,
    ))
}

/// Selects the element numbers `values` in `col` (those it has): `{"qSuccess": accepted}`;
/// an unknown field (`None`) selects nothing.
fn select_elements(
    engine: &mut EngineSession,
    app: &App,
    col: Option<usize>,
    values: &[i64],
    toggle: bool,
    soft_lock: bool,
) -> Outcome {
    let Some(col) = col else {
        return selection_outcome(Some("qSuccess"), (false, Vec::new()));
    };
    let values = existing_elements(app, col, values);
    let done = engine.reselect(app, |s| s.select(col, &values, toggle, soft_lock));
    selection_outcome(Some("qSuccess"), done)
}

/// `ClearSelections`: the fields of a list object, or of a hypercube's dimensions (those of
/// `qColIndices`, else all).
fn clear_selections(
    engine: &mut EngineSession,
    app: &App,
    props: &Value,
    params: &Value,
) -> RpcResult {
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
        let dims = dimension_fields(def);
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
    let done = engine.reselect(app, |s| {
        for col in cols {
            // Locked fields keep their selection.
            let _ = s.clear(col, false);
        }
        Ok(())
    });
    Ok(selection_outcome(None, done))
}
