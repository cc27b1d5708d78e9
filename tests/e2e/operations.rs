//! Operating it: metrics that equal what happened, retention, limits, and
//! JSON logs without secrets.

use crate::receiver::Receiver;
use crate::support::*;
use axum::http::StatusCode as AxStatus;
use axum::response::IntoResponse;
use reqwest::StatusCode;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// `name{labels} value` lines of the exposition, by name with labels.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn metrics_equal_what_happened() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let (good, bad) = (Receiver::spawn().await, Receiver::spawn().await);
    bad.answer(|_, _| AxStatus::INTERNAL_SERVER_ERROR.into_response());
    let (good_id, _) = app
        .subscribe(json!({"url": good.url, "rooms": ["m"]}))
        .await;
    let (bad_id, _) = app.subscribe(json!({"url": bad.url, "rooms": ["m"]})).await;
    app.until_snapshot("m", &not_found("m")).await;
    for step in class_steps("m") {
        app.apply(&up, step).await;
    }
    let events = app.events("m").await;
    assert_eq!(events.len(), 9);
    eventually("every delivery to finish", || async {
        let done = |ds: Vec<serde_json::Value>, status: &str| {
            ds.len() == 9 && ds.iter().all(|d| d["status"] == status)
        };
        (done(app.deliveries(&good_id).await, "succeeded")
            && done(app.deliveries(&bad_id).await, "failed"))
        .then_some(())
    })
    .await;

    let res = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("openmetrics-text"));
    let text = res.text().await.unwrap();
    let s = samples(&text);
    let get = |k: &str| {
        s.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in\n{text}"))
    };
    let mut by_type: HashMap<&str, f64> = HashMap::new();
    for e in &events {
        *by_type.entry(e["type"].as_str().unwrap()).or_default() += 1.0;
    }
    for (t, n) in by_type {
        assert_eq!(
            get(&format!("relay_events_total{{type=\"{t}\"}}")),
            n,
            "{t}"
        );
    }
    // The class was six changes after the baseline.
    assert_eq!(get("relay_polls_total{outcome=\"changed\"}"), 6.0);
    assert_eq!(get("relay_polls_total{outcome=\"baseline\"}"), 1.0);
    // Good: 9 successes. Bad: 4 attempts per event (three delays in the test schedule).
    assert_eq!(get("relay_deliveries_total{outcome=\"succeeded\"}"), 9.0);
    assert_eq!(get("relay_deliveries_total{outcome=\"retrying\"}"), 27.0);
    assert_eq!(get("relay_deliveries_total{outcome=\"failed\"}"), 9.0);
    assert_eq!(get("relay_delivery_duration_seconds_count"), 45.0);
    assert_eq!(get("relay_deliveries_pending"), 0.0);
    assert_eq!(get("relay_oldest_pending_delivery_age_seconds"), 0.0);
    assert_eq!(get("relay_subscriptions{state=\"enabled\"}"), 2.0);
    assert_eq!(get("relay_rooms{state=\"ok\"}"), 1.0);
    assert!(get("relay_poll_duration_seconds_count") >= 7.0);
    // Label values are bounded: no room id or URL anywhere.
    assert!(
        !text.contains("\"m\"") && !text.contains("127.0.0.1"),
        "{text}"
    );
}

#[tokio::test]
async fn retention_prunes_what_is_old_and_keeps_the_rest() {
    use chrono::{Duration as D, Utc};
    use verriflo_relay::outbox::{Attempt, Completion, Health, Verdict};
    use verriflo_relay::room::{RoomId, RoomStatus};
    use verriflo_relay::store::Store;
    use verriflo_relay::subscription::Subscription;

    let store = Store::temporary().unwrap();
    let now = Utc::now();
    let sub = Subscription::new(
        "sub_1".into(),
        "http://x/".into(),
        vec![],
        vec![],
        None,
        now,
    );
    store
        .outbox()
        .create_subscription(sub, 10)
        .unwrap()
        .unwrap();
    let room = RoomId::parse("r").unwrap();
    store.watch(&room, now).unwrap();
    store
        .record_poll(&room, &not_found("r"), now, false)
        .unwrap();
    store.record_poll(&room, &idle("r"), now, false).unwrap();
    store
        .record_poll(
            &room,
            &RoomStatus {
                is_active: true,
                ..idle("r")
            },
            now,
            false,
        )
        .unwrap();
    let (first, _) = store.outbox().list_deliveries("sub_1", None, 10).unwrap();
    assert_eq!(first.len(), 2);
    // The older delivery (room.created) finished; the newer one is pending.
    let done = first
        .iter()
        .find(|d| d.event_type == "room.created")
        .unwrap();
    let mut claims = store.outbox().claim(now, 10).unwrap().claims;
    assert_eq!(claims.len(), 1, "one head per lane");
    assert_eq!(claims[0].delivery.id, done.id);
    let attempt = Attempt {
        at: now,
        status_code: Some(200),
        error: None,
        duration_ms: 1,
        response: None,
    };
    let completion = Completion {
        claim: claims.remove(0),
        attempt,
        verdict: Verdict::Succeeded,
        health: Health::Success,
    };
    store.outbox().complete(vec![completion], now).unwrap();

    let retention = std::time::Duration::from_secs(30 * 24 * 3600);
    // Nothing is old yet.
    let p = verriflo_relay::retention::prune_once(&store.clone().into(), now, retention)
        .await
        .unwrap();
    assert_eq!((p.events, p.deliveries), (0, 0));
    // 31 days on: the finished delivery goes; the pending one and the event it
    // still needs stay; the event nobody waits for goes.
    let later = now + D::days(31);
    let p = verriflo_relay::retention::prune_once(&store.clone().into(), later, retention)
        .await
        .unwrap();
    assert_eq!(p.deliveries, 1);
    let (left, _) = store.outbox().list_deliveries("sub_1", None, 10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].event_type, "room.started");
    assert!(
        store.event(&left[0].event_id).unwrap().is_some(),
        "a pending delivery's event is kept"
    );
    assert!(
        store.event(&done.event_id).unwrap().is_none(),
        "an old event nobody needs is pruned"
    );
    let page = store
        .list_events(&verriflo_relay::store::EventFilter {
            room: Some("r".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.events.len(), 1);
}

#[tokio::test]
async fn each_limit_is_refused_with_a_clear_error_and_changes_nothing() {
    let up = spawn_upstream().await;
    let mut settings = fast_settings(&up);
    settings.push(("RELAY_MAX_SUBSCRIPTIONS", "1".into()));
    settings.push(("RELAY_MAX_ROOMS", "2".into()));
    settings.push(("RELAY_MAX_BODY", "2048".into()));
    let app = TestApp::spawn_with(settings, Arc::new(tempfile::TempDir::new().unwrap())).await;
    let rx = Receiver::spawn().await;

    app.watch("a").await;
    app.watch("b").await;
    let (status, body) = app.put("/v1/rooms/c").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "limit_reached");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("RELAY_MAX_ROOMS"));
    // Watching one already watched is not a new room.
    assert_eq!(app.put("/v1/rooms/a").await.0, StatusCode::OK);
    // A subscription naming new rooms past the limit is refused whole.
    let (status, body) = app
        .post(
            "/v1/subscriptions",
            json!({"url": rx.url, "rooms": ["a", "d"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(app.get("/v1/subscriptions").await.1["data"], json!([]));

    app.subscribe(json!({"url": rx.url})).await;
    let (status, body) = app.post("/v1/subscriptions", json!({"url": rx.url})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("RELAY_MAX_SUBSCRIPTIONS"));

    let big = json!({"url": rx.url, "description": "x".repeat(3000)});
    let (status, body) = app.patch("/v1/subscriptions/anything", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    let (_, rooms) = app.get("/v1/rooms").await;
    assert_eq!(rooms["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.get("/v1/subscriptions").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn readiness_fails_with_its_reason_when_the_backlog_is_too_deep() {
    let up = spawn_upstream().await;
    let mut settings = fast_settings(&up);
    settings.push(("RELAY_READY_MAX_BACKLOG", "0".into()));
    settings.retain(|(k, _)| *k != "RELAY_RETRY_SCHEDULE");
    settings.push(("RELAY_RETRY_SCHEDULE", "1h".into()));
    let app = TestApp::spawn_with(settings, Arc::new(tempfile::TempDir::new().unwrap())).await;
    let rx = Receiver::spawn().await;
    rx.answer(|_, _| AxStatus::SERVICE_UNAVAILABLE.into_response());
    let ready = || async {
        app.http
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(ready().await.status(), StatusCode::OK);
    app.subscribe(json!({"url": rx.url, "rooms": ["q"]})).await;
    app.until_snapshot("q", &not_found("q")).await;
    app.apply(&up, idle("q")).await;
    let res = eventually("readyz to fail on the backlog", || async {
        let r = ready().await;
        (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(r)
    })
    .await;
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("delivery backlog of 1"),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["pendingDeliveries"], 1);
}
