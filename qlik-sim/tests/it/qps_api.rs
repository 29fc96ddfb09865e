//! QPS API listener: mutual TLS, xrfkey, sessions, tickets, users, faults.

use crate::common::*;
use qlik_sim::{Casing, QpsFault, SimOptions};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn mutual_tls_is_required() {
    let sim = start_default().await;
    let url = format!(
        "{}/qps/mashup/user/DIR/alice?xrfkey={XRF}",
        sim.qps_api_url()
    );
    for cert in [ClientCert::None, ClientCert::Untrusted] {
        let result = qps_client(&sim, cert)
            .get(&url)
            .header("X-Qlik-Xrfkey", XRF)
            .send()
            .await;
        assert!(
            result.is_err(),
            "TLS must fail without a trusted client cert"
        );
    }
    let resp = qps_client(&sim, ClientCert::Trusted)
        .get(&url)
        .header("X-Qlik-Xrfkey", XRF)
        .send()
        .await
        .expect("trusted client cert works");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.expect("json"),
        json!([])
    );
}

#[tokio::test]
async fn xrfkey_missing_or_mismatched_is_403() {
    let sim = start_default().await;
    let client = qps_client(&sim, ClientCert::Trusted);
    let base = format!("{}/qps/mashup/user/DIR/alice", sim.qps_api_url());
    let cases = [
        (base.clone(), None),                                       // no key at all
        (format!("{base}?xrfkey={XRF}"), None),                     // header missing
        (base.clone(), Some(XRF)),                                  // query missing
        (format!("{base}?xrfkey={XRF}"), Some("abcdefghij01234X")), // mismatch
        (format!("{base}?xrfkey=short"), Some("short")),            // not 16 chars
    ];
    for (url, header) in cases {
        let mut req = client.get(&url);
        if let Some(h) = header {
            req = req.header("X-Qlik-Xrfkey", h);
        }
        let resp = req.send().await.expect("response");
        assert_eq!(resp.status().as_u16(), 403, "{url}");
        assert_eq!(
            resp.text().await.expect("body"),
            "XSRF prevention check failed. Possible XSRF discovered."
        );
    }
    // The query parameter name is matched case-insensitively.
    let resp = client
        .get(format!("{base}?Xrfkey={XRF}"))
        .header("X-Qlik-Xrfkey", XRF)
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(sim.control().counters().xrfkey_failures, 5);
    assert_eq!(sim.control().counters().qps_requests, 6);
}

#[tokio::test]
async fn session_lifecycle_pascal_case() {
    let sim = start_default().await;
    let (status, body) = qps(
        &sim,
        Method::POST,
        "session",
        Some(json!({"UserDirectory": " DIR ", "UserId": "alice",
            "Attributes": [{"Group": "a"}, {"Group": "b"}], "SessionId": "s-1"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        body,
        json!({"UserDirectory": "DIR", "UserId": "alice",
            "Attributes": [{"Group": "a"}, {"Group": "b"}], "SessionId": "s-1"})
    );
    let (status, got) = qps(&sim, Method::GET, "session/s-1", None).await;
    assert_eq!((status, &got), (200, &body));
    let (status, list) = qps(&sim, Method::GET, "user/DIR/alice", None).await;
    assert_eq!((status, list), (200, json!([body.clone()])));
    let (status, deleted) = qps(&sim, Method::DELETE, "session/s-1", None).await;
    assert_eq!((status, deleted), (200, body));
    assert_eq!(qps(&sim, Method::GET, "session/s-1", None).await.0, 404);
    assert_eq!(qps(&sim, Method::DELETE, "session/s-1", None).await.0, 404);
    let c = sim.control().counters();
    assert_eq!((c.sessions_created, c.sessions_deleted), (1, 1));
}

#[tokio::test]
async fn session_lifecycle_camel_case() {
    let sim = start(SimOptions {
        reply_casing: Casing::Camel,
        ..SimOptions::default()
    })
    .await;
    let (status, body) = qps(
        &sim,
        Method::POST,
        "session",
        Some(
            json!({"userDirectory": "DIR", "userId": "bob", "attributes": [], "sessionId": "s-2"}),
        ),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        body,
        json!({"userDirectory": "DIR", "userId": "bob", "attributes": [], "sessionId": "s-2"})
    );
    assert_eq!(qps(&sim, Method::GET, "session/s-2", None).await.1, body);
    let (status, deleted) = qps(&sim, Method::DELETE, "user/DIR/bob", None).await;
    assert_eq!((status, deleted), (200, json!([body])));
    assert!(sim.control().sessions().is_empty());
}

#[tokio::test]
async fn bad_session_and_ticket_bodies_are_400() {
    let sim = start_default().await;
    let bodies = [
        json!({"UserDirectory": "DIR\\X", "UserId": "a", "SessionId": "x"}),
        json!({"UserDirectory": "DIR", "UserId": "a\\b", "SessionId": "x"}),
        json!({"UserDirectory": "  ", "UserId": "a", "SessionId": "x"}),
        json!({"UserDirectory": "DIR", "SessionId": "x"}),
        json!({"UserDirectory": "DIR", "UserId": "a"}),
        json!({"UserDirectory": "DIR", "UserId": "a", "SessionId": "x", "Attributes": "no"}),
    ];
    for body in bodies {
        assert_eq!(
            qps(&sim, Method::POST, "session", Some(body.clone()))
                .await
                .0,
            400,
            "{body}"
        );
    }
    let bad_ticket = json!({"UserDirectory": "", "UserId": "a"});
    assert_eq!(
        qps(&sim, Method::POST, "ticket", Some(bad_ticket)).await.0,
        400
    );
    assert_eq!(qps(&sim, Method::GET, "nothing/here", None).await.0, 404);
    assert!(sim.control().sessions().is_empty());
}

#[tokio::test]
async fn ticket_is_issued_with_target_uri() {
    let sim = start_default().await;
    // An unauthenticated proxy request yields a targetId.
    let resp = proxy_client(&sim)
        .get(format!("{}/mashup/hub/?x=1", sim.proxy_url()))
        .send()
        .await
        .expect("proxy");
    let location = resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let target_id = location.split("targetId=").nth(1).expect("targetId");
    let (status, body) = qps(
        &sim,
        Method::POST,
        "ticket",
        Some(json!({"UserDirectory": "DIR", "UserId": "alice",
            "Attributes": [{"Email": "a@example.com"}], "TargetId": target_id})),
    )
    .await;
    assert_eq!(status, 201);
    let ticket = body["Ticket"].as_str().expect("ticket");
    assert!(ticket.len() == 16 && ticket.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(body["UserDirectory"], "DIR");
    assert_eq!(body["Attributes"], json!([{"Email": "a@example.com"}]));
    assert_eq!(
        body["TargetUri"],
        json!(format!("{}/mashup/hub/?x=1", sim.proxy_url()))
    );
    assert_eq!(sim.control().counters().tickets_issued, 1);
}

#[tokio::test]
async fn injected_faults() {
    let sim = start_default().await;
    let control = sim.control();
    control.set_fault(Some(QpsFault::Status(503)));
    assert_eq!(qps(&sim, Method::GET, "user/DIR/a", None).await.0, 503);
    control.set_fault(Some(QpsFault::RejectXrfkey));
    assert_eq!(qps(&sim, Method::GET, "user/DIR/a", None).await.0, 403);
    control.set_fault(Some(QpsFault::Delay(Duration::from_millis(300))));
    let started = std::time::Instant::now();
    assert_eq!(qps(&sim, Method::GET, "user/DIR/a", None).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    control.set_fault(None);
    assert_eq!(qps(&sim, Method::GET, "user/DIR/a", None).await.0, 200);
}

#[tokio::test]
async fn default_virtual_proxy_has_no_prefix() {
    let sim = start(SimOptions {
        virtual_proxy: String::new(),
        session_cookie: "X-Qlik-Session".into(),
        ..SimOptions::default()
    })
    .await;
    let client = qps_client(&sim, ClientCert::Trusted);
    let resp = client
        .post(format!("{}/qps/ticket?xrfkey={XRF}", sim.qps_api_url()))
        .header("X-Qlik-Xrfkey", XRF)
        .json(&json!({"UserDirectory": "DIR", "UserId": "a"}))
        .send()
        .await
        .expect("ticket");
    assert_eq!(resp.status().as_u16(), 201);
    let ticket: serde_json::Value = resp.json().await.expect("json");
    let resp = proxy_client(&sim)
        .get(format!(
            "{}/hub/?qlikTicket={}",
            sim.proxy_url(),
            ticket["Ticket"].as_str().expect("t")
        ))
        .send()
        .await
        .expect("hub");
    assert_eq!(resp.status().as_u16(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().expect("cookie");
    assert!(cookie.starts_with("X-Qlik-Session="), "{cookie}");
}
