//! The sample apps the simulated engine serves: their data tables, field values and objects.

use serde_json::{json, Value};

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
    pub(crate) fn doc_entry(&self) -> Value {
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
    pub(crate) fn layout(&self) -> Value {
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
    pub(crate) fn properties(&self) -> Value {
        json!({
            "qTitle": self.title,
            "qLastReloadTime": "2026-01-01T00:00:00.000Z",
            "qMigrationHash": "",
            "qSavedInProductVersion": "12.2027.0",
            "qThumbnail": {"qUrl": ""}
        })
    }

    /// The properties of the sample object `id`.
    pub(crate) fn object(&self, id: &str) -> Option<Value> {
        self.objects
            .iter()
            .find(|o| o.pointer("/qInfo/qId").and_then(Value::as_str) == Some(id))
            .cloned()
    }

    /// The column of `field` (case-insensitive, brackets allowed: `[Region]`).
    pub(crate) fn column(&self, field: &str) -> Option<usize> {
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
