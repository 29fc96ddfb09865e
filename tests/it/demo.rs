//! `qlik-gateway demo`: one command gives a working gateway, simulated Qlik and a live page.

use crate::common;
use futures_util::{SinkExt, StreamExt};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::{self, Message};

#[tokio::test]
async fn demo_serves_the_page_and_live_engine_data() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_qlik-gateway"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the demo");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("demo exited before it was ready");
        if let Some(rest) = line.trim().strip_prefix("open ") {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_string();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let c = common::http_client();
    let first = c
        .get(format!("{url}/"))
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 302);
    let login = c
        .get(format!("{url}/_gateway/login?return_to=/"))
        .send()
        .await
        .unwrap();
    let cookie = common::cookie_from(&login).unwrap();
    let page = c
        .get(format!("{url}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("/_gateway/me") && page.contains("\"/mashup\""),
        "the built-in page"
    );

    let addr = url.trim_start_matches("http://");
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{addr}/mashup/app/"
    ))
    .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut().insert("origin", url.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("engine websocket");
    ws.send(Message::text(
        r#"{"jsonrpc":"2.0","id":1,"handle":-1,"method":"GetDocList","params":[]}"#,
    ))
    .await
    .unwrap();
    let docs = loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("socket closed")
        };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
        if v["id"] == 1 {
            break v;
        }
        assert_ne!(v["params"]["mustAuthenticate"], true, "{v}");
    };
    assert!(
        docs["result"]["qDocList"]
            .as_array()
            .is_some_and(|d| !d.is_empty()),
        "{docs}"
    );
    drop(ws);

    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("demo stops")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
