//! The building blocks of every engine method: JSON-RPC errors, results with the handles
//! they changed, and reading the (positional or named) parameters.

use crate::apps::App;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// JSON-RPC's "Method not found".
pub(super) const METHOD_NOT_FOUND: i64 = -32601;

/// A JSON-RPC error.
pub(super) struct RpcError {
    /// The error code.
    pub code: i64,
    /// What it is about (a parameter, a method, an id).
    pub parameter: String,
    /// The error's text.
    pub message: &'static str,
}

impl RpcError {
    pub(super) fn new(code: i64, parameter: impl Into<String>, message: &'static str) -> Self {
        RpcError {
            code,
            parameter: parameter.into(),
            message,
        }
    }

    pub(super) fn invalid_handle() -> Self {
        RpcError::new(-32602, "Invalid handle", "Invalid Params")
    }

    pub(super) fn method_not_found(method: &str) -> Self {
        RpcError::new(METHOD_NOT_FOUND, method, "Method not found")
    }
}

/// A successful result plus the handles it changed or closed.
pub(super) struct Outcome {
    /// The JSON-RPC `result`.
    pub result: Value,
    /// The handles whose layout changed (the reply's `change`).
    pub change: Vec<i64>,
    /// The handles that no longer exist (the reply's `close`).
    pub close: Vec<i64>,
    /// The change concerns the whole engine session: tell its other sockets too.
    pub shared_change: bool,
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

pub(super) type RpcResult = Result<Outcome, RpcError>;

/// A positional (`[..]`) or named (`{..}`) parameter.
pub(super) fn param<'a>(params: &'a Value, index: usize, name: &str) -> Option<&'a Value> {
    match params {
        Value::Array(list) => list.get(index),
        Value::Object(map) => map.get(name),
        _ => None,
    }
}

/// The outcome of a selection call: `{key: accepted}` (or `{}` without a key) plus the
/// changed handles, for this socket and the session's others.
pub(super) fn selection_outcome(
    key: Option<&str>,
    (accepted, change): (bool, Vec<i64>),
) -> Outcome {
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

/// Parameter `name` is missing or of the wrong type.
pub(super) fn invalid_param(name: &str) -> RpcError {
    RpcError::new(-32602, name, "Invalid Params")
}

/// An optional boolean parameter (absent or null: false).
pub(super) fn opt_bool(params: &Value, index: usize, name: &str) -> Result<bool, RpcError> {
    match param(params, index, name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid_param(name)),
    }
}

/// A mandatory string parameter.
pub(super) fn req_str<'a>(
    params: &'a Value,
    index: usize,
    name: &str,
) -> Result<&'a str, RpcError> {
    param(params, index, name)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_param(name))
}

/// A mandatory array of element numbers (`qValues`).
pub(super) fn req_elements(params: &Value, index: usize, name: &str) -> Result<Vec<i64>, RpcError> {
    param(params, index, name)
        .and_then(Value::as_array)
        .and_then(|l| l.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
        .ok_or_else(|| invalid_param(name))
}

/// The element numbers of `values` that exist in `col` (others are ignored, as by Qlik).
pub(super) fn existing_elements(app: &App, col: usize, values: &[i64]) -> BTreeSet<usize> {
    values
        .iter()
        .filter_map(|v| usize::try_from(*v).ok())
        .filter(|v| *v < app.symbols[col].len())
        .collect()
}

/// The simulator has only the default state: `qStateName` must be empty or `$`.
pub(super) fn default_state(params: &Value, index: usize) -> Result<(), RpcError> {
    match param(params, index, "qStateName") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s.is_empty() || s == "$" => Ok(()),
        Some(Value::String(s)) => Err(RpcError::new(2, s.as_str(), "State not found")),
        Some(_) => Err(invalid_param("qStateName")),
    }
}
