//! Selections in the simulated engine over a real websocket: `Doc.GetField` / `ClearAll`,
//! `Field.Select` / `SelectValues` / `ToggleSelect` / `Clear` / `Lock`,
//! `GenericObject.SelectHyperCubeValues` / `SelectListObjectValues` / `ClearSelections`; the
//! hypercubes, list objects and current-selections objects they change, the `change` arrays,
//! the pushes to the engine session's other sockets, and the errors; selection mode
//! (`BeginSelections` / `EndSelections` / `ResetMadeSelections`, `Doc.AbortModal`) and the
//! property calls nebula.js charts make.

use crate::common::*;
use futures_util::SinkExt;
use qlik_sim::SALES_APP_ID;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A socket of a fresh session of `user` with the Sales app open (greeting consumed).
async fn sales_socket(sim: &TestSim, user: &str) -> (String, Ws) {
    let (sid, mut ws) = open_engine(sim, user, SALES_APP_ID).await;
    next_json(&mut ws).await;
    next_json(&mut ws).await;
    let v = call(&mut ws, 1, -1, "OpenDoc", json!([SALES_APP_ID])).await;
    assert_eq!(v["result"]["qReturn"]["qHandle"], 1, "{v}");
    (sid, ws)
}

/// Another socket on the session `sid` (attached to its engine session).
async fn attach(sim: &TestSim, sid: &str) -> Ws {
    let cookie = cookie(sim, sid);
    let token = csrf_token(sim, &cookie).await;
    let mut ws = ws_connect(
        sim,
        &format!("/mashup/app/{SALES_APP_ID}?qlik-csrf-token={token}"),
        Some(&sim.proxy_url()),
        Some(&cookie),
    )
    .await
    .expect("upgrade");
    next_json(&mut ws).await;
    assert_eq!(
        next_json(&mut ws).await["params"]["qSessionState"],
        "SESSION_ATTACHED"
    );
    ws
}

fn cube(dim: &str, measure: &str) -> Value {
    json!({"qInfo": {"qType": "sel-test"}, "qHyperCubeDef": {
        "qDimensions": [{"qDef": {"qFieldDefs": [dim]}}],
        "qMeasures": [{"qDef": {"qDef": measure}}],
        "qInitialDataFetch": [{"qLeft": 0, "qTop": 0, "qWidth": 2, "qHeight": 50}]}})
}

async fn session_object(ws: &mut Ws, id: u64, props: Value) -> i64 {
    let v = call(ws, id, 1, "CreateSessionObject", json!([props])).await;
    v["result"]["qReturn"]["qHandle"]
        .as_i64()
        .unwrap_or_else(|| panic!("a handle: {v}"))
}

async fn layout(ws: &mut Ws, id: u64, handle: i64) -> Value {
    let v = call(ws, id, handle, "GetLayout", json!([])).await;
    v["result"]["qLayout"].clone()
}

/// (text, number, state) of each row of a cube's first page.
fn rows(layout: &Value) -> Vec<(String, f64, String)> {
    layout["qHyperCube"]["qDataPages"][0]["qMatrix"]
        .as_array()
        .expect("matrix")
        .iter()
        .map(|r| {
            (
                r[0]["qText"].as_str().expect("text").to_string(),
                r[1]["qNum"].as_f64().expect("num"),
                r[0]["qState"].as_str().expect("state").to_string(),
            )
        })
        .collect()
}

fn row(text: &str, n: f64, state: &str) -> (String, f64, String) {
    (text.to_string(), n, state.to_string())
}

#[tokio::test]
async fn field_selections_filter_every_hypercube_and_list_the_changed_handles() {
    let sim = start_default().await;
    let (_sid, mut ws) = sales_socket(&sim, "alice").await;
    let by_region = session_object(&mut ws, 2, cube("Region", "Sum(Sales)")).await;
    let by_product = session_object(&mut ws, 3, cube("Product", "Sum(Sales)")).await;
    let l = layout(&mut ws, 4, by_region).await;
    assert_eq!(
        rows(&l),
        [
            row("North", 1500.0, "O"),
            row("South", 1350.0, "O"),
            row("East", 1700.0, "O"),
            row("West", 1050.0, "O")
        ]
    );
    assert_eq!(
        l["qHyperCube"]["qDimensionInfo"][0]["qStateCounts"]["qOption"],
        4
    );

    let v = call(&mut ws, 5, 1, "GetField", json!(["Region"])).await;
    assert_eq!(v["result"]["qReturn"]["qType"], "Field", "{v}");
    let region = v["result"]["qReturn"]["qHandle"].as_i64().expect("handle");
    let v = call(&mut ws, 6, 1, "GetField", json!({"qFieldName": "region"})).await;
    assert_eq!(
        v["result"]["qReturn"]["qHandle"], region,
        "one handle per field, names case-insensitive"
    );
    let v = call(&mut ws, 7, region, "GetCardinal", json!([])).await;
    assert_eq!(v["result"]["qReturn"], 4);

    // Select: the doc and both open objects changed.
    let v = call(&mut ws, 8, region, "Select", json!(["North"])).await;
    assert_eq!(v["result"], json!({"qReturn": true}));
    assert_eq!(v["change"], json!([1, by_region, by_product]));
    let l = layout(&mut ws, 9, by_region).await;
    assert_eq!(rows(&l), [row("North", 1500.0, "S")]);
    let cube_info = &l["qHyperCube"];
    assert_eq!(cube_info["qSize"], json!({"qcx": 2, "qcy": 1}));
    assert_eq!(
        cube_info["qDimensionInfo"][0]["qStateCounts"],
        json!({"qLocked": 0, "qSelected": 1, "qOption": 0, "qDeselected": 0,
               "qAlternative": 3, "qExcluded": 0, "qSelectedExcluded": 0, "qLockedExcluded": 0})
    );
    assert_eq!(cube_info["qDimensionInfo"][0]["qCardinal"], 4);
    assert_eq!(cube_info["qMeasureInfo"][0]["qMax"], 1500.0);
    // The other cube: North sells bikes and helmets, no gloves.
    let l = layout(&mut ws, 10, by_product).await;
    assert_eq!(
        rows(&l),
        [row("Bikes", 1200.0, "O"), row("Helmets", 300.0, "O")]
    );
    let v = call(
        &mut ws,
        11,
        by_product,
        "GetHyperCubeData",
        json!(["/qHyperCubeDef", [{"qLeft": 0, "qTop": 0, "qWidth": 2, "qHeight": 9}]]),
    )
    .await;
    assert_eq!(
        v["result"]["qDataPages"][0]["qArea"],
        json!({"qLeft": 0, "qTop": 0, "qWidth": 2, "qHeight": 2})
    );

    // The same selection again: accepted, nothing changed, no `change`.
    let v = call(&mut ws, 12, region, "Select", json!(["north", false, 0])).await;
    assert_eq!(v["result"]["qReturn"], true);
    assert!(v.get("change").is_none(), "{v}");
    // No match: refused, the selection stays.
    let v = call(&mut ws, 13, region, "Select", json!(["Atlantis"])).await;
    assert_eq!(v["result"]["qReturn"], false);
    assert!(v.get("change").is_none(), "{v}");

    // SelectValues in toggle mode adds South; ToggleSelect takes North out again.
    let v = call(
        &mut ws,
        14,
        region,
        "SelectValues",
        json!([[{"qText": "South"}], true, false]),
    )
    .await;
    assert_eq!(v["result"]["qReturn"], true);
    assert_eq!(v["change"], json!([1, by_region, by_product]));
    assert_eq!(
        rows(&layout(&mut ws, 15, by_region).await),
        [row("North", 1500.0, "S"), row("South", 1350.0, "S")]
    );
    let v = call(&mut ws, 16, region, "ToggleSelect", json!(["North"])).await;
    assert_eq!(v["result"]["qReturn"], true);
    assert_eq!(
        rows(&layout(&mut ws, 17, by_region).await),
        [row("South", 1350.0, "S")]
    );
    // Wildcards, and a numeric search in another field: both fields filter.
    let v = call(&mut ws, 18, region, "Select", json!(["*st"])).await;
    assert_eq!(v["result"]["qReturn"], true);
    let v = call(&mut ws, 19, 1, "GetField", json!(["Sales"])).await;
    let sales = v["result"]["qReturn"]["qHandle"].as_i64().expect("handle");
    let v = call(&mut ws, 20, sales, "Select", json!([">=700"])).await;
    assert_eq!(v["result"]["qReturn"], true);
    assert_eq!(
        rows(&layout(&mut ws, 21, by_region).await),
        [row("East", 1500.0, "S"), row("West", 700.0, "S")]
    );

    // Field.Clear, then Doc.ClearAll: everything back.
    let v = call(&mut ws, 22, sales, "Clear", json!([])).await;
    assert_eq!(v["result"]["qReturn"], true);
    let v = call(&mut ws, 23, 1, "ClearAll", json!([])).await;
    assert_eq!(v["result"], json!({}));
    assert_eq!(v["change"], json!([1, by_region, by_product]));
    assert_eq!(rows(&layout(&mut ws, 24, by_region).await).len(), 4);
    let v = call(&mut ws, 25, 1, "ClearAll", json!([false])).await;
    assert!(v.get("change").is_none(), "nothing to clear: {v}");
}

#[tokio::test]
async fn hypercube_and_list_object_selections_and_current_selections() {
    let sim = start_default().await;
    let (_sid, mut ws) = sales_socket(&sim, "alice").await;
    let by_product = session_object(&mut ws, 2, cube("Product", "Sum(Quantity)")).await;
    let by_region = session_object(&mut ws, 3, cube("Region", "Sum(Sales)")).await;
    let list = session_object(
        &mut ws,
        4,
        json!({"qInfo": {"qType": "filter"}, "qListObjectDef": {
            "qDef": {"qFieldDefs": ["Region"]},
            "qInitialDataFetch": [{"qLeft": 0, "qTop": 0, "qWidth": 1, "qHeight": 10}]}}),
    )
    .await;
    let current = session_object(
        &mut ws,
        5,
        json!({"qInfo": {"qType": "current-selections"}, "qSelectionObjectDef": {}}),
    )
    .await;
    let l = layout(&mut ws, 6, current).await;
    assert_eq!(l["qSelectionObject"]["qSelections"], json!([]));
    let l = layout(&mut ws, 7, by_product).await;
    // qElemNumber: Bikes 0, Helmets 1, Gloves 2.
    assert_eq!(
        l["qHyperCube"]["qDataPages"][0]["qMatrix"][1][0]["qText"],
        "Helmets"
    );
    assert_eq!(
        l["qHyperCube"]["qDataPages"][0]["qMatrix"][1][0]["qElemNumber"],
        1
    );

    // Click "Helmets" in the product chart.
    let v = call(
        &mut ws,
        8,
        by_product,
        "SelectHyperCubeValues",
        json!(["/qHyperCubeDef", 0, [1], false]),
    )
    .await;
    assert_eq!(v["result"], json!({"qSuccess": true}), "{v}");
    assert_eq!(
        v["change"],
        json!([1, by_product, by_region, list, current])
    );
    assert_eq!(
        rows(&layout(&mut ws, 9, by_product).await),
        [row("Helmets", 55.0, "S")]
    );
    assert_eq!(
        rows(&layout(&mut ws, 10, by_region).await),
        [row("North", 300.0, "O"), row("South", 450.0, "O")]
    );
    let l = layout(&mut ws, 11, list).await;
    let states: Vec<&str> = l["qListObject"]["qDataPages"][0]["qMatrix"]
        .as_array()
        .expect("matrix")
        .iter()
        .map(|r| r[0]["qState"].as_str().expect("state"))
        .collect();
    assert_eq!(states, ["O", "O", "X", "X"]);
    assert_eq!(l["qListObject"]["qSize"], json!({"qcx": 1, "qcy": 4}));
    let l = layout(&mut ws, 12, current).await;
    let items = &l["qSelectionObject"]["qSelections"];
    assert_eq!(items.as_array().map(Vec::len), Some(1));
    assert_eq!(items[0]["qField"], "Product");
    assert_eq!(items[0]["qSelected"], "Helmets");
    assert_eq!(items[0]["qSelectedCount"], 1);
    assert_eq!(items[0]["qTotal"], 3);

    // Select "South" in the list: both fields now filter.
    let v = call(
        &mut ws,
        13,
        list,
        "SelectListObjectValues",
        json!(["/qListObjectDef", [1], false, false]),
    )
    .await;
    assert_eq!(v["result"]["qSuccess"], true);
    assert_eq!(
        rows(&layout(&mut ws, 14, by_region).await),
        [row("South", 450.0, "S")]
    );
    let l = layout(&mut ws, 15, current).await;
    let fields: Vec<&str> = l["qSelectionObject"]["qSelections"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["qField"].as_str().expect("field"))
        .collect();
    assert_eq!(fields, ["Region", "Product"]);
    let l = layout(&mut ws, 16, list).await;
    let states: Vec<&str> = l["qListObject"]["qDataPages"][0]["qMatrix"]
        .as_array()
        .expect("matrix")
        .iter()
        .map(|r| r[0]["qState"].as_str().expect("state"))
        .collect();
    assert_eq!(states, ["A", "S", "X", "X"]);

    // Toggle mode adds to the product selection; unknown element numbers are ignored.
    let v = call(
        &mut ws,
        17,
        by_product,
        "SelectHyperCubeValues",
        json!({"qPath": "/qHyperCubeDef", "qDimNo": 0, "qValues": [0, 99], "qToggleMode": true}),
    )
    .await;
    assert_eq!(v["result"]["qSuccess"], true);
    assert_eq!(
        rows(&layout(&mut ws, 18, by_product).await),
        [row("Bikes", 8.0, "S"), row("Helmets", 30.0, "S")]
    );

    // ClearSelections on the product chart clears Product only.
    let v = call(
        &mut ws,
        19,
        by_product,
        "ClearSelections",
        json!(["/qHyperCubeDef"]),
    )
    .await;
    assert_eq!(v["result"], json!({}));
    assert_eq!(
        rows(&layout(&mut ws, 20, by_region).await),
        [row("South", 1350.0, "S")]
    );
    let v = call(
        &mut ws,
        21,
        list,
        "ClearSelections",
        json!(["/qListObjectDef"]),
    )
    .await;
    assert!(v.get("error").is_none(), "{v}");
    assert_eq!(rows(&layout(&mut ws, 22, by_region).await).len(), 4);
}

#[tokio::test]
async fn locks_soft_locks_and_clear_all_locked_also() {
    let sim = start_default().await;
    let (_sid, mut ws) = sales_socket(&sim, "alice").await;
    let by_region = session_object(&mut ws, 2, cube("Region", "Sum(Sales)")).await;
    let v = call(&mut ws, 3, 1, "GetField", json!(["Region"])).await;
    let region = v["result"]["qReturn"]["qHandle"].as_i64().expect("handle");
    call(&mut ws, 4, region, "Select", json!(["East"])).await;
    let v = call(&mut ws, 5, region, "Lock", json!([])).await;
    assert_eq!(v["result"]["qReturn"], true);
    let l = layout(&mut ws, 6, by_region).await;
    assert_eq!(rows(&l), [row("East", 1700.0, "L")]);
    assert_eq!(l["qHyperCube"]["qDimensionInfo"][0]["qLocked"], true);

    let v = call(&mut ws, 7, region, "Select", json!(["West"])).await;
    assert_eq!(v["result"]["qReturn"], false, "locked");
    let v = call(&mut ws, 8, region, "Clear", json!([])).await;
    assert_eq!(v["result"]["qReturn"], false, "locked");
    let v = call(&mut ws, 9, 1, "ClearAll", json!([])).await;
    assert!(v.get("change").is_none(), "a locked field stays: {v}");
    assert_eq!(rows(&layout(&mut ws, 10, by_region).await).len(), 1);
    // qSoftLock ignores the lock.
    let v = call(&mut ws, 11, region, "Select", json!(["West", true])).await;
    assert_eq!(v["result"]["qReturn"], true);
    assert_eq!(
        rows(&layout(&mut ws, 12, by_region).await),
        [row("West", 1050.0, "L")]
    );
    let v = call(&mut ws, 13, 1, "ClearAll", json!([true])).await;
    assert_eq!(v["change"], json!([1, by_region]));
    let v = call(&mut ws, 14, region, "Select", json!(["North"])).await;
    assert_eq!(v["result"]["qReturn"], true, "unlocked by ClearAll(true)");
}

#[tokio::test]
async fn selection_errors_are_qlik_errors() {
    let sim = start_default().await;
    let (_sid, mut ws) = sales_socket(&sim, "alice").await;
    let by_region = session_object(&mut ws, 2, cube("Region", "Sum(Sales)")).await;
    let v = call(&mut ws, 3, 1, "GetField", json!(["Nope"])).await;
    assert_eq!(v["error"]["code"], 2, "{v}");
    assert_eq!(v["error"]["parameter"], "Nope");
    for (id, params) in [
        (4, json!([])),
        (5, json!([42])),
        (6, json!({"qField": "Region"})),
    ] {
        let v = call(&mut ws, id, 1, "GetField", params).await;
        assert_eq!(v["error"]["code"], -32602, "{v}");
    }
    let v = call(&mut ws, 7, 1, "GetField", json!(["Region", "Alt"])).await;
    assert_eq!(v["error"]["code"], 2, "no alternate states: {v}");
    let v = call(&mut ws, 8, 1, "ClearAll", json!(["yes"])).await;
    assert_eq!(v["error"]["code"], -32602, "{v}");

    let v = call(&mut ws, 9, 1, "GetField", json!(["Region"])).await;
    let region = v["result"]["qReturn"]["qHandle"].as_i64().expect("handle");
    for (id, method, params) in [
        (10, "Select", json!([])),
        (11, "Select", json!([7])),
        (12, "Select", json!(["North", "soft"])),
        (13, "SelectValues", json!(["North"])),
        (14, "LowLevelSelect", json!([["a"], false])),
    ] {
        let v = call(&mut ws, id, region, method, params).await;
        assert_eq!(v["error"]["code"], -32602, "{method}: {v}");
    }
    let v = call(&mut ws, 15, region, "GetLayout", json!([])).await;
    assert_eq!(v["error"]["code"], -32601, "a field has no layout: {v}");

    for (id, params) in [
        (16, json!(["/qHyperCubeDef", 1, [0], false])),
        (17, json!(["/qHyperCubeDef", 0, "0", false])),
        (18, json!(["/qHyperCubeDef", 0, [0], "no"])),
    ] {
        let v = call(&mut ws, id, by_region, "SelectHyperCubeValues", params).await;
        assert_eq!(v["error"]["code"], -32602, "{v}");
    }
    let v = call(
        &mut ws,
        19,
        by_region,
        "SelectHyperCubeValues",
        json!(["/qListObjectDef", 0, [0], false]),
    )
    .await;
    assert_eq!(v["error"]["code"], 2, "{v}");
    let v = call(
        &mut ws,
        20,
        by_region,
        "SelectListObjectValues",
        json!(["/qListObjectDef", [0], false]),
    )
    .await;
    assert_eq!(v["error"]["code"], 2, "a cube is no list: {v}");
    // None of that selected anything.
    assert_eq!(rows(&layout(&mut ws, 21, by_region).await).len(), 4);
}

#[tokio::test]
async fn selections_belong_to_the_engine_session_and_reach_its_other_sockets() {
    let sim = start_default().await;
    let (sid, mut first) = sales_socket(&sim, "alice").await;
    let by_region = session_object(&mut first, 2, cube("Region", "Sum(Sales)")).await;
    layout(&mut first, 3, by_region).await;
    let mut second = attach(&sim, &sid).await;
    let (_, mut other_user) = sales_socket(&sim, "bob").await;
    let theirs = session_object(&mut other_user, 2, cube("Region", "Sum(Sales)")).await;

    let v = call(&mut first, 4, 1, "GetField", json!(["Region"])).await;
    let region = v["result"]["qReturn"]["qHandle"].as_i64().expect("handle");
    let v = call(&mut first, 5, region, "Select", json!(["West"])).await;
    assert_eq!(v["change"], json!([1, by_region]));
    // The attached socket hears of it unasked, as on Qlik, and sees the same state.
    assert_eq!(
        next_json(&mut second).await,
        json!({"jsonrpc": "2.0", "change": [1, by_region]})
    );
    assert_eq!(
        rows(&layout(&mut second, 1, by_region).await),
        [row("West", 1050.0, "S")]
    );
    // Another session: its own selections (none), and no push.
    let req =
        json!({"jsonrpc": "2.0", "id": 3, "method": "GetLayout", "handle": theirs, "params": []});
    other_user
        .send(Message::Text(req.to_string().into()))
        .await
        .expect("send");
    let v = next_json(&mut other_user).await;
    assert_eq!(v["id"], 3, "the reply comes first, no change pushed: {v}");
    assert_eq!(rows(&v["result"]["qLayout"]).len(), 4);

    // A change made on the second socket reaches the first.
    let v = call(&mut second, 2, 1, "ClearAll", json!([])).await;
    assert_eq!(v["change"], json!([1, by_region]));
    assert_eq!(
        next_json(&mut first).await,
        json!({"jsonrpc": "2.0", "change": [1, by_region]})
    );

    // The session ends: a new one starts without selections.
    let v = call(&mut first, 6, region, "Select", json!(["West"])).await;
    assert_eq!(v["result"]["qReturn"], true);
    sim.control().expire_all_sessions();
    let (_, mut fresh) = sales_socket(&sim, "alice").await;
    let h = session_object(&mut fresh, 2, cube("Region", "Sum(Sales)")).await;
    assert_eq!(rows(&layout(&mut fresh, 3, h).await).len(), 4);
}

/// The selected values of `field` in every engine session, as the control API shows them.
fn selected_in(sim: &TestSim, field: &str) -> Vec<Vec<String>> {
    sim.control()
        .selections()
        .into_iter()
        .filter_map(|s| s.fields.get(field).cloned())
        .collect()
}

#[tokio::test]
async fn selection_mode_keeps_the_objects_rows_until_the_selection_ends() {
    let sim = start_default().await;
    let (_sid, mut ws) = sales_socket(&sim, "alice").await;
    let by_region = session_object(&mut ws, 2, cube("Region", "Sum(Sales)")).await;
    let by_product = session_object(&mut ws, 3, cube("Product", "Sum(Sales)")).await;
    let in_selection = |l: &Value| l["qSelectionInfo"].clone();

    // A click on a bar, as nebula.js does it: BeginSelections, then a toggling selection.
    let v = call(
        &mut ws,
        4,
        by_region,
        "BeginSelections",
        json!([["/qHyperCubeDef"]]),
    )
    .await;
    assert_eq!(v["result"], json!({}), "{v}");
    assert_eq!(v["change"], json!([by_region]));
    let v = call(
        &mut ws,
        5,
        by_region,
        "SelectHyperCubeValues",
        json!(["/qHyperCubeDef", 0, [0], true]),
    )
    .await;
    assert_eq!(v["result"], json!({"qSuccess": true}));
    assert_eq!(v["change"], json!([1, by_region, by_product]));
    assert_eq!(selected_in(&sim, "Region"), [vec!["North".to_string()]]);
    // The object being selected in still shows every region, North selected, the others
    // alternative; the other object is filtered already.
    let l = layout(&mut ws, 6, by_region).await;
    assert_eq!(
        rows(&l),
        [
            row("North", 1500.0, "S"),
            row("South", 1350.0, "A"),
            row("East", 1700.0, "A"),
            row("West", 1050.0, "A")
        ]
    );
    assert_eq!(
        in_selection(&l),
        json!({"qInSelections": true, "qMadeSelections": true})
    );
    let l = layout(&mut ws, 7, by_product).await;
    assert_eq!(rows(&l).len(), 2, "Bikes and Helmets in North");
    assert_eq!(in_selection(&l), json!({}));
    let v = call(
        &mut ws,
        8,
        by_region,
        "GetHyperCubeData",
        json!(["/qHyperCubeDef", [{"qLeft": 0, "qTop": 0, "qWidth": 2, "qHeight": 9}]]),
    )
    .await;
    assert_eq!(v["result"]["qDataPages"][0]["qMatrix"][3][0]["qState"], "A");

    // Cancel (the toolbar's ✕): back to no selection.
    let v = call(&mut ws, 9, by_region, "EndSelections", json!([false])).await;
    assert_eq!(v["change"], json!([1, by_region, by_product]));
    assert!(selected_in(&sim, "Region").is_empty());
    let l = layout(&mut ws, 10, by_region).await;
    assert_eq!(rows(&l)[0], row("North", 1500.0, "O"));
    assert_eq!(in_selection(&l), json!({}));

    // ResetMadeSelections undoes the clicks but stays in selection mode.
    call(
        &mut ws,
        11,
        by_region,
        "BeginSelections",
        json!({"qPaths": ["/qHyperCubeDef"]}),
    )
    .await;
    call(
        &mut ws,
        12,
        by_region,
        "SelectHyperCubeValues",
        json!(["/qHyperCubeDef", 0, [1], true]),
    )
    .await;
    let v = call(&mut ws, 13, by_region, "ResetMadeSelections", json!([])).await;
    assert_eq!(v["change"], json!([1, by_region, by_product]));
    assert_eq!(
        in_selection(&layout(&mut ws, 14, by_region).await),
        json!({"qInSelections": true, "qMadeSelections": false})
    );

    // Confirm (✓): the selection stays and the object now shows the selected rows only.
    call(
        &mut ws,
        15,
        by_region,
        "SelectHyperCubeValues",
        json!(["/qHyperCubeDef", 0, [1, 2], true]),
    )
    .await;
    let v = call(
        &mut ws,
        16,
        by_region,
        "EndSelections",
        json!({"qAccept": true}),
    )
    .await;
    assert_eq!(v["change"], json!([by_region]));
    let l = layout(&mut ws, 17, by_region).await;
    assert_eq!(
        rows(&l),
        [row("South", 1350.0, "S"), row("East", 1700.0, "S")]
    );
    assert_eq!(in_selection(&l), json!({}));
    assert_eq!(
        selected_in(&sim, "Region"),
        [vec!["South".to_string(), "East".to_string()]]
    );

    // Doc.AbortModal(false) cancels whatever object is in selection mode.
    call(
        &mut ws,
        18,
        by_product,
        "BeginSelections",
        json!([["/qHyperCubeDef"]]),
    )
    .await;
    call(
        &mut ws,
        19,
        by_product,
        "SelectHyperCubeValues",
        json!(["/qHyperCubeDef", 0, [0], false]),
    )
    .await;
    assert_eq!(selected_in(&sim, "Product"), [vec!["Bikes".to_string()]]);
    let v = call(&mut ws, 20, 1, "AbortModal", json!([false])).await;
    assert!(
        v["change"]
            .as_array()
            .is_some_and(|c| c.contains(&json!(by_product))),
        "{v}"
    );
    assert!(selected_in(&sim, "Product").is_empty());
    assert_eq!(selected_in(&sim, "Region").len(), 1, "Region kept");
}

#[tokio::test]
async fn chart_properties_round_trip_and_reach_the_layout() {
    let sim = start_default().await;
    let (_sid, mut ws) = sales_socket(&sim, "alice").await;
    // A chart's own settings ride on its dimensions and measures (as sn-bar-chart's do).
    let mut props = cube("Region", "Sum(Sales)");
    props["qInfo"]["qId"] = json!("my-chart");
    props["qHyperCubeDef"]["qDimensions"][0]["qDef"]["cId"] = json!("dim1");
    props["qHyperCubeDef"]["qDimensions"][0]["othersLabel"] = json!("Others");
    props["qHyperCubeDef"]["qMeasures"][0]["qDef"]["cId"] = json!("m1");
    let h = session_object(&mut ws, 2, props.clone()).await;

    let l = layout(&mut ws, 3, h).await;
    let dim = &l["qHyperCube"]["qDimensionInfo"][0];
    assert_eq!(dim["cId"], "dim1");
    assert_eq!(dim["othersLabel"], "Others");
    assert_eq!(
        dim["qCardinalities"],
        json!({"qCardinal": 4, "qHypercubeCardinal": 4, "qAllValuesCardinal": -1})
    );
    assert_eq!(l["qHyperCube"]["qMeasureInfo"][0]["cId"], "m1");
    assert_eq!(
        l["qHyperCube"]["qMeasureInfo"][0]["qNumFormat"]["qType"],
        "U"
    );

    let v = call(&mut ws, 4, h, "GetEffectiveProperties", json!([])).await;
    assert_eq!(v["result"]["qProp"], props);
    let v = call(&mut ws, 5, 1, "GetObject", json!(["my-chart"])).await;
    assert_eq!(
        v["result"]["qReturn"]["qHandle"], h,
        "a session object by id: {v}"
    );

    // SetProperties: a new measure; the object changed. The same again changes nothing.
    let mut new = props.clone();
    new["qHyperCubeDef"]["qMeasures"][0]["qDef"]["qDef"] = json!("Sum(Quantity)");
    let v = call(&mut ws, 6, h, "SetProperties", json!([new])).await;
    assert_eq!(v["result"], json!({}), "{v}");
    assert_eq!(v["change"], json!([h]));
    let v = call(&mut ws, 7, h, "SetProperties", json!({"qProp": new})).await;
    assert!(v.get("change").is_none(), "{v}");
    assert_eq!(
        rows(&layout(&mut ws, 8, h).await)[0],
        row("North", 35.0, "O")
    );

    // ApplyPatches: replace a label (qValue is JSON text), add and remove a key.
    let patches = json!([
        {"qOp": "replace", "qPath": "/qHyperCubeDef/qMeasures/0/qDef/qLabel", "qValue": "\"Units\""},
        {"qOp": "add", "qPath": "/color", "qValue": "{\"auto\": false}"},
        {"qOp": "remove", "qPath": "/qHyperCubeDef/qDimensions/0/othersLabel"}
    ]);
    let v = call(&mut ws, 9, h, "ApplyPatches", json!([patches, true])).await;
    assert_eq!(v["change"], json!([h]), "{v}");
    let l = layout(&mut ws, 10, h).await;
    assert_eq!(
        l["qHyperCube"]["qMeasureInfo"][0]["qFallbackTitle"],
        "Units"
    );
    assert_eq!(l["color"], json!({"auto": false}));
    assert!(l["qHyperCube"]["qDimensionInfo"][0]
        .get("othersLabel")
        .is_none());
    let bad = json!([{"qOp": "replace", "qPath": "/nowhere/x", "qValue": "1"}]);
    let v = call(&mut ws, 11, h, "ApplyPatches", json!([bad])).await;
    assert_eq!(v["error"]["code"], 2, "{v}");
    let v = call(&mut ws, 12, h, "GetFullPropertyTree", json!([])).await;
    assert_eq!(
        v["result"]["qPropEntry"]["qProperty"]["color"],
        json!({"auto": false})
    );

    // What nebula.js asks the doc.
    let v = call(&mut ws, 13, 1, "GetLocaleInfo", json!([])).await;
    assert_eq!(v["result"]["qReturn"]["qDecimalSep"], ".");
    let v = call(&mut ws, 14, 1, "GetAppProperties", json!([])).await;
    assert_eq!(v["result"]["qProp"]["qTitle"], "Sales");
}
