//! One text frame of an engine websocket: parsed as a JSON-RPC request, dispatched by its
//! handle to the object type's methods (Global, Doc, GenericObject, Field), answered; what
//! the call changed for the whole engine session is pushed to its other sockets.

use super::doc::doc;
use super::fields::field;
use super::global::global;
use super::objects::object;
use super::rpc::{RpcError, RpcResult, METHOD_NOT_FOUND};
use crate::engine_session::{lock, EngineSession, Push, DOC_HANDLE};
use crate::state::{Shared, User};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// A socket's engine: who is calling and on which engine session (none for a
/// `mustAuthenticate` socket, whose calls are all denied).
pub(super) struct Rpc {
    pub shared: Arc<Shared>,
    pub user: Option<User>,
    pub engine: Option<Arc<Mutex<EngineSession>>>,
    pub socket_id: u64,
}

impl Rpc {
    /// Handles one text frame; returns the reply, if one is due.
    pub(super) fn handle_frame(&mut self, frame: &str) -> Option<Value> {
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
