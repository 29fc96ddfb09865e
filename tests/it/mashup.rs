//! The mashup behind the gateway: a built directory, or a dev server with its HMR websocket.

use crate::common::*;

use axum::extract::ws::{Message as AxMessage, WebSocketUpgrade};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{self, Message};

#[tokio::test]
async fn built_mashup_is_served_behind_the_login_with_spa_fallback() {
    let dist = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dist.path().join("assets")).unwrap();
    std::fs::write(
        dist.path().join("index.html"),
        "<!doctype html><div id=root></div>",
    )
    .unwrap();
    std::fs::write(
        dist.path().join("assets/index-BX3k2a9f.js"),
        "console.log(1)",
    )
    .unwrap();
    let env = Env::with(Setup {
        mashup: format!("dir = \"{}\"", dist.path().display()),
        ..Default::default()
    })
    .await;
    let c = http_client();
    let anon = c
        .get(format!("{}/", env.url))
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 302, "the mashup is protected by default");

    let cookie = env.login().await;
    let nav = |path: &str| {
        c.get(format!("{}{}", env.url, path))
            .header("cookie", &cookie)
            .header("sec-fetch-mode", "navigate")
            .header("accept", "text/html")
            .send()
    };
    let index = nav("/").await.unwrap();
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["cache-control"], "no-cache");
    assert!(index.text().await.unwrap().contains("id=root"));
    let deep = nav("/reports/2026/q3").await.unwrap();
    assert_eq!(deep.status(), 200, "client-side routes get index.html");
    let js = env.get("/assets/index-BX3k2a9f.js", &cookie).await;
    assert_eq!(js.status(), 200);
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    assert!(js.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    assert_eq!(env.get("/assets/missing.js", &cookie).await.status(), 404);
    env.stop().await;
}

/// A stand-in for Vite's dev server: a page and an HMR websocket that speaks `vite-hmr`.
async fn dev_server() -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route(
            "/",
            get(|| async {
                axum::response::Html(
                    "<!doctype html><script type=module src=/@vite/client></script>",
                )
            }),
        )
        .route(
            "/hmr",
            get(
                |ws: WebSocketUpgrade, headers: http::HeaderMap| async move {
                    let cookie = headers
                        .get("cookie")
                        .map(|v| v.to_str().unwrap_or("").to_string())
                        .unwrap_or_default();
                    ws.protocols(["vite-hmr"])
                        .on_upgrade(move |mut socket| async move {
                            // Tell the client which cookies reached the dev server, then echo.
                            let _ = socket
                                .send(AxMessage::Text(
                                    format!("{{\"type\":\"connected\",\"cookie\":{cookie:?}}}")
                                        .into(),
                                ))
                                .await;
                            while let Some(Ok(m)) = socket.recv().await {
                                if socket.send(m).await.is_err() {
                                    break;
                                }
                            }
                        })
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let h = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, h)
}

#[tokio::test]
async fn dev_server_and_its_hmr_websocket_are_proxied() {
    let (dev, handle) = dev_server().await;
    let env = Env::with(Setup {
        mashup: format!("upstream = \"{dev}\""),
        ..Default::default()
    })
    .await;
    let cookie = env.login().await;
    let page = env.get("/", &cookie).await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("/@vite/client"));

    let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/hmr",
        env.addr
    ))
    .unwrap();
    req.headers_mut()
        .insert("cookie", format!("{cookie}; theme=dark").parse().unwrap());
    req.headers_mut().insert("origin", env.url.parse().unwrap());
    req.headers_mut()
        .insert("sec-websocket-protocol", "vite-hmr".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("HMR websocket through the gateway");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "vite-hmr");
    let hello = match ws.next().await {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(hello.contains("theme=dark"), "{hello}");
    assert!(
        !hello.contains("qlik-gateway="),
        "the gateway cookie never reaches the dev server: {hello}"
    );
    ws.send(Message::text("{\"type\":\"update\"}"))
        .await
        .unwrap();
    match ws.next().await {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "{\"type\":\"update\"}"),
        other => panic!("{other:?}"),
    }
    ws.close(None).await.unwrap();
    env.stop().await;
    handle.abort();
}
