//! The state of one engine session: the open doc, its objects and field handles, the
//! selections (with the object in selection mode) and the channel that tells the session's
//! other sockets what a call changed. Kept by the simulator's shared state; served by the
//! engine websocket.

use crate::apps::{self, App};
use crate::layouts::object_layout;
use crate::selections::{Refused, Selections};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::broadcast;

/// The doc handle (there is at most one open doc per engine session).
pub(crate) const DOC_HANDLE: i64 = 1;

/// Per (proxy session, app, identity) engine state; survives reconnects (`SESSION_ATTACHED`)
/// and is shared by every socket attached to it, selections included.
#[derive(Debug)]
pub(crate) struct EngineSession {
    /// The open doc's app id.
    pub doc: Option<String>,
    /// Generic object handles → their properties.
    pub objects: HashMap<i64, Value>,
    /// Generic object ids (`qInfo.qId`) → their handles.
    pub by_id: HashMap<String, i64>,
    /// Field handles (`Doc.GetField`) → column, and back.
    pub fields: HashMap<i64, usize>,
    field_handles: HashMap<usize, i64>,
    /// The selections in the open doc (default state).
    pub selections: Selections,
    next_handle: i64,
    /// The object in selection mode (`BeginSelections` … `EndSelections`), if any.
    pub modal: Option<Modal>,
    /// Handles a socket's call changed, for the session's other sockets (pushed to them as
    /// `{"jsonrpc":"2.0","change":[..]}`, as Qlik does).
    pub pushes: broadcast::Sender<Push>,
}

/// An object in selection mode and the selections to go back to if they are not accepted.
#[derive(Debug)]
pub(crate) struct Modal {
    /// The object in selection mode.
    pub handle: i64,
    /// The selections when it entered it.
    pub before: Selections,
}

/// Handles changed by a call on socket `origin`.
#[derive(Debug, Clone)]
pub(crate) struct Push {
    /// The socket whose call it was (it has the change in its reply already).
    pub origin: u64,
    /// The changed handles.
    pub change: Vec<i64>,
}

impl Default for EngineSession {
    fn default() -> Self {
        EngineSession {
            doc: None,
            objects: HashMap::new(),
            by_id: HashMap::new(),
            fields: HashMap::new(),
            field_handles: HashMap::new(),
            selections: Selections::default(),
            next_handle: DOC_HANDLE,
            modal: None,
            pushes: broadcast::channel(64).0,
        }
    }
}

/// Locks an engine session; a panic while it was held leaves data good enough for a simulator.
pub(crate) fn lock(engine: &Mutex<EngineSession>) -> MutexGuard<'_, EngineSession> {
    engine.lock().unwrap_or_else(|p| p.into_inner())
}

/// The open app's id and its selected values by field name (`None` without an open app).
pub(crate) fn selected_values(
    engine: &Mutex<EngineSession>,
) -> Option<(String, BTreeMap<String, Vec<String>>)> {
    let engine = lock(engine);
    let app = engine.app()?;
    let fields = app
        .fields
        .iter()
        .enumerate()
        .filter_map(|(col, name)| {
            let set = engine.selections.of(col)?;
            let texts = set.iter().map(|s| app.symbols[col][*s].text.clone());
            Some((name.to_string(), texts.collect()))
        })
        .collect();
    Some((app.id.to_string(), fields))
}

impl EngineSession {
    /// A new handle, above the doc's.
    fn new_handle(&mut self) -> i64 {
        self.next_handle = self.next_handle.max(DOC_HANDLE) + 1;
        self.next_handle
    }

    /// Stores object `id`'s properties; returns its handle (the one it has, else a new one).
    pub(crate) fn add_object(&mut self, id: String, props: Value) -> i64 {
        if let Some(&h) = self.by_id.get(&id) {
            self.objects.insert(h, props);
            return h;
        }
        let h = self.new_handle();
        self.objects.insert(h, props);
        self.by_id.insert(id, h);
        h
    }

    /// The handle of field `col` (one per field and session, like an object's).
    pub(crate) fn field_handle(&mut self, col: usize) -> i64 {
        if let Some(&h) = self.field_handles.get(&col) {
            return h;
        }
        let h = self.new_handle();
        self.fields.insert(h, col);
        self.field_handles.insert(col, h);
        h
    }

    /// The selections whose rows object `handle` shows: those before `BeginSelections`
    /// while it is in selection mode.
    pub(crate) fn modal_rows(&self, handle: i64) -> Option<&Selections> {
        self.modal
            .as_ref()
            .filter(|m| m.handle == handle)
            .map(|m| &m.before)
    }

    /// The open doc's app.
    pub(crate) fn app(&self) -> Option<App> {
        self.doc.as_deref().and_then(apps::find)
    }

    /// Runs `change` on a copy of the selections and keeps the result unless it was refused.
    /// Returns whether it was accepted and the handles whose layout changed: the doc, then
    /// every open generic object whose layout (data, states, current selections) differs —
    /// nothing when the selections stayed the same.
    pub(crate) fn reselect(
        &mut self,
        app: &App,
        change: impl FnOnce(&mut Selections) -> Result<(), Refused>,
    ) -> (bool, Vec<i64>) {
        let mut next = self.selections.clone();
        if change(&mut next).is_err() {
            return (false, Vec::new());
        }
        if next == self.selections {
            return (true, Vec::new());
        }
        let mut handles: Vec<i64> = self.objects.keys().copied().collect();
        handles.sort_unstable();
        // The live measure's tick is held still: only the selections may make a difference.
        let changed = handles.into_iter().filter(|h| {
            let props = &self.objects[h];
            let rows = self.modal_rows(*h);
            object_layout(app, props, 0, &self.selections, rows)
                != object_layout(app, props, 0, &next, rows)
        });
        let change = std::iter::once(DOC_HANDLE).chain(changed).collect();
        self.selections = next;
        (true, change)
    }
}
