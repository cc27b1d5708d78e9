//! A spent retry schedule, end to end: the delivery ends failed, and the
//! operator's retry and replay send it again.

use crate::delivery::received_at_least;
use crate::receiver::Receiver;
use crate::support::*;
use axum::http::StatusCode as AxStatus;
use axum::response::IntoResponse;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_spent_schedule_fails_then_retry_and_replay_send_again() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let rx = Receiver::spawn().await;
    rx.answer(|_, _| (AxStatus::SERVICE_UNAVAILABLE, "down for maintenance").into_response());
    let (sub, _) = app.subscribe(json!({"url": rx.url, "rooms": ["r"]})).await;
    app.until_snapshot("r", &not_found("r")).await;
    let since = chrono::Utc::now();
    app.apply(&up, idle("r")).await;
    let failed = eventually("the delivery to fail", || async {
        let ds = app.deliveries(&sub).await;
        ds.first().filter(|d| d["status"] == "failed").cloned()
    })
    .await;
    // The default test schedule has three delays: four attempts in all.
    let attempts = failed["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4);
    assert!(attempts
        .iter()
        .all(|a| a["statusCode"] == 503 && a["response"] == "down for maintenance"));
    assert!(attempts
        .iter()
        .all(|a| a["at"].is_string() && a["durationMs"].is_u64()));
    let event_id = failed["eventId"].as_str().unwrap().to_string();
    assert!(rx.hooks().iter().all(|r| r.id() == event_id));

    rx.answer(|_, _| AxStatus::NO_CONTENT.into_response());
    let did = failed["id"].as_str().unwrap();
    let (status, body) = app
        .post(
            &format!("/v1/subscriptions/{sub}/deliveries/{did}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    eventually("the retried delivery to succeed", || async {
        let ds = app.deliveries(&sub).await;
        (ds[0]["status"] == "succeeded").then_some(())
    })
    .await;
    assert_eq!(
        app.deliveries(&sub).await[0]["attempts"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    // A succeeded delivery cannot be retried.
    let (status, _) = app
        .post(
            &format!("/v1/subscriptions/{sub}/deliveries/{did}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let before = rx.hooks().len();
    assert_eq!(app.replay(&sub, json!(since)).await, 1);
    let got = received_at_least(&rx, before + 1).await;
    assert_eq!(
        got.last().unwrap().id(),
        event_id,
        "a replay keeps the event's webhook-id"
    );
    let (status, body) = app
        .post(
            &format!("/v1/subscriptions/{sub}/replay"),
            json!({"since": "yesterday"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
