//! The outbox's contract, on both backends: subscriptions, deliveries in lane order, the operator's retry, replay and test, and a gone receiver.

use super::harness::Harness;
use super::on_both;
use super::store::{done, live, room, sub};
use crate::event::EventType;
use crate::outbox::{DeliveryStatus, Health, Retried, Verdict};
use chrono::{Duration, Utc};

on_both!(subscriptions_are_capped_changed_and_deleted, subscriptions);
async fn subscriptions(h: Harness) {
    let db = &h.db;
    assert!(db.create_subscription(sub("sub_a"), 2).await.unwrap());
    assert!(db.create_subscription(sub("sub_b"), 2).await.unwrap());
    assert!(
        !db.create_subscription(sub("sub_c"), 2).await.unwrap(),
        "capped"
    );
    assert_eq!(db.subscription_count().await.unwrap(), 2);
    let now = Utc::now();
    let off = db
        .update_subscription("sub_a", now, |s| s.enabled = false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((off.enabled, off.disabled_at), (false, Some(now)));
    let on = db
        .update_subscription("sub_a", now, |s| s.enabled = true)
        .await
        .unwrap()
        .unwrap();
    assert!(on.enabled && on.disabled_at.is_none());
    assert!(db
        .update_subscription("nope", now, |_| {})
        .await
        .unwrap()
        .is_none());
    let ids: Vec<_> = db
        .subscriptions()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(ids, ["sub_a", "sub_b"]);
    assert!(db.delete_subscription("sub_a").await.unwrap());
    assert!(!db.delete_subscription("sub_a").await.unwrap());
    assert!(db.subscription("sub_a").await.unwrap().is_none());
}

on_both!(a_lane_is_sent_in_order_one_head_at_a_time, lane_order);
async fn lane_order(h: Harness) {
    let now = Utc::now();
    let db = &h.db;
    db.create_subscription(sub("sub_a"), 10).await.unwrap();
    h.watch(&[room()]).await;
    for n in 1..=4 {
        db.record_poll(&room(), &live(n), now, false).await.unwrap();
    }
    assert_eq!(db.pending().await.unwrap().0, 3);
    // One head at a time; a retry keeps the lane on it.
    let first = db.claim(now, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].delivery.sequence, Some(1));
    assert!(db.claim(now, 10).await.unwrap().is_empty(), "in flight");
    let later = now + Duration::seconds(5);
    db.complete(
        first
            .into_iter()
            .map(|c| done(c, Verdict::RetryAt(later), Health::Failure))
            .collect(),
        now,
    )
    .await
    .unwrap();
    assert!(
        db.claim(now, 10).await.unwrap().is_empty(),
        "waits for its retry"
    );
    let again = db.claim(later, 10).await.unwrap();
    assert_eq!(again[0].delivery.sequence, Some(1));
    assert_eq!(again[0].delivery.attempts.len(), 1);
    let mut sent = Vec::new();
    let mut claims = again;
    while let Some(c) = claims.pop() {
        sent.push(c.delivery.sequence.unwrap());
        db.complete(vec![done(c, Verdict::Succeeded, Health::Success)], later)
            .await
            .unwrap();
        claims = db.claim(later, 10).await.unwrap();
    }
    assert_eq!(sent, [1, 2, 3]);
    assert_eq!(db.pending().await.unwrap().0, 0);
    let stats = db.stats("sub_a").await.unwrap();
    assert_eq!((stats.pending, stats.recent_succeeded), (0, 3));
    assert_eq!(stats.success_rate, Some(1.0));
}

on_both!(retry_replay_and_test_go_through_the_lanes, operator);
async fn operator(h: Harness) {
    let now = Utc::now();
    let db = &h.db;
    db.create_subscription(sub("sub_a"), 10).await.unwrap();
    h.watch(&[room()]).await;
    for n in 1..=3 {
        db.record_poll(&room(), &live(n), now, false).await.unwrap();
    }
    let c = db.claim(now, 1).await.unwrap().pop().unwrap();
    let failed_id = c.delivery.id.clone();
    db.complete(vec![done(c, Verdict::Failed, Health::Failure)], now)
        .await
        .unwrap();
    // A retry of the failed one: pending again, and the lane's head.
    let Retried::Queued(d) = db.retry("sub_a", &failed_id).await.unwrap() else {
        panic!("a failed delivery is retried");
    };
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert!(matches!(
        db.retry("sub_a", &failed_id).await.unwrap(),
        Retried::NotFailed(_)
    ));
    assert!(matches!(
        db.retry("sub_a", "dlv_01JZZZZZZZZZZZZZZZZZZZZZZZ")
            .await
            .unwrap(),
        Retried::NotFound
    ));
    // Due from the retry on (the backends' clocks, not the test's).
    let now = Utc::now();
    let head = db.claim(now, 5).await.unwrap();
    assert_eq!(head.len(), 1);
    assert_eq!(
        head[0].delivery.id, failed_id,
        "the retried event goes first"
    );
    db.complete(
        head.into_iter()
            .map(|c| done(c, Verdict::Succeeded, Health::Success))
            .collect(),
        now,
    )
    .await
    .unwrap();
    // A replay queues what the lane does not hold already.
    let s = db.subscription("sub_a").await.unwrap().unwrap();
    assert_eq!(
        db.replay(&s, now - Duration::days(1), now).await.unwrap(),
        1
    );
    assert_eq!(
        db.pending().await.unwrap().0,
        2,
        "event 2 is not queued twice"
    );
    // A test event has a lane of its own: it goes out beside the room's.
    let test = crate::event::Event {
        id: String::new(),
        kind: EventType::WebhookTest,
        timestamp: now,
        data: serde_json::json!({ "subscriptionId": "sub_a" }).into(),
    };
    let stored = db
        .enqueue_test("sub_a", test.clone(), now)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.id.starts_with("evt_"));
    assert!(db.enqueue_test("nope", test, now).await.unwrap().is_none());
    let out = db.claim(now, 5).await.unwrap();
    assert_eq!(out.len(), 2, "the room's head and the test");
    let (list, next) = db
        .list_deliveries_where("sub_a", None, 100, None)
        .await
        .unwrap();
    assert!(next.is_none());
    assert_eq!(list.len(), 4);
    let ids: Vec<_> = list.iter().map(|d| d.id.clone()).collect();
    let mut newest_first = ids.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, newest_first);
    let succeeded = db
        .list_deliveries_where("sub_a", None, 100, Some(DeliveryStatus::Succeeded))
        .await
        .unwrap()
        .0;
    assert_eq!(succeeded.len(), 1);
    let one = db.delivery("sub_a", &failed_id).await.unwrap().unwrap();
    assert_eq!(one.attempts.len(), 2);
}

on_both!(a_gone_receiver_disables_and_holds_its_lanes, gone);
async fn gone(h: Harness) {
    let now = Utc::now();
    let db = &h.db;
    db.create_subscription(sub("sub_a"), 10).await.unwrap();
    h.watch(&[room()]).await;
    db.record_poll(&room(), &live(1), now, false).await.unwrap();
    db.record_poll(&room(), &live(2), now, false).await.unwrap();
    let c = db.claim(now, 1).await.unwrap();
    db.complete(
        c.into_iter()
            .map(|c| done(c, Verdict::Hold, Health::Gone))
            .collect(),
        now,
    )
    .await
    .unwrap();
    let s = db.subscription("sub_a").await.unwrap().unwrap();
    assert!(!s.enabled);
    assert!(
        db.claim(now, 5).await.unwrap().is_empty(),
        "held while disabled"
    );
    assert_eq!(
        (
            db.pending().await.unwrap().0,
            db.deliverable().await.unwrap()
        ),
        (1, 0)
    );
    db.update_subscription("sub_a", now, |s| s.enabled = true)
        .await
        .unwrap();
    let back = db.claim(now, 5).await.unwrap();
    assert_eq!(back.len(), 1, "its held head goes out again");
    assert_eq!(back[0].delivery.sequence, Some(1));
}
