//! Subscription input: private targets refused (the SSRF guard), redirects
//! not followed, bad bodies refused without a change.

use crate::receiver::Receiver;
use crate::support::*;
use axum::http::StatusCode as AxStatus;
use axum::response::IntoResponse;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn private_targets_are_refused_and_redirects_not_followed() {
    let up = spawn_upstream().await;
    let mut settings = fast_settings(&up);
    settings.retain(|(k, _)| *k != "RELAY_ALLOW_PRIVATE_TARGETS");
    let guarded = TestApp::spawn_with(
        settings,
        std::sync::Arc::new(tempfile::TempDir::new().unwrap()),
    )
    .await;
    for url in [
        "http://127.0.0.1/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://localhost:8080/hook",
    ] {
        let (status, body) = guarded.post("/v1/subscriptions", json!({"url": url})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(body["success"], false);
    }
    let (_, listed) = guarded.get("/v1/subscriptions").await;
    assert_eq!(listed["data"], json!([]));

    // With private targets allowed (as the tests' receivers need), a 302 is a
    // failed attempt and its target is never requested.
    let app = TestApp::spawn(&up).await;
    let rx = Receiver::spawn().await;
    rx.answer(|_, _| (AxStatus::FOUND, [("location", "/elsewhere")]).into_response());
    let (sub, _) = app.subscribe(json!({"url": rx.url, "rooms": ["r"]})).await;
    app.until_snapshot("r", &not_found("r")).await;
    app.apply(&up, idle("r")).await;
    let failed = eventually("the redirected delivery to fail", || async {
        app.deliveries(&sub)
            .await
            .first()
            .filter(|d| d["status"] == "failed")
            .cloned()
    })
    .await;
    assert!(failed["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["statusCode"] == 302));
    assert!(
        rx.all().iter().all(|r| r.path == "/hook"),
        "the redirect target was requested"
    );
}

#[tokio::test]
async fn bad_subscription_input_is_refused_and_changes_nothing() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let url = format!("{}/v1/subscriptions", app.base);
    let send = |body: Vec<u8>, ctype: &'static str| {
        app.http
            .post(&url)
            .bearer_auth(TOKEN)
            .header("content-type", ctype)
            .body(body)
            .send()
    };
    let huge = format!(
        "{{\"url\": \"http://127.0.0.1/h\", \"description\": \"{}\"}}",
        "x".repeat(200_000)
    );
    let cases: Vec<(Vec<u8>, &str, StatusCode)> = vec![
        (
            b"{not json".to_vec(),
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        (
            b"{\"url\": \"http://127.0.0.1/h\"}".to_vec(),
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            huge.into_bytes(),
            "application/json",
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (b"{}".to_vec(), "application/json", StatusCode::BAD_REQUEST),
        (
            b"{\"url\": 5}".to_vec(),
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        (
            b"{\"url\": \"http://127.0.0.1/h\", \"colour\": 1}".to_vec(),
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        (
            b"{\"url\": \"http://127.0.0.1/h\", \"events\": [\"room.exploded\"]}".to_vec(),
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        (
            b"{\"url\": \"ftp://127.0.0.1/h\"}".to_vec(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            b"{\"url\": \"http://u:p@127.0.0.1/h\"}".to_vec(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            b"{\"url\": \"http://127.0.0.1/h\", \"rooms\": [\"\"]}".to_vec(),
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        (
            b"{\"url\": \"http://127.0.0.1/h\", \"secret\": \"hunter2\"}".to_vec(),
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (body, ctype, want) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).to_string();
        let res = send(body, ctype).await.unwrap();
        assert_eq!(res.status(), want, "{shown}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["success"], false, "{shown}");
        assert!(v["error"]["code"].is_string(), "{shown}");
    }
    let (_, listed) = app.get("/v1/subscriptions").await;
    assert_eq!(listed["data"], json!([]));
    let (_, rooms) = app.get("/v1/rooms").await;
    assert_eq!(rooms["data"], json!([]));
    for (method, path) in [
        (reqwest::Method::GET, "/v1/subscriptions/sub_nope"),
        (reqwest::Method::DELETE, "/v1/subscriptions/sub_nope"),
        (reqwest::Method::POST, "/v1/subscriptions/sub_nope/test"),
        (
            reqwest::Method::GET,
            "/v1/subscriptions/sub_nope/deliveries",
        ),
    ] {
        let (status, body) = app.request(method, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
}
