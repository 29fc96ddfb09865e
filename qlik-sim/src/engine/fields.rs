//! The Field object's methods (a handle from `Doc.GetField`): its cardinal, selecting values
//! (by search string, value, element number or state), clearing and locking it.

use super::rpc::{
    existing_elements, invalid_param, opt_bool, param, req_elements, req_str, selection_outcome,
    RpcError, RpcResult,
};
use crate::apps::App;
use crate::engine_session::EngineSession;
use crate::selections::{self, Refused, State};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Calls Field method `method` on field handle `handle`.
pub(super) fn field(
    engine: &mut EngineSession,
    handle: i64,
    method: &str,
    params: &Value,
) -> RpcResult {
    let (Some(app), Some(&col)) = (engine.app(), engine.fields.get(&handle)) else {
        return Err(RpcError::invalid_handle());
    };
    Ok(match method {
        "GetCardinal" => json!({"qReturn": app.symbols[col].len()}).into(),
        "GetAndMode" => json!({"qReturn": false}).into(),
        "Select" | "ToggleSelect" | "SelectValues" | "LowLevelSelect" | "SelectAll"
        | "SelectPossible" | "SelectExcluded" | "SelectAlternative" => {
            return select(engine, &app, col, method, params)
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

/// The `Select…` methods: the values the method picks are selected in `col` (refused when
/// there are none).
fn select(
    engine: &mut EngineSession,
    app: &App,
    col: usize,
    method: &str,
    params: &Value,
) -> RpcResult {
    let (values, toggle, soft_lock) = match method {
        "Select" | "ToggleSelect" => {
            let pattern = req_str(params, 0, "qMatch")?;
            let soft_lock = opt_bool(params, 1, "qSoftLock")?;
            match param(params, 2, "qExcludedValuesMode") {
                None | Some(Value::Null) => {}
                Some(v) if v.is_i64() => {}
                Some(_) => return Err(invalid_param("qExcludedValuesMode")),
            }
            let values = selections::search(app, col, pattern);
            (values, method == "ToggleSelect", soft_lock)
        }
        "SelectValues" => {
            let values = param(params, 0, "qFieldValues")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid_param("qFieldValues"))?;
            let toggle = opt_bool(params, 1, "qToggleMode")?;
            let soft_lock = opt_bool(params, 2, "qSoftLock")?;
            let values = selections::matching_values(app, col, values);
            (values, toggle, soft_lock)
        }
        "LowLevelSelect" => {
            let values = req_elements(params, 0, "qValues")?;
            let toggle = opt_bool(params, 1, "qToggleMode")?;
            let soft_lock = opt_bool(params, 2, "qSoftLock")?;
            (existing_elements(app, col, &values), toggle, soft_lock)
        }
        _ => {
            let soft_lock = opt_bool(params, 0, "qSoftLock")?;
            let values = match method {
                "SelectAll" => (0..app.symbols[col].len()).collect(),
                "SelectPossible" => in_states(
                    engine,
                    app,
                    col,
                    &[State::Optional, State::Selected, State::Locked],
                ),
                "SelectExcluded" => {
                    in_states(engine, app, col, &[State::Alternative, State::Excluded])
                }
                _ => in_states(engine, app, col, &[State::Alternative]),
            };
            (values, false, soft_lock)
        }
    };
    let done = engine.reselect(app, |s| {
        if values.is_empty() {
            return Err(Refused::NoMatch);
        }
        s.select(col, &values, toggle, soft_lock)
    });
    Ok(selection_outcome(Some("qReturn"), done))
}

/// The values of `col` in the given states (`SelectPossible`, `SelectExcluded`, …).
fn in_states(engine: &EngineSession, app: &App, col: usize, want: &[State]) -> BTreeSet<usize> {
    engine
        .selections
        .states(app, col)
        .iter()
        .enumerate()
        .filter(|(_, s)| want.contains(s))
        .map(|(i, _)| i)
        .collect()
}
