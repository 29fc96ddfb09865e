//! Hypercubes (`qHyperCubeDef`) evaluated over a sample app's data under the selections:
//! dimensions, aggregated measures (the live one included) and their data pages.

use crate::apps::App;
use crate::pages::Area;
use crate::selections::{state_counts, Selections, State};
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Agg {
    Sum,
    Avg,
    Count,
    Min,
    Max,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Agg(Agg, String),
    Live,
    Unknown,
}

fn parse_expr(expr: &str) -> Expr {
    let e = expr.trim().trim_start_matches('=').trim();
    if e.to_ascii_lowercase().contains("live") {
        return Expr::Live;
    }
    let Some((name, rest)) = e.split_once('(') else {
        return Expr::Unknown;
    };
    let field = rest
        .trim_end()
        .trim_end_matches(')')
        .trim()
        .trim_matches(|c| c == '[' || c == ']' || c == '"')
        .to_string();
    let agg = match name.trim().to_ascii_lowercase().as_str() {
        "sum" => Agg::Sum,
        "avg" => Agg::Avg,
        "count" => Agg::Count,
        "min" => Agg::Min,
        "max" => Agg::Max,
        _ => return Expr::Unknown,
    };
    Expr::Agg(agg, field)
}

fn num_text(n: f64) -> String {
    if n.is_nan() {
        "-".to_string()
    } else if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n:.2}")
    }
}

fn num_json(n: f64) -> Value {
    if n.is_finite() {
        json!(n)
    } else {
        json!("NaN")
    }
}

/// The fields of a `qHyperCubeDef`'s dimensions (their first field def, `=` stripped).
pub(crate) fn dimension_fields(def: &Value) -> Vec<String> {
    def.get("qDimensions")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .map(|d| {
                    d.pointer("/qDef/qFieldDefs/0")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .trim_start_matches('=')
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A hypercube evaluated over an app's possible rows (those the selections leave).
pub(crate) struct Cube {
    dim_titles: Vec<String>,
    dim_cardinals: Vec<usize>,
    dim_state_counts: Vec<Value>,
    dim_locked: Vec<bool>,
    measure_titles: Vec<String>,
    /// Per dimension and measure, its own properties that are not Qlik's (`cId`,
    /// `othersLabel`, …) from the entry and its `qDef`: Qlik copies them into the layout's
    /// `qDimensionInfo` / `qMeasureInfo`, and charts read their settings from there.
    dim_extras: Vec<Map<String, Value>>,
    measure_extras: Vec<Map<String, Value>>,
    /// One row per group: every cell already in engine JSON form.
    matrix: Vec<Vec<Value>>,
    measure_ranges: Vec<(f64, f64)>,
}

impl Cube {
    /// Evaluates `def` (a `qHyperCubeDef`) over `app` under `sel`; `tick` drives the live
    /// measure. `rows` decides which rows count: `sel`, except for an object in selection
    /// mode, which keeps the rows it had before (`BeginSelections`) so that its values can
    /// still be clicked, their states showing the selection being made, as in Qlik.
    pub(crate) fn evaluate(
        app: &App,
        def: &Value,
        tick: u64,
        sel: &Selections,
        rows: &Selections,
    ) -> Cube {
        let dims = dimension_fields(def);
        let measures = measure_defs(def);
        let dim_cols: Vec<Option<usize>> = dims.iter().map(|d| app.column(d)).collect();
        let states: Vec<Vec<State>> = dim_cols
            .iter()
            .map(|c| c.map(|c| sel.states(app, c)).unwrap_or_default())
            .collect();
        let groups = groups(app, &dim_cols, rows);
        let mut ranges = vec![(f64::INFINITY, f64::NEG_INFINITY); measures.len()];
        let matrix = groups
            .iter()
            .enumerate()
            .map(|(g, (key, members))| {
                let mut cells: Vec<Value> = key
                    .iter()
                    .zip(&dim_cols)
                    .enumerate()
                    .map(|(d, (sym, col))| match (sym, col) {
                        (Some(s), Some(c)) => {
                            let symbol = &app.symbols[*c][*s];
                            json!({
                                "qText": symbol.text,
                                "qNum": symbol.num.map(num_json).unwrap_or(json!("NaN")),
                                "qElemNumber": s,
                                "qState": states[d][*s].code()
                            })
                        }
                        _ => json!({"qText": "-", "qNum": "NaN", "qElemNumber": 0, "qState": "O"}),
                    })
                    .collect();
                for (m, (_, expr)) in measures.iter().enumerate() {
                    let n = measure(app, expr, members, g, tick);
                    if n.is_finite() {
                        ranges[m].0 = ranges[m].0.min(n);
                        ranges[m].1 = ranges[m].1.max(n);
                    }
                    cells.push(json!({
                        "qText": num_text(n), "qNum": num_json(n), "qElemNumber": 0, "qState": "L"
                    }));
                }
                cells
            })
            .collect();
        Cube {
            dim_cardinals: dim_cols
                .iter()
                .map(|c| c.map(|c| app.symbols[c].len()).unwrap_or(0))
                .collect(),
            dim_state_counts: states.iter().map(|s| state_counts(s)).collect(),
            dim_locked: dim_cols
                .iter()
                .map(|c| c.is_some_and(|c| sel.is_locked(c)))
                .collect(),
            dim_titles: dims,
            dim_extras: extras(def.get("qDimensions")),
            measure_extras: extras(def.get("qMeasures")),
            measure_titles: measures.into_iter().map(|(l, _)| l).collect(),
            matrix,
            measure_ranges: ranges,
        }
    }

    fn width(&self) -> usize {
        self.dim_titles.len() + self.measure_titles.len()
    }

    /// One `qDataPages` entry for `area`.
    pub(crate) fn page(&self, area: Area) -> Value {
        let (left, top, width, height) = area.clamp(self.width(), self.matrix.len());
        let rows: Vec<Value> = self.matrix[top..top + height]
            .iter()
            .map(|r| Value::Array(r[left..left + width].to_vec()))
            .collect();
        json!({
            "qMatrix": rows,
            "qTails": [],
            "qArea": {"qLeft": left, "qTop": top, "qWidth": width, "qHeight": height}
        })
    }

    /// The `qHyperCube` of a layout, with the pages of `fetch`.
    pub(crate) fn layout(&self, fetch: &[Area]) -> Value {
        let dims: Vec<Value> = (0..self.dim_titles.len())
            .map(|d| {
                let t = &self.dim_titles[d];
                let cardinal = self.dim_cardinals[d];
                let info = json!({
                    "qFallbackTitle": t, "qApprMaxGlyphCount": 10, "qCardinal": cardinal,
                    "qCardinalities": {
                        "qCardinal": cardinal,
                        "qHypercubeCardinal": self.matrix.len(),
                        "qAllValuesCardinal": -1
                    },
                    "qLocked": self.dim_locked[d], "qGroupFieldDefs": [t],
                    "qGroupFallbackTitles": [t], "qGroupPos": 0, "qGrouping": "N",
                    "qStateCounts": self.dim_state_counts[d], "qTags": [],
                    "qDimensionType": "D", "qSortIndicator": "A", "qMin": "NaN", "qMax": "NaN",
                    "qNumFormat": {"qType": "U", "qnDec": 0, "qUseThou": 0},
                    "qIsAutoFormat": true, "qIsSemantic": false, "qIsOneAndOnlyOne": false,
                    "qAttrExprInfo": [], "qAttrDimInfo": [], "qIsCalculated": false,
                    "qReverseSort": false
                });
                with_extras(info, self.dim_extras.get(d))
            })
            .collect();
        let measures: Vec<Value> = self
            .measure_titles
            .iter()
            .zip(&self.measure_ranges)
            .enumerate()
            .map(|(m, (t, (min, max)))| {
                let info = json!({
                    "qFallbackTitle": t, "qApprMaxGlyphCount": 10, "qCardinal": 0,
                    "qSortIndicator": "D", "qMin": num_json(*min), "qMax": num_json(*max),
                    "qNumFormat": {"qType": "U", "qnDec": 10, "qUseThou": 0},
                    "qIsAutoFormat": true, "qAttrExprInfo": [], "qAttrDimInfo": [],
                    "qTrendLines": []
                });
                with_extras(info, self.measure_extras.get(m))
            })
            .collect();
        json!({
            "qStateName": "$",
            "qSize": {"qcx": self.width(), "qcy": self.matrix.len()},
            "qDimensionInfo": dims,
            "qMeasureInfo": measures,
            "qEffectiveInterColumnSortOrder": (0..self.width()).collect::<Vec<_>>(),
            "qGrandTotalRow": [],
            "qDataPages": fetch.iter().map(|a| self.page(*a)).collect::<Vec<_>>(),
            "qPivotDataPages": [],
            "qStackedDataPages": [],
            "qMode": "S",
            "qNoOfLeftDims": -1,
            "qTreeNodesOnDim": [],
            "qColumnOrder": []
        })
    }
}

/// The measures of a `qHyperCubeDef`: (label, parsed expression); the label defaults to the
/// expression's text.
fn measure_defs(def: &Value) -> Vec<(String, Expr)> {
    def.get("qMeasures")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .map(|m| {
                    let expr = m
                        .pointer("/qDef/qDef")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let label = m
                        .pointer("/qDef/qLabel")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .unwrap_or(expr);
                    (label.to_string(), parse_expr(expr))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The rows `rows` leaves possible, grouped by their symbols in `dim_cols` (`None` for an
/// unknown field): (key, member rows), in load order of each group's first row.
fn groups(
    app: &App,
    dim_cols: &[Option<usize>],
    rows: &Selections,
) -> Vec<(Vec<Option<usize>>, Vec<usize>)> {
    let possible = rows.possible_rows(app, None);
    let mut groups: Vec<(Vec<Option<usize>>, Vec<usize>)> = Vec::new();
    for (i, row) in app.cells.iter().enumerate() {
        if !possible[i] {
            continue;
        }
        let key: Vec<Option<usize>> = dim_cols.iter().map(|c| c.map(|c| row[c])).collect();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    groups
}

/// Per entry of a `qDimensions` / `qMeasures` list, its and its `qDef`'s keys that are not
/// Qlik's (no `q` prefix).
fn extras(list: Option<&Value>) -> Vec<Map<String, Value>> {
    let own = |v: Option<&Value>| -> Vec<(String, Value)> {
        v.and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !k.starts_with('q'))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    list.and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .map(|e| own(e.get("qDef")).into_iter().chain(own(Some(e))).collect())
                .collect()
        })
        .unwrap_or_default()
}

/// `info` with the entry's own properties added (Qlik's keys win).
fn with_extras(mut info: Value, extras: Option<&Map<String, Value>>) -> Value {
    if let (Value::Object(map), Some(extras)) = (&mut info, extras) {
        for (k, v) in extras {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    info
}

fn measure(app: &App, expr: &Expr, members: &[usize], group: usize, tick: u64) -> f64 {
    match expr {
        Expr::Live => (50 + (tick * 7 + group as u64 * 13) % 50) as f64,
        Expr::Unknown => f64::NAN,
        Expr::Agg(agg, field) => {
            let Some(col) = app.column(field) else {
                return f64::NAN;
            };
            let values: Vec<f64> = members
                .iter()
                .filter_map(|&i| app.rows[i][col].as_f64())
                .collect();
            match agg {
                Agg::Count => members.len() as f64,
                _ if values.is_empty() => f64::NAN,
                Agg::Sum => values.iter().sum(),
                Agg::Avg => values.iter().sum::<f64>() / values.len() as f64,
                Agg::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
                Agg::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            }
        }
    }
}

/// True when the properties' hypercube has a live measure (its layout changes every time).
pub(crate) fn is_live(props: &Value) -> bool {
    props
        .pointer("/qHyperCubeDef/qMeasures")
        .and_then(Value::as_array)
        .is_some_and(|l| {
            l.iter().any(|m| {
                m.pointer("/qDef/qDef")
                    .and_then(Value::as_str)
                    .is_some_and(|e| parse_expr(e) == Expr::Live)
            })
        })
}
