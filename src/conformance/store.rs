//! The store and outbox contract, on both backends: rooms and their
//! commits, events, subscriptions, and deliveries in lane order.

use super::harness::Harness;
use super::on_both;
use crate::event::EventType;
use crate::outbox::{Attempt, Completion, DeliveryStatus, Health, Retried, Verdict};
use crate::room::{RoomId, RoomStatus};
use crate::store::{EventFilter, PollCommit};
use crate::subscription::Subscription;
use chrono::{Duration, Utc};

fn room() -> RoomId {
    RoomId::parse("math 101").unwrap()
}

fn live(n: u64) -> RoomStatus {
    RoomStatus::live_for_tests("math 101", n)
}

fn sub(id: &str) -> Subscription {
    Subscription::new(
        id.into(),
        "http://x/".into(),
        vec![],
        vec![],
        None,
        Utc::now(),
    )
}

/// A completion of `claim`, attempted now with a 200.
pub(crate) fn done(claim: crate::outbox::Claim, verdict: Verdict, health: Health) -> Completion {
    Completion {
        claim,
        attempt: Attempt {
            at: Utc::now(),
            status_code: Some(200),
            error: None,
            duration_ms: 1,
            response: None,
        },
        verdict,
        health,
    }
}

on_both!(baseline_then_changes_then_nothing, baseline_then_changes);
async fn baseline_then_changes(h: Harness) {
    let now = Utc::now();
    let db = &h.db;
    assert_eq!(
        db.record_poll(&room(), &live(1), now, false).await.unwrap(),
        PollCommit::NotWatched
    );
    h.watch(&[room()]).await;
    assert!(!db.watch(&room()).await.unwrap(), "watched already");
    assert_eq!(
        db.record_poll(&room(), &live(1), now, false).await.unwrap(),
        PollCommit::Baseline
    );
    assert_eq!(
        db.record_poll(&room(), &live(1), now, false).await.unwrap(),
        PollCommit::Unchanged
    );
    let PollCommit::Changed(events) = db.record_poll(&room(), &live(2), now, false).await.unwrap()
    else {
        panic!("expected a change");
    };
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].sequence(), Some(1));
    let record = db.room("math 101").await.unwrap().unwrap();
    assert_eq!((record.sequence, record.snapshot), (1, Some(live(2))));
    let stored = db.event(&events[0].id).await.unwrap().unwrap();
    assert_eq!(stored, events[0], "stored as emitted");
}

on_both!(unwatch_keeps_sequence_and_rebaselines, unwatch_rebaselines);
async fn unwatch_rebaselines(h: Harness) {
    let now = Utc::now();
    let db = &h.db;
    h.watch(&[room()]).await;
    db.record_poll(&room(), &live(1), now, false).await.unwrap();
    db.record_poll(&room(), &live(2), now, false).await.unwrap();
    assert!(db.unwatch(&room()).await.unwrap());
    assert!(!db.unwatch(&room()).await.unwrap());
    assert!(db.watched_rooms().await.unwrap().is_empty());
    h.watch(&[room()]).await;
    assert_eq!(
        db.record_poll(&room(), &live(9), now, false).await.unwrap(),
        PollCommit::Baseline
    );
    let PollCommit::Changed(events) = db.record_poll(&room(), &live(3), now, false).await.unwrap()
    else {
        panic!("expected a change");
    };
    assert_eq!(events[0].sequence(), Some(2), "the sequence goes on");
}

on_both!(
    a_commit_against_a_moved_version_writes_nothing,
    moved_version
);
/// Two pollers diff the same base: the first commit wins, the second
/// writes nothing, and `sequence` stays contiguous.
async fn moved_version(h: Harness) {
    let now = Utc::now();
    let db = &h.db;
    h.watch(&[room()]).await;
    db.record_poll(&room(), &live(1), now, false).await.unwrap();
    let base = db.base(&room()).await.unwrap().unwrap();
    let first = crate::store::PollAnswer::diffed(&room(), &base, &live(2), now, false).unwrap();
    let second = crate::store::PollAnswer::diffed(&room(), &base, &live(3), now, false).unwrap();
    let outcomes = match db {
        crate::backend::Backend::Sled(s) => s.commit_polls(&[first, second]).unwrap(),
        crate::backend::Backend::Postgres(p) => {
            let epoch = p.lease_epoch(&room()).await.unwrap().unwrap();
            p.commit_polls(&[(first, epoch), (second, epoch)])
                .await
                .unwrap()
        }
    };
    assert!(matches!(&outcomes[0], PollCommit::Changed(e) if e.len() == 1));
    assert_eq!(outcomes[1], PollCommit::Stale);
    let record = db.room("math 101").await.unwrap().unwrap();
    assert_eq!((record.sequence, record.snapshot), (1, Some(live(2))));
}

on_both!(events_page_in_order_by_room_and_type, events_page);
async fn events_page(h: Harness) {
    let now = Utc::now();
    let db = &h.db;
    let other = RoomId::parse("other").unwrap();
    h.watch(&[room(), other.clone()]).await;
    for n in 1..=4 {
        db.record_poll(&room(), &live(n), now, n == 1)
            .await
            .unwrap();
        let o = RoomStatus::live_for_tests("other", n);
        db.record_poll(&other, &o, now, false).await.unwrap();
    }
    let all = |after: Option<String>, limit| EventFilter {
        room: None,
        kind: None,
        after,
        limit,
    };
    let everything = db.list_events(&all(None, 100)).await.unwrap();
    assert!(everything.next.is_none());
    let ids: Vec<_> = everything.events.iter().map(|e| e.id.clone()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "in emission order");
    // Paged by three, the same events.
    let (mut paged, mut after) = (Vec::new(), None);
    loop {
        let page = db.list_events(&all(after, 3)).await.unwrap();
        paged.extend(page.events.into_iter().map(|e| e.id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(paged, ids);
    let mine = db
        .list_events(&EventFilter {
            room: Some("math 101".into()),
            kind: Some(EventType::ParticipantsChanged),
            after: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert!(!mine.events.is_empty());
    assert!(mine
        .events
        .iter()
        .all(|e| e.room_id() == Some("math 101") && e.kind == EventType::ParticipantsChanged));
}

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

on_both!(a_restart_keeps_everything_committed, restart);
async fn restart(mut h: Harness) {
    let now = Utc::now();
    h.db.create_subscription(sub("sub_a"), 10).await.unwrap();
    h.watch(&[room()]).await;
    h.db.record_poll(&room(), &live(1), now, false)
        .await
        .unwrap();
    h.db.record_poll(&room(), &live(2), now, false)
        .await
        .unwrap();
    let held = h.db.claim(now, 1).await.unwrap();
    assert_eq!(held.len(), 1);
    h.reopen().await;
    // A claim in flight at the crash is made again: at least once.
    let again = h.db.claim(now, 1).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.id, held[0].delivery.id);
    let record = h.db.room("math 101").await.unwrap().unwrap();
    assert_eq!(record.snapshot, Some(live(2)));
    if h.is_postgres() {
        h.watch(&[]).await;
    }
    let PollCommit::Changed(e) =
        h.db.record_poll(&room(), &live(3), now, false)
            .await
            .unwrap()
    else {
        panic!("a change after the restart");
    };
    assert_eq!(e[0].sequence(), Some(2));
}

on_both!(initial_events_diff_against_nothing, initial_events);
async fn initial_events(h: Harness) {
    h.watch(&[room()]).await;
    let PollCommit::Changed(events) =
        h.db.record_poll(&room(), &live(1), Utc::now(), true)
            .await
            .unwrap()
    else {
        panic!("expected events");
    };
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "room.created",
            "room.started",
            "teacher.joined",
            "participants.changed"
        ]
    );
    assert!(events[0].data.to_value()["previous"].is_null());
}

on_both!(a_rewatch_fences_a_poll_from_before_it, rewatch);
/// Unwatching moves the version: a poll diffed before it cannot write its
/// old snapshot back after a re-watch.
async fn rewatch(h: Harness) {
    let now = Utc::now();
    let db = &h.db;
    h.watch(&[room()]).await;
    db.record_poll(&room(), &live(1), now, false).await.unwrap();
    let base = db.base(&room()).await.unwrap().unwrap();
    let late = crate::store::PollAnswer::diffed(&room(), &base, &live(2), now, false).unwrap();
    db.unwatch(&room()).await.unwrap();
    h.watch(&[room()]).await;
    let outcome = match db {
        crate::backend::Backend::Sled(s) => s.commit_polls(&[late]).unwrap(),
        crate::backend::Backend::Postgres(p) => {
            let epoch = p.lease_epoch(&room()).await.unwrap().unwrap();
            p.commit_polls(&[(late, epoch)]).await.unwrap()
        }
    };
    assert_eq!(outcome, vec![PollCommit::Stale]);
    assert_eq!(db.room("math 101").await.unwrap().unwrap().snapshot, None);
}

on_both!(schedule_and_learned_history_survive_a_restart, hints);
async fn hints(mut h: Harness) {
    use crate::poller::budget::Phase;
    use crate::poller::history::History;
    let now = Utc::now();
    let window = crate::store::ClassWindow {
        start: now,
        end: now + Duration::hours(1),
    };
    let mut learned = History::default();
    learned.record_start(now.timestamp() as f64);
    learned.dwell(Phase::Live, 600.0, 12.0);
    h.watch(&[room()]).await;
    assert!(h.db.set_schedule(&room(), &[window]).await.unwrap());
    let elsewhere = RoomId::parse("not watched").unwrap();
    assert!(!h.db.set_schedule(&elsewhere, &[window]).await.unwrap());
    h.db.save_poll_history(room().as_str(), &learned)
        .await
        .unwrap();
    h.reopen().await;
    assert_eq!(h.db.poll_history("math 101").await.unwrap(), learned);
    let record = h.db.room("math 101").await.unwrap().unwrap();
    assert_eq!(record.schedule, vec![window]);
    assert_eq!(
        h.db.poll_history("other").await.unwrap(),
        History::default()
    );
}

on_both!(ids_that_cannot_exist_are_not_found, odd_ids);
/// Ids with a NUL byte (which PostgreSQL's text cannot hold) or of no known
/// form name nothing, on either backend: not found, never an error.
async fn odd_ids(h: Harness) {
    let db = &h.db;
    db.create_subscription(sub("sub_a"), 10).await.unwrap();
    for odd in ["sub_\0a", "nope", "evt_\0"] {
        assert!(db.subscription(odd).await.unwrap().is_none());
        assert!(!db.delete_subscription(odd).await.unwrap());
        assert!(db.delivery("sub_a", odd).await.unwrap().is_none());
        assert!(db.delivery(odd, odd).await.unwrap().is_none());
        assert!(matches!(
            db.retry(odd, odd).await.unwrap(),
            Retried::NotFound
        ));
        assert!(db.event(odd).await.unwrap().is_none());
        assert!(db.room(odd).await.unwrap().is_none());
        assert_eq!(db.stats(odd).await.unwrap().pending, 0);
        let (list, _) = db
            .list_deliveries_where(odd, Some(odd), 10, None)
            .await
            .unwrap();
        assert!(list.is_empty());
        let page = db
            .list_events(&EventFilter {
                room: None,
                kind: None,
                after: Some(odd.into()),
                limit: 10,
            })
            .await
            .unwrap();
        assert!(page.events.is_empty());
    }
}
