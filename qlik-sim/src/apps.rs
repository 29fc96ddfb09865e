//! The sample apps the simulated engine serves, and hypercube evaluation over their data.

use crate::selections::{selection_object, state_counts, ListObject, Selections, State};
use serde_json::{json, Map, Value};

/// App id (and `qDocName`) of the "Sales" sample app. Its object `sales-by-region` has a
/// hypercube Region × (Sales, Live) whose `Live` measure changes on every layout.
pub const SALES_APP_ID: &str = "5a1e5000-5a1e-4000-8000-000000000001";
/// App id (and `qDocName`) of the "Helpdesk" sample app (object `cases-by-priority`).
pub const HELPDESK_APP_ID: &str = "4e1bde5c-4e1b-4000-8000-000000000002";

/// A sample app: a single data table and a few objects.
pub(crate) struct App {
    pub id: &'static str,
    pub title: &'static str,
    pub fields: &'static [&'static str],
    pub rows: Vec<Vec<Value>>,
    /// Object properties (with `qInfo.qId` and `qHyperCubeDef`).
    pub objects: Vec<Value>,
    /// Per field, its distinct values in load order: the index is the `qElemNumber`.
    pub symbols: Vec<Vec<Symbol>>,
    /// `rows` as symbol indexes.
    pub cells: Vec<Vec<usize>>,
}

/// A distinct field value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Symbol {
    pub text: String,
    pub num: Option<f64>,
}

/// Every sample app.
pub(crate) fn all() -> Vec<App> {
    vec![sales(), helpdesk()]
}

/// The sample app whose id or title (with or without `.qvf`) is `name`.
pub(crate) fn find(name: &str) -> Option<App> {
    let bare = name.strip_suffix(".qvf").unwrap_or(name);
    all()
        .into_iter()
        .find(|a| a.id.eq_ignore_ascii_case(name) || a.title.eq_ignore_ascii_case(bare))
}

fn sales() -> App {
    let rows = [
        ("North", "Bikes", 1200, 10),
        ("North", "Helmets", 300, 25),
        ("South", "Bikes", 900, 8),
        ("South", "Helmets", 450, 30),
        ("East", "Bikes", 1500, 12),
        ("East", "Gloves", 200, 40),
        ("West", "Bikes", 700, 6),
        ("West", "Gloves", 350, 45),
    ];
    App::new(
        SALES_APP_ID,
        "Sales",
        &["Region", "Product", "Sales", "Quantity"],
        rows.iter()
            .map(|(r, p, s, q)| vec![json!(r), json!(p), json!(s), json!(q)])
            .collect(),
        vec![json!({
            "qInfo": {"qId": "sales-by-region", "qType": "barchart"},
            "title": "Sales by region",
            "qHyperCubeDef": {
                "qDimensions": [{"qDef": {"qFieldDefs": ["Region"]}}],
                "qMeasures": [
                    {"qDef": {"qDef": "Sum(Sales)", "qLabel": "Sales"}},
                    {"qDef": {"qDef": "Live()", "qLabel": "Live"}}
                ],
                "qInitialDataFetch": [{"qLeft": 0, "qTop": 0, "qWidth": 3, "qHeight": 100}]
            }
        })],
    )
}

fn helpdesk() -> App {
    let rows = [
        ("High", "Open", 12, 5.5),
        ("High", "Closed", 40, 3.25),
        ("Medium", "Open", 25, 12.0),
        ("Medium", "Closed", 80, 9.5),
        ("Low", "Open", 30, 30.0),
        ("Low", "Closed", 120, 22.0),
    ];
    App::new(
        HELPDESK_APP_ID,
        "Helpdesk",
        &["Priority", "Status", "Cases", "ResolutionHours"],
        rows.iter()
            .map(|(p, s, c, h)| vec![json!(p), json!(s), json!(c), json!(h)])
            .collect(),
        vec![json!({
            "qInfo": {"qId": "cases-by-priority", "qType": "table"},
            "title": "Cases by priority",
            "qHyperCubeDef": {
                "qDimensions": [{"qDef": {"qFieldDefs": ["Priority"]}}],
                "qMeasures": [
                    {"qDef": {"qDef": "Sum(Cases)", "qLabel": "Cases"}},
                    {"qDef": {"qDef": "Avg(ResolutionHours)", "qLabel": "Avg hours"}}
                ],
                "qInitialDataFetch": [{"qLeft": 0, "qTop": 0, "qWidth": 3, "qHeight": 100}]
            }
        })],
    )
}

impl App {
    fn new(
        id: &'static str,
        title: &'static str,
        fields: &'static [&'static str],
        rows: Vec<Vec<Value>>,
        objects: Vec<Value>,
    ) -> App {
        let mut symbols: Vec<Vec<Symbol>> = vec![Vec::new(); fields.len()];
        let cells = rows
            .iter()
            .map(|row| {
                row.iter()
                    .zip(symbols.iter_mut())
                    .map(|(v, syms)| {
                        let sym = Symbol {
                            text: text_of(v),
                            num: v.as_f64(),
                        };
                        match syms.iter().position(|s| *s == sym) {
                            Some(i) => i,
                            None => {
                                syms.push(sym);
                                syms.len() - 1
                            }
                        }
                    })
                    .collect()
            })
            .collect();
        App {
            id,
            title,
            fields,
            rows,
            objects,
            symbols,
            cells,
        }
    }

    /// The `qDocList` entry of this app.
    pub fn doc_entry(&self) -> Value {
        json!({
            "qDocName": self.id,
            "qDocId": self.id,
            "qTitle": self.title,
            "qConnectedUsers": 0,
            "qReadOnly": false,
            "qMeta": {},
            "qThumbnail": {"qUrl": ""}
        })
    }

    /// The `qLayout` of `GetAppLayout`.
    pub fn layout(&self) -> Value {
        json!({
            "qTitle": self.title,
            "qFileName": self.id,
            "qLastReloadTime": "2026-01-01T00:00:00.000Z",
            "qModified": false,
            "qHasScript": true,
            "qHasData": true,
            "qReadOnly": false,
            "qIsOpenedWithoutData": false,
            "qStateNames": [],
            "qMeta": {},
            "qThumbnail": {"qUrl": ""}
        })
    }

    /// The `qProp` of `GetAppProperties`.
    pub fn properties(&self) -> Value {
        json!({
            "qTitle": self.title,
            "qLastReloadTime": "2026-01-01T00:00:00.000Z",
            "qMigrationHash": "",
            "qSavedInProductVersion": "12.2027.0",
            "qThumbnail": {"qUrl": ""}
        })
    }

    /// The properties of the sample object `id`.
    pub fn object(&self, id: &str) -> Option<Value> {
        self.objects
            .iter()
            .find(|o| o.pointer("/qInfo/qId").and_then(Value::as_str) == Some(id))
            .cloned()
    }

    /// The column of `field` (case-insensitive, brackets allowed: `[Region]`).
    pub fn column(&self, field: &str) -> Option<usize> {
        let field = field.trim();
        let field = field
            .strip_prefix('[')
            .and_then(|f| f.strip_suffix(']'))
            .unwrap_or(field);
        self.fields
            .iter()
            .position(|f| f.eq_ignore_ascii_case(field))
    }
}

/// `Doc.GetLocaleInfo`: the en-US locale every sample app was "reloaded" with.
pub(crate) fn locale_info() -> Value {
    json!({
        "qDecimalSep": ".",
        "qThousandSep": ",",
        "qListSep": ",",
        "qMoneyDecimalSep": ".",
        "qMoneyThousandSep": ",",
        "qCurrentYear": 2026,
        "qMoneyFmt": "$#,##0.00;-$#,##0.00",
        "qTimeFmt": "h:mm:ss TT",
        "qDateFmt": "M/D/YYYY",
        "qTimestampFmt": "M/D/YYYY h:mm:ss[.fff] TT",
        "qCalendarStrings": {
            "qDayNames": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
            "qMonthNames": ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"],
            "qLongDayNames": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
            "qLongMonthNames": ["January", "February", "March", "April", "May", "June", "July",
                "August", "September", "October", "November", "December"]
        },
        "qFirstWeekDay": 6,
        "qBrokenWeeks": true,
        "qReferenceDay": 0,
        "qFirstMonthOfYear": 1,
        "qCollation": "en-US",
        "qNumericalAbbreviation": "3:k;6:M;9:G;12:T;15:P;18:E;21:Z;24:Y;-3:m;-6:μ;-9:n;-12:p;-15:f;-18:a;-21:z;-24:y"
    })
}

/// A requested data page.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Area {
    left: usize,
    top: usize,
    width: usize,
    height: usize,
}

impl Area {
    /// Parses `{"qLeft","qTop","qWidth","qHeight"}` (missing numbers are 0).
    pub fn from_json(v: &Value) -> Area {
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
        Area {
            left: n("qLeft"),
            top: n("qTop"),
            width: n("qWidth"),
            height: n("qHeight"),
        }
    }

    /// This area clipped to a `width` × `height` matrix: `(left, top, width, height)`.
    pub fn clamp(&self, width: usize, height: usize) -> (usize, usize, usize, usize) {
        let top = self.top.min(height);
        let left = self.left.min(width);
        (
            left,
            top,
            self.width.min(width - left),
            self.height.min(height - top),
        )
    }

    /// Parses a list of areas.
    pub fn list(v: Option<&Value>) -> Vec<Area> {
        v.and_then(Value::as_array)
            .map(|l| l.iter().map(Area::from_json).collect())
            .unwrap_or_default()
    }
}

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

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        // 12.0 reads "12", as in Qlik; 5.5 reads "5.5".
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => (f as i64).to_string(),
            (None, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
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
    pub fn evaluate(
        app: &App,
        def: &Value,
        tick: u64,
        sel: &Selections,
        rows: &Selections,
    ) -> Cube {
        let dims = dimension_fields(def);
        let measures: Vec<(String, Expr)> = def
            .get("qMeasures")
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
            .unwrap_or_default();

        let dim_cols: Vec<Option<usize>> = dims.iter().map(|d| app.column(d)).collect();
        let states: Vec<Vec<State>> = dim_cols
            .iter()
            .map(|c| c.map(|c| sel.states(app, c)).unwrap_or_default())
            .collect();
        let possible = rows.possible_rows(app, None);
        // Groups of possible rows (a symbol per dimension, `None` for an unknown field), in
        // load order of their first row.
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
    pub fn page(&self, area: Area) -> Value {
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
    pub fn layout(&self, fetch: &[Area]) -> Value {
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

/// A generic object's layout: its properties with every `qHyperCubeDef`, `qListObjectDef`
/// and `qSelectionObjectDef` (at any depth) replaced by `qHyperCube`, `qListObject` and
/// `qSelectionObject`, evaluated under `sel`; hypercubes count the rows of `rows` (see
/// [`Cube::evaluate`]), `sel`'s when `None`.
pub(crate) fn object_layout(
    app: &App,
    props: &Value,
    tick: u64,
    sel: &Selections,
    rows: Option<&Selections>,
) -> Value {
    let mut layout = evaluate_defs(app, props, tick, sel, rows.unwrap_or(sel));
    if let Value::Object(map) = &mut layout {
        map.insert("qSelectionInfo".into(), json!({}));
    }
    layout
}

fn evaluate_defs(app: &App, v: &Value, tick: u64, sel: &Selections, rows: &Selections) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let fetch = || Area::list(v.get("qInitialDataFetch"));
                match k.as_str() {
                    "qHyperCubeDef" => {
                        let cube = Cube::evaluate(app, v, tick, sel, rows);
                        out.insert("qHyperCube".into(), cube.layout(&fetch()));
                    }
                    "qListObjectDef" => {
                        let list = ListObject::evaluate(app, v, sel);
                        out.insert("qListObject".into(), list.layout(app, &fetch()));
                    }
                    "qSelectionObjectDef" => {
                        out.insert("qSelectionObject".into(), selection_object(app, sel));
                    }
                    _ => {
                        out.insert(k.clone(), evaluate_defs(app, v, tick, sel, rows));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(list) => Value::Array(
            list.iter()
                .map(|v| evaluate_defs(app, v, tick, sel, rows))
                .collect(),
        ),
        other => other.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sales_cube() {
        let app = sales();
        let props = app.object("sales-by-region").unwrap_or_default();
        let none = Selections::default();
        let a = object_layout(&app, &props, 1, &none, None);
        let b = object_layout(&app, &props, 2, &none, None);
        assert_eq!(a["qHyperCube"]["qSize"], json!({"qcx": 3, "qcy": 4}));
        let m = &a["qHyperCube"]["qDataPages"][0]["qMatrix"];
        assert_eq!(m[0][0]["qText"], "North");
        assert_eq!(m[0][1]["qNum"], json!(1500.0));
        assert_ne!(m[0][2], b["qHyperCube"]["qDataPages"][0]["qMatrix"][0][2]);
        assert!(is_live(&props));
        let page = Cube::evaluate(&app, &props["qHyperCubeDef"], 0, &none, &none).page(Area {
            left: 1,
            top: 3,
            width: 9,
            height: 9,
        });
        assert_eq!(
            page["qArea"],
            json!({"qLeft":1,"qTop":3,"qWidth":2,"qHeight":1})
        );
    }
}
