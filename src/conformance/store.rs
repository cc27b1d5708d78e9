//! The store's contract, on both backends: rooms and their commits, events,
//! restarts and odd ids (the outbox's deliveries are in `deliveries`).

use super::harness::Harness;
use super::on_both;
use crate::event::EventType;
use crate::outbox::{Attempt, Completion, Health, Retried, Verdict};
use crate::room::{RoomId, RoomStatus};
use crate::store::{EventFilter, PollCommit};
use crate::subscription::Subscription;
use chrono::{Duration, Utc};

pub(super) fn room() -> RoomId {
    RoomId::parse("math 101").unwrap()
}

pub(super) fn live(n: u64) -> RoomStatus {
    RoomStatus::live_for_tests("math 101", n)
}

pub(super) fn sub(id: &str) -> Subscription {
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
