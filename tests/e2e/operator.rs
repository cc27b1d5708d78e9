//! An operator's hands on the outbox, end to end: retries and replays by
//! hand, deleting a subscription with a backlog, a subscription disabled by
//! 410 beside retention, and a clock stepped back across a restart.

use crate::receiver::{Received, Receiver};
use crate::support::*;
use axum::http::StatusCode as AxStatus;
use axum::response::IntoResponse;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use verriflo_relay::room::{RoomId, RoomStatus};

fn seq(r: &Received) -> u64 {
    r.json()["data"]["sequence"].as_u64().unwrap()
}

fn crowd(room: &str, n: u64) -> RoomStatus {
    RoomStatus {
        participant_count: Some(n),
        ..idle(room)
    }
}

/// Sequences that reached the receiver with a 2xx, in arrival order.
fn accepted(rx: &Receiver, ok: &dyn Fn(&Received) -> bool) -> Vec<u64> {
    rx.hooks().iter().filter(|r| ok(r)).map(seq).collect()
}

async fn delivery_of(app: &TestApp, sub: &str, sequence: u64) -> Value {
    let events = app.events("r").await;
    let event = events
        .iter()
        .find(|e| e["data"]["sequence"] == sequence)
        .unwrap()
        .clone();
    app.deliveries(sub)
        .await
        .into_iter()
        .find(|d| d["eventId"] == event["id"])
        .unwrap()
}

async fn pending(app: &TestApp) -> u64 {
    pending_deliveries(&app.base).await
}

/// A relay watching room "r" (idle, baselined) with this retry schedule,
/// and a receiver that fails until `healthy` is set.
async fn started(
    schedule: &str,
    extra: &[(&'static str, &str)],
) -> (Upstream, TestApp, Receiver, Arc<AtomicBool>) {
    let up = spawn_upstream().await;
    up.mock.set_room(idle("r"));
    let mut settings = fast_settings(&up);
    settings.push(("RELAY_RETRY_SCHEDULE", schedule.into()));
    settings.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let app = TestApp::spawn_with(settings, Arc::new(tempfile::TempDir::new().unwrap())).await;
    app.watch("r").await;
    app.until_snapshot("r", &idle("r")).await;
    let rx = Receiver::spawn().await;
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    rx.answer(move |_, _| match h.load(Ordering::SeqCst) {
        true => AxStatus::OK.into_response(),
        false => AxStatus::INTERNAL_SERVER_ERROR.into_response(),
    });
    (up, app, rx, healthy)
}

#[tokio::test]
async fn a_failed_event_retried_while_a_newer_one_retries_goes_first_and_all_arrive() {
    let (up, app, rx, healthy) = started("20ms", &[]).await;
    let h = healthy.clone();
    // Event 1 fails for good; event 2 is told to come back in 2 s.
    rx.answer(move |_, r| match (h.load(Ordering::SeqCst), seq(r)) {
        (true, _) => AxStatus::OK.into_response(),
        (false, 1) => AxStatus::INTERNAL_SERVER_ERROR.into_response(),
        (false, _) => (AxStatus::SERVICE_UNAVAILABLE, [("retry-after", "2")]).into_response(),
    });
    let (sub, _) = app.subscribe(json!({"url": rx.url})).await;
    app.apply(&up, crowd("r", 1)).await;
    eventually("event 1 to fail", || async {
        (delivery_of(&app, &sub, 1).await["status"] == "failed").then_some(())
    })
    .await;
    app.apply(&up, crowd("r", 2)).await;
    eventually("event 2 to be retrying", || async {
        let d = delivery_of(&app, &sub, 2).await;
        (d["status"] == "pending" && !d["attempts"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;
    healthy.store(true, Ordering::SeqCst);
    let id = delivery_of(&app, &sub, 1).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = app
        .post(
            &format!("/v1/subscriptions/{sub}/deliveries/{id}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.apply(&up, crowd("r", 3)).await;
    let ok = |_: &Received| true;
    let order = eventually("every event to arrive", || async {
        let got = accepted(&rx, &ok);
        got.ends_with(&[1, 2, 3]).then_some(got)
    })
    .await;
    // Event 1 was taken again as soon as it was retried: before 2 and 3.
    let tail: Vec<u64> = order.iter().rev().take(3).rev().copied().collect();
    assert_eq!(tail, [1, 2, 3], "{order:?}");
    eventually("nothing pending", || async {
        (pending(&app).await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn replay_then_retry_of_the_same_event_leaves_nothing_pending() {
    let (up, app, rx, healthy) = started("20ms", &[]).await;
    let (sub, _) = app.subscribe(json!({"url": rx.url})).await;
    let since = chrono::Utc::now() - chrono::Duration::minutes(1);
    app.apply(&up, crowd("r", 1)).await;
    eventually("event 1 to fail", || async {
        (delivery_of(&app, &sub, 1).await["status"] == "failed").then_some(())
    })
    .await;
    let failed = delivery_of(&app, &sub, 1).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The replay queues event 1 again while the receiver still fails...
    assert_eq!(app.replay(&sub, json!(since)).await, 1);
    // ...so a retry of the failed delivery of the same event is refused,
    // or, if the replayed one already failed again, queued once more.
    let (status, body) = app
        .post(
            &format!("/v1/subscriptions/{sub}/deliveries/{failed}/retry"),
            json!({}),
        )
        .await;
    assert!(
        status == StatusCode::CONFLICT || status == StatusCode::ACCEPTED,
        "{status} {body}"
    );
    healthy.store(true, Ordering::SeqCst);
    app.apply(&up, crowd("r", 2)).await;
    let ok = |_: &Received| true;
    eventually("event 2 to arrive", || async {
        accepted(&rx, &ok).contains(&2).then_some(())
    })
    .await;
    eventually("nothing pending", || async {
        (pending(&app).await == 0).then_some(())
    })
    .await;
    if status == StatusCode::CONFLICT {
        assert!(body["message"].as_str().unwrap().contains("already queued"));
    }
}

#[tokio::test]
async fn deleting_a_subscription_with_a_backlog_leaves_nothing_pending_and_ready() {
    let (up, app, rx, _) = started("1h", &[("RELAY_READY_MAX_BACKLOG", "2")]).await;
    let (sub, _) = app.subscribe(json!({"url": rx.url})).await;
    for n in 1..=4 {
        app.apply(&up, crowd("r", n)).await;
    }
    eventually("a backlog of 4", || async {
        (pending(&app).await == 4).then_some(())
    })
    .await;
    assert_eq!(app.get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = app
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/subscriptions/{sub}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pending(&app).await, 0);
    assert_eq!(app.get("/readyz").await.0, StatusCode::OK);
    let (status, _) = app
        .get(&format!("/v1/subscriptions/{sub}/deliveries"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_subscription_disabled_by_410_does_not_stop_retention_of_other_events() {
    use chrono::{Duration as D, Utc};
    use verriflo_relay::delivery::{Engine, Sender};
    use verriflo_relay::store::{EventFilter, Store};
    use verriflo_relay::subscription::Subscription;

    let store = Store::temporary().unwrap();
    let gone = Receiver::spawn().await;
    gone.answer(|_, _| AxStatus::GONE.into_response());
    let fine = Receiver::spawn().await;
    let now = Utc::now();
    for (id, rx) in [("sub_a", &gone), ("sub_b", &fine)] {
        let s = Subscription::new(id.into(), rx.url.clone(), vec![], vec![], None, now);
        store.outbox().create_subscription(s, 10).unwrap().unwrap();
    }
    let engine = Engine::new(
        store.clone(),
        Sender::new(std::time::Duration::from_secs(5), true, None, 8),
        vec![std::time::Duration::from_secs(1)],
        8,
        Default::default(),
        Default::default(),
    );
    let room = RoomId::parse("r").unwrap();
    store.watch(&room, now).unwrap();
    store.record_poll(&room, &idle("r"), now, false).unwrap();
    store
        .record_poll(&room, &crowd("r", 1), now, false)
        .unwrap();
    engine.deliver_due(now).await;
    assert!(!store.outbox().subscription("sub_a").unwrap().enabled);
    // Events after the 410: only sub_b gets them, and it gets them all.
    for n in 2..=5 {
        store
            .record_poll(&room, &crowd("r", n), now, false)
            .unwrap();
        engine.deliver_due(now).await;
    }
    assert_eq!(fine.hooks().len(), 5);
    assert_eq!(store.outbox().pending().0, 1, "sub_a's first event is held");
    let retention = std::time::Duration::from_secs(30 * 24 * 3600);
    let p =
        verriflo_relay::retention::prune_once(&store.clone().into(), now + D::days(31), retention)
            .await
            .unwrap();
    // Every event but the one the held delivery needs is gone.
    assert_eq!(p.events, 4);
    let left = store
        .list_events(&EventFilter {
            limit: 100,
            ..Default::default()
        })
        .unwrap()
        .events;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].sequence(), Some(1));
}

#[tokio::test]
async fn a_clock_stepped_back_across_a_restart_keeps_order() {
    use chrono::{Duration as D, Utc};
    use verriflo_relay::store::{EventFilter, Store};
    use verriflo_relay::subscription::Subscription;

    let dir = tempfile::TempDir::new().unwrap();
    let room = RoomId::parse("r").unwrap();
    let ahead = Utc::now() + D::hours(2);
    let last_before = {
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let s = Subscription::new(
            "sub_a".into(),
            "http://x/".into(),
            vec![],
            vec![],
            None,
            ahead,
        );
        store.outbox().create_subscription(s, 10).unwrap().unwrap();
        store.watch(&room, ahead).unwrap();
        store.record_poll(&room, &idle("r"), ahead, false).unwrap();
        store
            .record_poll(&room, &crowd("r", 1), ahead, false)
            .unwrap();
        store.flush().await.unwrap();
        let page = store
            .list_events(&EventFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        page.events[0].id.clone()
    };
    // The clock is two hours behind after the restart.
    let store = eventually("the data dir to be free", || async {
        Store::open(dir.path(), 1 << 20).ok()
    })
    .await;
    let behind = Utc::now();
    store
        .record_poll(&room, &crowd("r", 2), behind, false)
        .unwrap();
    let after = store
        .list_events(&EventFilter {
            after: Some(last_before.clone()),
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .events;
    assert_eq!(after.len(), 1, "the new event follows the old one");
    assert_eq!(after[0].sequence(), Some(2));
    assert!(after[0].id > last_before);
    // The lane still sends event 1 first, then 2.
    let first = store
        .outbox()
        .claim(behind + D::hours(3), 10)
        .unwrap()
        .claims;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].delivery.sequence, Some(1));
    let (deliveries, _) = store.outbox().list_deliveries("sub_a", None, 10).unwrap();
    assert!(
        deliveries[0].id > deliveries[1].id,
        "delivery ids keep growing"
    );
}
