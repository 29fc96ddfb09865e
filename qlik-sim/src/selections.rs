//! Selections in the simulated engine (the default state `$` only): which values of which
//! fields are selected and locked, the field-value states they give (S, O, A, X, L, XS, XL),
//! Qlik's search strings (`Field.Select`), list objects and the current-selections object.
//!
//! The sample apps are single tables, so association is simple: a row is *possible* when,
//! in every field with a selection, its value is selected. A value of a field is possible
//! when some possible row has it; in a field with a selection, a value that is not selected
//! but would be possible without that field's own selection is *alternative* (A), the rest
//! *excluded* (X).

use crate::apps::App;
use crate::pages::Area;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// How many selected values the current-selections object lists by name before it says
/// "N of M" (`NxCurrentSelectionItem.qSelectionThreshold`, default 6).
const SELECTION_THRESHOLD: usize = 6;

/// The selection state of one engine session's app.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Selections {
    /// Column → selected symbols (`qElemNumber`s). Never holds an empty set.
    selected: BTreeMap<usize, BTreeSet<usize>>,
    /// Columns whose selection is locked (always a subset of `selected`'s keys).
    locked: BTreeSet<usize>,
}

/// A value's state, as in `NxCell.qState` / `NxCellRows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Locked,
    Selected,
    Optional,
    Alternative,
    Excluded,
    SelectedExcluded,
    LockedExcluded,
}

impl State {
    pub(crate) fn code(self) -> &'static str {
        match self {
            State::Locked => "L",
            State::Selected => "S",
            State::Optional => "O",
            State::Alternative => "A",
            State::Excluded => "X",
            State::SelectedExcluded => "XS",
            State::LockedExcluded => "XL",
        }
    }

    /// Rank for `qSortByState` (selected first, then possible, alternative, excluded).
    fn rank(self) -> u8 {
        match self {
            State::Locked | State::Selected => 0,
            State::Optional => 1,
            State::Alternative => 2,
            State::Excluded | State::SelectedExcluded | State::LockedExcluded => 3,
        }
    }
}

/// Why a selection call did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The field is locked and the call did not ask for `qSoftLock`.
    Locked,
    /// Nothing matched.
    NoMatch,
}

impl Selections {
    /// True when no field has a selection.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.selected.is_empty()
    }

    /// The selected symbols of `col`, if it has a selection.
    pub(crate) fn of(&self, col: usize) -> Option<&BTreeSet<usize>> {
        self.selected.get(&col)
    }

    pub(crate) fn is_locked(&self, col: usize) -> bool {
        self.locked.contains(&col)
    }

    /// Selects `values` in `col`: replaces the field's selection, or with `toggle` flips each
    /// value in or out of it. An empty result clears the field.
    pub(crate) fn select(
        &mut self,
        col: usize,
        values: &BTreeSet<usize>,
        toggle: bool,
        soft_lock: bool,
    ) -> Result<(), Refused> {
        if self.is_locked(col) && !soft_lock {
            return Err(Refused::Locked);
        }
        if values.is_empty() && !toggle {
            return Err(Refused::NoMatch);
        }
        let next: BTreeSet<usize> = if toggle {
            let current = self.selected.get(&col).cloned().unwrap_or_default();
            current.symmetric_difference(values).copied().collect()
        } else {
            values.clone()
        };
        self.set(col, next);
        Ok(())
    }

    /// Clears `col` (refused when locked, unless `soft_lock`).
    pub(crate) fn clear(&mut self, col: usize, soft_lock: bool) -> Result<(), Refused> {
        if self.is_locked(col) && !soft_lock {
            return Err(Refused::Locked);
        }
        self.set(col, BTreeSet::new());
        Ok(())
    }

    /// `Doc.ClearAll`: clears every field; locked ones only with `locked_also` (which also
    /// unlocks them).
    pub(crate) fn clear_all(&mut self, locked_also: bool) {
        if locked_also {
            *self = Selections::default();
        } else {
            let locked = self.locked.clone();
            self.selected.retain(|col, _| locked.contains(col));
        }
    }

    /// `Field.ClearAllButThis`: clears every other unlocked field (locked ones too with
    /// `soft_lock`).
    pub(crate) fn clear_all_but(&mut self, keep: usize, soft_lock: bool) {
        let locked = self.locked.clone();
        self.selected
            .retain(|col, _| *col == keep || (!soft_lock && locked.contains(col)));
        self.locked.retain(|col| self.selected.contains_key(col));
    }

    /// `Field.Lock`: locks the field's selection, if it has one.
    pub(crate) fn lock(&mut self, col: usize) {
        if self.selected.contains_key(&col) {
            self.locked.insert(col);
        }
    }

    pub(crate) fn unlock(&mut self, col: usize) {
        self.locked.remove(&col);
    }

    pub(crate) fn lock_all(&mut self) {
        self.locked = self.selected.keys().copied().collect();
    }

    pub(crate) fn unlock_all(&mut self) {
        self.locked.clear();
    }

    fn set(&mut self, col: usize, values: BTreeSet<usize>) {
        if values.is_empty() {
            self.selected.remove(&col);
            self.locked.remove(&col);
        } else {
            self.selected.insert(col, values);
        }
    }

    /// Which rows of `app` are possible; `ignoring` leaves one field's selection out.
    pub(crate) fn possible_rows(&self, app: &App, ignoring: Option<usize>) -> Vec<bool> {
        app.cells
            .iter()
            .map(|row| {
                self.selected
                    .iter()
                    .filter(|(col, _)| Some(**col) != ignoring)
                    .all(|(col, set)| set.contains(&row[*col]))
            })
            .collect()
    }

    /// The state of every symbol of `col`, by `qElemNumber`.
    pub(crate) fn states(&self, app: &App, col: usize) -> Vec<State> {
        let symbols_in = |rows: &[bool]| -> BTreeSet<usize> {
            app.cells
                .iter()
                .zip(rows)
                .filter(|(_, keep)| **keep)
                .map(|(row, _)| row[col])
                .collect()
        };
        let possible = symbols_in(&self.possible_rows(app, None));
        let locked = self.is_locked(col);
        match self.selected.get(&col) {
            None => (0..app.symbols[col].len())
                .map(|s| {
                    if possible.contains(&s) {
                        State::Optional
                    } else {
                        State::Excluded
                    }
                })
                .collect(),
            Some(selected) => {
                let alternative = symbols_in(&self.possible_rows(app, Some(col)));
                (0..app.symbols[col].len())
                    .map(
                        |s| match (selected.contains(&s), possible.contains(&s), locked) {
                            (true, true, true) => State::Locked,
                            (true, true, false) => State::Selected,
                            (true, false, true) => State::LockedExcluded,
                            (true, false, false) => State::SelectedExcluded,
                            (false, _, _) if alternative.contains(&s) => State::Alternative,
                            (false, _, _) => State::Excluded,
                        },
                    )
                    .collect()
            }
        }
    }
}

/// `NxStateCounts` of a list of states.
pub(crate) fn state_counts(states: &[State]) -> Value {
    let n = |want: State| states.iter().filter(|s| **s == want).count();
    json!({
        "qLocked": n(State::Locked),
        "qSelected": n(State::Selected),
        "qOption": n(State::Optional),
        "qDeselected": 0,
        "qAlternative": n(State::Alternative),
        "qExcluded": n(State::Excluded),
        "qSelectedExcluded": n(State::SelectedExcluded),
        "qLockedExcluded": n(State::LockedExcluded),
    })
}

/// The symbols of `col` matching Qlik's search string `pattern` (`Field.Select`): a numeric
/// search (`>1000`, `<=5`, `>=10<20`), a wildcard search (`*`, `?`; case-insensitive, whole
/// value), or else the value's text, case-insensitively. (Qlik's "normal" search also
/// matches values with a *word* starting with the string; the simulator does not.)
pub(crate) fn search(app: &App, col: usize, pattern: &str) -> BTreeSet<usize> {
    let pattern = pattern.trim();
    let numeric = numeric_search(pattern);
    app.symbols[col]
        .iter()
        .enumerate()
        .filter(|(_, sym)| match &numeric {
            Some(conds) => sym.num.is_some_and(|n| conds.iter().all(|c| c.holds(n))),
            None if pattern.contains(['*', '?']) => wildcard(
                &pattern.to_lowercase().chars().collect::<Vec<_>>(),
                &sym.text.to_lowercase().chars().collect::<Vec<_>>(),
            ),
            None => sym.text.to_lowercase() == pattern.to_lowercase(),
        })
        .map(|(i, _)| i)
        .collect()
}

/// The symbols of `col` equal to any `FieldValue` of `values` (`Field.SelectValues`): by number
/// when `qIsNumeric`, else by exact text.
pub(crate) fn matching_values(app: &App, col: usize, values: &[Value]) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for v in values {
        let numeric = v.get("qIsNumeric").and_then(Value::as_bool) == Some(true);
        let number = v.get("qNumber").and_then(Value::as_f64);
        let text = v.get("qText").and_then(Value::as_str);
        for (i, sym) in app.symbols[col].iter().enumerate() {
            let hit = if numeric {
                number.is_some() && sym.num == number
            } else {
                text == Some(sym.text.as_str())
            };
            if hit {
                out.insert(i);
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
struct Cond {
    op: &'static str,
    value: f64,
}

impl Cond {
    fn holds(self, n: f64) -> bool {
        match self.op {
            ">=" => n >= self.value,
            "<=" => n <= self.value,
            ">" => n > self.value,
            _ => n < self.value,
        }
    }
}

/// `>=10<20` → two conditions; `None` unless the whole string is such a search.
fn numeric_search(pattern: &str) -> Option<Vec<Cond>> {
    if !pattern.starts_with(['<', '>']) {
        return None;
    }
    let mut conds = Vec::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        let op = [">=", "<=", ">", "<"]
            .into_iter()
            .find(|op| rest.starts_with(op))?;
        rest = &rest[op.len()..];
        let end = rest.find(['<', '>']).unwrap_or(rest.len());
        let value = rest[..end].trim().parse::<f64>().ok()?;
        conds.push(Cond { op, value });
        rest = &rest[end..];
    }
    Some(conds)
}

/// Whole-string match of `p` (with `*` and `?`) against `t`.
fn wildcard(p: &[char], t: &[char]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some(('*', rest)) => (0..=t.len()).any(|i| wildcard(rest, &t[i..])),
        Some(('?', rest)) => !t.is_empty() && wildcard(rest, &t[1..]),
        Some((c, rest)) => t.first() == Some(c) && wildcard(rest, &t[1..]),
    }
}

/// A `qListObjectDef` evaluated: its field's values with their states.
pub(crate) struct ListObject {
    title: String,
    col: Option<usize>,
    /// (qElemNumber, state) in display order.
    rows: Vec<(usize, State)>,
    states: Vec<State>,
    locked: bool,
}

impl ListObject {
    pub(crate) fn evaluate(app: &App, def: &Value, sel: &Selections) -> ListObject {
        let title = def
            .pointer("/qDef/qFieldDefs/0")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim_start_matches('=')
            .to_string();
        let col = app.column(&title);
        let states = col.map(|c| sel.states(app, c)).unwrap_or_default();
        let mut rows: Vec<(usize, State)> = states.iter().copied().enumerate().collect();
        // qSortCriterias[0].qSortByState: 1 = selected first, -1 = reversed, 0 = load order.
        let by_state = def
            .pointer("/qDef/qSortCriterias/0/qSortByState")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if by_state != 0 {
            rows.sort_by_key(|(_, s)| s.rank());
            if by_state < 0 {
                rows.reverse();
            }
        }
        ListObject {
            title,
            col,
            rows,
            states,
            locked: col.is_some_and(|c| sel.is_locked(c)),
        }
    }

    /// One `qDataPages` entry for `area` (one column: `qLeft` must be 0 to see it).
    pub(crate) fn page(&self, app: &App, area: Area) -> Value {
        let (left, top, width, height) = area.clamp(1, self.rows.len());
        let matrix: Vec<Value> = self.rows[top..top + height]
            .iter()
            .map(|(elem, state)| {
                let sym = self
                    .col
                    .map(|c| &app.symbols[c][*elem])
                    .expect("rows only for a known field");
                let cell = json!({
                    "qText": sym.text,
                    "qNum": sym.num.map(|n| json!(n)).unwrap_or(json!("NaN")),
                    "qElemNumber": elem,
                    "qState": state.code(),
                });
                Value::Array(if width == 0 { vec![] } else { vec![cell] })
            })
            .collect();
        json!({
            "qMatrix": matrix,
            "qTails": [],
            "qArea": {"qLeft": left, "qTop": top, "qWidth": width, "qHeight": height}
        })
    }

    /// The `qListObject` of a layout, with the pages of `fetch`.
    pub(crate) fn layout(&self, app: &App, fetch: &[Area]) -> Value {
        let numeric = self
            .col
            .is_some_and(|c| app.symbols[c].iter().all(|s| s.num.is_some()));
        json!({
            "qStateName": "$",
            "qSize": {"qcx": 1, "qcy": self.rows.len()},
            "qDimensionInfo": {
                "qFallbackTitle": self.title,
                "qApprMaxGlyphCount": 0,
                "qCardinal": self.states.len(),
                "qLocked": self.locked,
                "qSortIndicator": "A",
                "qGroupFieldDefs": [self.title],
                "qMin": "NaN",
                "qMax": "NaN",
                "qStateCounts": state_counts(&self.states),
                "qDimensionType": if numeric { "N" } else { "D" },
                "qIsOneAndOnlyOne": false,
            },
            "qExpressions": [],
            "qDataPages": fetch.iter().map(|a| self.page(app, *a)).collect::<Vec<_>>(),
        })
    }
}

/// The `qSelectionObject` of a layout (`qSelectionObjectDef`): one entry per field with a
/// selection, in field order.
pub(crate) fn selection_object(app: &App, sel: &Selections) -> Value {
    let items: Vec<Value> = sel
        .selected
        .iter()
        .enumerate()
        .map(|(sort_index, (col, set))| {
            let states = sel.states(app, *col);
            let names: Vec<&str> = set
                .iter()
                .map(|s| app.symbols[*col][*s].text.as_str())
                .collect();
            let total = app.symbols[*col].len();
            let text = if names.len() > SELECTION_THRESHOLD {
                format!("{} of {total}", names.len())
            } else {
                names.join(", ")
            };
            let info: Vec<Value> = names
                .iter()
                .map(|n| json!({"qName": n, "qFieldSelectionMode": "NORMAL"}))
                .collect();
            json!({
                "qTotal": total,
                "qIsNum": app.symbols[*col].iter().all(|s| s.num.is_some()),
                "qField": app.fields[*col],
                "qLocked": sel.is_locked(*col),
                "qOneAndOnlyOne": false,
                "qTextSearch": "",
                "qSelectedCount": names.len(),
                "qSelected": text,
                "qRangeInfo": [],
                "qSortIndex": sort_index,
                "qStateCounts": state_counts(&states),
                "qSelectedFieldSelectionInfo": info,
                "qNotSelectedFieldSelectionInfo": [],
                "qSelectionThreshold": SELECTION_THRESHOLD,
                "qReadableName": app.fields[*col],
            })
        })
        .collect();
    let mut out = Map::new();
    out.insert("qBackCount".into(), json!(0));
    out.insert("qForwardCount".into(), json!(0));
    out.insert("qSelections".into(), Value::Array(items));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps;

    fn sales() -> App {
        apps::find("Sales").expect("sales")
    }

    fn set(v: &[usize]) -> BTreeSet<usize> {
        v.iter().copied().collect()
    }

    #[test]
    fn states_follow_the_association() {
        let app = sales();
        let region = app.column("Region").expect("Region");
        let product = app.column("Product").expect("Product");
        let mut sel = Selections::default();
        // Helmets is sold in North and South only.
        sel.select(product, &search(&app, product, "Helmets"), false, false)
            .expect("select");
        let codes = |s: Vec<State>| s.into_iter().map(State::code).collect::<Vec<_>>();
        assert_eq!(codes(sel.states(&app, region)), ["O", "O", "X", "X"]);
        assert_eq!(codes(sel.states(&app, product)), ["A", "S", "A"]);
        // North and East: East has no helmets, so it is selected but excluded.
        sel.select(region, &set(&[0, 2]), false, false)
            .expect("select");
        assert_eq!(codes(sel.states(&app, region)), ["S", "A", "XS", "X"]);
        sel.lock(region);
        assert_eq!(
            sel.select(region, &set(&[1]), false, false),
            Err(Refused::Locked)
        );
        assert_eq!(codes(sel.states(&app, region)), ["L", "A", "XL", "X"]);
        sel.clear_all(false);
        assert_eq!(sel.of(product), None);
        assert_eq!(sel.of(region), Some(&set(&[0, 2])));
        sel.clear_all(true);
        assert!(sel.is_empty());
    }

    #[test]
    fn search_strings() {
        let app = sales();
        let region = app.column("Region").expect("Region");
        let sales_col = app.column("Sales").expect("Sales");
        assert_eq!(search(&app, region, "north"), set(&[0]));
        assert_eq!(search(&app, region, "*th"), set(&[0, 1]));
        assert_eq!(search(&app, region, "?est"), set(&[3]));
        assert_eq!(search(&app, region, "Nor"), set(&[]));
        // Sales: 1200, 300, 900, 450, 1500, 200, 700, 350.
        assert_eq!(search(&app, sales_col, ">1000"), set(&[0, 4]));
        assert_eq!(search(&app, sales_col, ">=300<=450"), set(&[1, 3, 7]));
        assert_eq!(search(&app, sales_col, ">abc"), set(&[]));
        let values = [
            json!({"qText": "East"}),
            json!({"qIsNumeric": true, "qNumber": 3}),
        ];
        assert_eq!(matching_values(&app, region, &values), set(&[2]));
    }

    #[test]
    fn toggle_and_empty() {
        let mut sel = Selections::default();
        sel.select(0, &set(&[0, 1]), false, false).expect("select");
        sel.select(0, &set(&[1, 2]), true, false).expect("toggle");
        assert_eq!(sel.of(0), Some(&set(&[0, 2])));
        sel.select(0, &set(&[0, 2]), true, false).expect("toggle");
        assert!(sel.is_empty());
        assert_eq!(
            sel.select(0, &set(&[]), false, false),
            Err(Refused::NoMatch)
        );
    }
}
