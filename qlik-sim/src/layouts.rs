//! Generic objects' layouts: their properties with the definitions in them evaluated.

use crate::apps::App;
use crate::hypercube::Cube;
use crate::pages::Area;
use crate::selections::{selection_object, ListObject, Selections};
use serde_json::{json, Map, Value};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps;
    use crate::hypercube::is_live;

    #[test]
    fn sales_cube() {
        let app = apps::find("Sales").expect("sales");
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
        let page = Cube::evaluate(&app, &props["qHyperCubeDef"], 0, &none, &none).page(
            Area::from_json(&json!({"qLeft": 1, "qTop": 3, "qWidth": 9, "qHeight": 9})),
        );
        assert_eq!(
            page["qArea"],
            json!({"qLeft":1,"qTop":3,"qWidth":2,"qHeight":1})
        );
    }
}
