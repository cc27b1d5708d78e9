//! What only a cluster has, against a real PostgreSQL (`scripts/test.sh`
//! starts one): migrations raced, leases spread and taken over, claims
//! across instances. Time passing is played by moving heartbeats and
//! expiries into the past, so no verdict depends on the clock. The store
//! and outbox contract itself is in `crate::conformance`, on both backends.

use super::lease::{Leases, Owned};
use super::{connect, schema, PgStore};
use crate::conformance::harness::fresh_database;
use crate::outbox::{Health, Verdict};
use crate::room::{RoomId, RoomStatus};
use crate::subscription::Subscription;
use chrono::Utc;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_postgres::Client;

const TTL: Duration = Duration::from_secs(10);
const HOLD: Duration = Duration::from_secs(30);

async fn migrated() -> (String, Client) {
    let url = fresh_database().await;
    let mut client = connect(&url).await.unwrap();
    schema::migrate(&mut client).await.unwrap();
    (url, client)
}

fn owners(rounds: &[&[Owned]]) -> Vec<BTreeSet<String>> {
    rounds
        .iter()
        .map(|o| o.iter().map(|x| x.room.clone()).collect())
        .collect()
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn relays_starting_together_migrate_once() {
    let url = fresh_database().await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        let url = url.clone();
        runs.push(tokio::spawn(async move {
            let mut c = connect(&url).await.unwrap();
            schema::migrate(&mut c).await.unwrap()
        }));
    }
    let mut ran = 0;
    for r in runs {
        ran += r.await.unwrap();
    }
    assert_eq!(ran, 2, "every migration ran once, across the three");
    let mut c = connect(&url).await.unwrap();
    assert_eq!(schema::migrate(&mut c).await.unwrap(), 0, "nothing left");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn rooms_spread_evenly_fail_over_and_come_back_on_a_clean_stop() {
    let (url, admin) = migrated().await;
    let names = ["a", "b", "c"];
    let mut stores = Vec::new();
    for n in names {
        stores.push(PgStore::open(&url, n.into(), 2).await.unwrap());
    }
    for i in 0..300 {
        let room = RoomId::parse(format!("room-{i:03}")).unwrap();
        stores[0].watch(&room).await.unwrap();
    }
    let leases: Vec<Leases> = names.iter().map(|n| Leases::new(*n, TTL)).collect();
    // A few rounds each: 100 rooms apiece, every room with one owner.
    let mut last = vec![Vec::new(); 3];
    for _ in 0..3 {
        for (i, l) in leases.iter().enumerate() {
            last[i] = stores[i].lease_round(l).await.unwrap().owned;
        }
    }
    let sets = owners(&[&last[0], &last[1], &last[2]]);
    assert!(
        sets.iter().all(|s| s.len() == 100),
        "{:?}",
        sets.iter().map(BTreeSet::len).collect::<Vec<_>>()
    );
    let all: BTreeSet<_> = sets.iter().flatten().collect();
    assert_eq!(all.len(), 300, "disjoint and complete");

    // c dies: its heartbeat and leases age past the TTL.
    admin
        .batch_execute(
            "UPDATE relay_members SET heartbeat_at = now() - interval '1 hour' WHERE instance = 'c';
             UPDATE relay_leases SET expires_at = now() - interval '1 second' WHERE owner = 'c'",
        )
        .await
        .unwrap();
    let dead: std::collections::BTreeMap<String, i64> =
        last[2].iter().map(|o| (o.room.clone(), o.epoch)).collect();
    let (mut taken, mut a, mut b) = (0, Vec::new(), Vec::new());
    for _ in 0..2 {
        let ra = stores[0].lease_round(&leases[0]).await.unwrap();
        let rb = stores[1].lease_round(&leases[1]).await.unwrap();
        taken += ra.taken_over + rb.taken_over;
        (a, b) = (ra.owned, rb.owned);
    }
    assert_eq!(taken, 100, "every room of the dead instance was taken over");
    assert_eq!((a.len(), b.len()), (150, 150));
    for o in a.iter().chain(&b) {
        if let Some(before) = dead.get(&o.room) {
            assert_eq!(o.epoch, before + 1, "a new owner, a new epoch: {o:?}");
        }
    }
    let shown = stores[2].owners().await.unwrap();
    assert_eq!(shown.len(), 300, "every room shows its owner");
    assert!(shown.values().all(|o| o == "a" || o == "b"));

    // b stops cleanly: its rooms are free at once, and a takes them all.
    assert_eq!(stores[1].leave(&leases[1]).await.unwrap(), 150);
    let ra = stores[0].lease_round(&leases[0]).await.unwrap();
    assert_eq!(ra.owned.len(), 300);
    assert_eq!(ra.taken_over, 0, "handed back, not taken over");
}

/// A stale owner (its lease expired and was taken) commits nothing, even
/// with the right version: one event per change, `sequence` contiguous.
#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn a_stale_owner_writes_nothing_and_sequence_stays_contiguous() {
    let (url, admin) = migrated().await;
    let old = PgStore::open(&url, "old".into(), 2).await.unwrap();
    let new = PgStore::open(&url, "new".into(), 2).await.unwrap();
    let room = RoomId::parse("r1").unwrap();
    let live = |n| RoomStatus::live_for_tests("r1", n);
    old.watch(&room).await.unwrap();
    let (l_old, l_new) = (Leases::new("old", TTL), Leases::new("new", TTL));
    old.lease_round(&l_old).await.unwrap();
    let now = Utc::now();
    old.record_poll(&room, &live(1), now, false).await.unwrap();
    old.record_poll(&room, &live(2), now, false).await.unwrap();
    let epoch_old = old.lease_epoch(&room).await.unwrap().unwrap();

    // The old owner stalls past its TTL; the new one takes the room.
    admin
        .batch_execute(
            "UPDATE relay_members SET heartbeat_at = now() - interval '1 hour' WHERE instance = 'old';
             UPDATE relay_leases SET expires_at = now() - interval '1 second'",
        )
        .await
        .unwrap();
    let taken = new.lease_round(&l_new).await.unwrap();
    assert_eq!((taken.taken_over, taken.owned[0].epoch), (1, epoch_old + 1));

    // Both diff the same change from the same base: only the owner's lands.
    let base = old.base(&room).await.unwrap().unwrap();
    let answer = crate::store::PollAnswer::diffed(&room, &base, &live(3), now, false).unwrap();
    let refused = old
        .commit_polls(&[(answer.clone(), epoch_old)])
        .await
        .unwrap();
    assert_eq!(refused, vec![crate::store::PollCommit::Stale]);
    let landed = new
        .commit_polls(&[(answer.clone(), epoch_old + 1)])
        .await
        .unwrap();
    assert!(matches!(&landed[0], crate::store::PollCommit::Changed(e) if e.len() == 1));
    let again = new.commit_polls(&[(answer, epoch_old + 1)]).await.unwrap();
    assert_eq!(
        again,
        vec![crate::store::PollCommit::Stale],
        "the version moved"
    );
    let seqs: Vec<i64> = admin
        .query(
            "SELECT sequence FROM relay_events WHERE room_id = 'r1' ORDER BY sequence",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seqs, vec![1, 2], "one event per change, contiguous");
}

/// Subscription `sub_a` to every room, room `r1` watched and leased by
/// `a`, and `polls` answers of it recorded (a baseline, then one change
/// each); returns when they were recorded.
async fn queue_changes(a: &PgStore, polls: u64) -> chrono::DateTime<Utc> {
    let s = Subscription::new(
        "sub_a".into(),
        "http://x/".into(),
        vec![],
        vec![],
        None,
        Utc::now(),
    );
    a.create_subscription(&s, 10).await.unwrap();
    let room = RoomId::parse("r1").unwrap();
    a.watch(&room).await.unwrap();
    a.lease_round(&Leases::new("a", TTL)).await.unwrap();
    let now = Utc::now();
    for n in 1..=polls {
        let status = RoomStatus::live_for_tests("r1", n);
        a.record_poll(&room, &status, now, false).await.unwrap();
    }
    now
}

fn succeeded(claim: crate::outbox::Claim) -> crate::outbox::Completion {
    crate::conformance::store::done(claim, Verdict::Succeeded, Health::Success)
}

/// One head per lane in flight across instances; a dead holder's claim
/// expires and its head goes out again; its late completion records
/// nothing; queuing wakes the others' listeners.
#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn lanes_are_shared_across_instances_one_head_at_a_time() {
    let (url, admin) = migrated().await;
    let a = PgStore::open(&url, "a".into(), 2).await.unwrap();
    let b = PgStore::open(&url, "b".into(), 2).await.unwrap();
    let woken = b.outbox_notified();
    let now = queue_changes(&a, 3).await;
    tokio::time::timeout(Duration::from_secs(15), woken.notified())
        .await
        .expect("b hears of the queued work");

    let held = a.claim(now, 10, HOLD).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].delivery.sequence, Some(1));
    assert!(
        b.claim(now, 10, HOLD).await.unwrap().is_empty(),
        "held by a"
    );

    // a dies holding it: its claim runs out, and b sends the head again.
    admin
        .batch_execute("UPDATE relay_lanes SET claim_until = now() - interval '1 second'")
        .await
        .unwrap();
    let taken = b.claim(Utc::now(), 10, HOLD).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].delivery.id, held[0].delivery.id, "at least once");
    let late = a
        .complete(held.into_iter().map(succeeded).collect(), now)
        .await
        .unwrap();
    assert_eq!(late, 0, "not a's to complete any more");
    let recorded = b
        .complete(taken.into_iter().map(succeeded).collect(), now)
        .await
        .unwrap();
    assert_eq!(recorded, 1);
    let next = a.claim(now, 10, HOLD).await.unwrap();
    assert_eq!(
        next[0].delivery.sequence,
        Some(2),
        "the lane moved on, in order"
    );
}

/// A queueing commit holds its subscription's key (the foreign key's
/// share lock) and then wants the lane; a completion that changes that
/// subscription's health holds the lane. Were the completion to want the
/// subscription row in a mode the key share blocks, the two would
/// deadlock, PostgreSQL would abort one, and an attempt already made
/// would be lost and made again. It takes a mode the key share allows.
#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn a_health_change_never_waits_on_a_queueing_commit() {
    let (url, mut other) = migrated().await;
    let a = PgStore::open(&url, "a".into(), 2).await.unwrap();
    let now = queue_changes(&a, 2).await; // a baseline, then a change
    let held = a.claim(now, 10, HOLD).await.unwrap();
    assert_eq!(held.len(), 1);

    // Another relay's commit, between its insert and its lane.
    let queueing = other.transaction().await.unwrap();
    queueing
        .execute(
            "SELECT 1 FROM relay_subscriptions WHERE id = 'sub_a' FOR KEY SHARE",
            &[],
        )
        .await
        .unwrap();
    let failed = held
        .into_iter()
        .map(|c| crate::conformance::store::done(c, Verdict::RetryAt(now), Health::Failure))
        .collect();
    // Bounded only so a regression fails instead of hanging.
    let recorded = tokio::time::timeout(Duration::from_secs(60), a.complete(failed, now))
        .await
        .expect("the completion does not wait for the queueing commit")
        .unwrap();
    assert_eq!(recorded, 1);
    queueing
        .execute(
            "SELECT 1 FROM relay_lanes WHERE subscription_id = 'sub_a' FOR UPDATE",
            &[],
        )
        .await
        .unwrap();
    queueing.commit().await.unwrap();
    let sub = a.subscription("sub_a").await.unwrap().unwrap();
    assert_eq!(sub.failing_since, Some(now), "the failure was recorded");
}

#[test]
fn only_sslmode_require_asks_for_tls() {
    let wants = |url: &str| super::wants_tls(&url.parse().unwrap());
    assert!(wants("postgres://u@db.example.com/relay?sslmode=require"));
    assert!(!wants("postgres://u@db.example.com/relay"));
    assert!(!wants("postgres://u@127.0.0.1/relay?sslmode=disable"));
}

/// Asked for TLS, a server without it is refused, never spoken to in plain text.
#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn sslmode_require_speaks_tls_or_not_at_all() {
    let url = format!("{}?sslmode=require", fresh_database().await);
    let refused = PgStore::open(&url, "tls".into(), 2).await;
    assert!(refused.is_err(), "the test server has no TLS");
}

/// Event ids follow commit order across relays, whatever their clocks: a
/// relay whose clock runs an hour ahead commits first, and the next
/// relay's events still sort after its.
#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn event_ids_follow_commit_order_across_relays() {
    let url = fresh_database().await;
    let ahead = PgStore::open(&url, "ahead".into(), 2).await.unwrap();
    let behind = PgStore::open(&url, "behind".into(), 2).await.unwrap();
    let (r1, r2) = (RoomId::parse("r1").unwrap(), RoomId::parse("r2").unwrap());
    ahead.watch(&r1).await.unwrap();
    ahead.watch(&r2).await.unwrap();
    // Each holds one room.
    let admin = connect(&url).await.unwrap();
    admin
        .batch_execute(
            "UPDATE relay_leases SET owner = CASE room_id WHEN 'r1' THEN 'ahead' ELSE 'behind' END,
                epoch = 1, expires_at = now() + interval '1 hour'",
        )
        .await
        .unwrap();
    let now = Utc::now();
    let later = now + chrono::Duration::hours(1);
    let live = |room: &str, n| RoomStatus::live_for_tests(room, n);
    ahead
        .record_poll(&r1, &live("r1", 1), later, false)
        .await
        .unwrap();
    behind
        .record_poll(&r2, &live("r2", 1), now, false)
        .await
        .unwrap();
    let crate::store::PollCommit::Changed(first) = ahead
        .record_poll(&r1, &live("r1", 2), later, false)
        .await
        .unwrap()
    else {
        panic!("a change");
    };
    let crate::store::PollCommit::Changed(second) = behind
        .record_poll(&r2, &live("r2", 2), now, false)
        .await
        .unwrap()
    else {
        panic!("a change");
    };
    assert!(
        second[0].id > first[0].id,
        "{} committed after {}",
        second[0].id,
        first[0].id
    );
}
