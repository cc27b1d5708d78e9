//! Against a real PostgreSQL: `scripts/test.sh` starts one and sets
//! `RELAY_TEST_DATABASE_URL`; each test makes a database of its own.
//! Time passing is played by moving heartbeats and expiries into the past,
//! so no verdict depends on the clock.

use super::lanes;
use super::lease::{Leases, Owned};
use super::rooms::{self, CommitError, Fenced};
use super::{connect, schema};
use crate::room::{RoomId, RoomStatus};
use crate::store::PollAnswer;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_postgres::Client;

const TTL: Duration = Duration::from_secs(10);

async fn fresh_database() -> String {
    let admin_url = std::env::var("RELAY_TEST_DATABASE_URL")
        .expect("RELAY_TEST_DATABASE_URL: run scripts/test.sh, which starts PostgreSQL");
    let admin = connect(&admin_url).await.expect("the test server answers");
    let name = format!("relay_t_{}", ulid::Ulid::new().to_string().to_lowercase());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

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

async fn round(l: &Leases, c: &mut Client) -> super::lease::Round {
    l.round(c).await.unwrap()
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
    for i in 0..300 {
        rooms::watch(&admin, &RoomId::parse(format!("room-{i:03}")).unwrap())
            .await
            .unwrap();
    }
    let names = ["a", "b", "c"];
    let leases: Vec<Leases> = names.iter().map(|n| Leases::new(*n, TTL)).collect();
    let mut clients = Vec::new();
    for _ in &names {
        clients.push(connect(&url).await.unwrap());
    }
    // A few rounds each: 100 rooms apiece, every room with one owner.
    let mut last = vec![Vec::new(); 3];
    for _ in 0..3 {
        for (i, l) in leases.iter().enumerate() {
            last[i] = round(l, &mut clients[i]).await.owned;
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
        let ra = round(&leases[0], &mut clients[0]).await;
        let rb = round(&leases[1], &mut clients[1]).await;
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

    // b stops cleanly: its rooms are free at once, and a takes them all.
    assert_eq!(leases[1].leave(&mut clients[1]).await.unwrap(), 150);
    let ra = round(&leases[0], &mut clients[0]).await;
    assert_eq!(ra.owned.len(), 300);
    assert_eq!(ra.taken_over, 0, "handed back, not taken over");
}

fn status(n: u64) -> RoomStatus {
    RoomStatus::live_for_tests("r1", n)
}

/// Diff against `base` and build the events with ids, as a commit would.
fn answer(base: &crate::store::Base, n: u64) -> (PollAnswer, Vec<crate::event::Event>) {
    let room = RoomId::parse("r1").unwrap();
    let a = PollAnswer::diffed(&room, base, &status(n), chrono::Utc::now(), false).unwrap();
    let events = a.events(|| crate::ids::event_id(ulid::Ulid::new().into()));
    (a, events)
}

fn fenced<'a>(
    (a, events): &'a (PollAnswer, Vec<crate::event::Event>),
    owner: &'a str,
    epoch: i64,
) -> Fenced<'a> {
    Fenced {
        owner,
        epoch,
        room: &a.room,
        base_version: a.base_version,
        status: &a.status,
        events,
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn a_stale_owner_writes_nothing_and_sequence_stays_contiguous() {
    let (url, admin) = migrated().await;
    let room = RoomId::parse("r1").unwrap();
    rooms::watch(&admin, &room).await.unwrap();
    let (old, new) = (Leases::new("old", TTL), Leases::new("new", TTL));
    let mut c_old = connect(&url).await.unwrap();
    let mut c_new = connect(&url).await.unwrap();
    let epoch_old = round(&old, &mut c_old).await.owned[0].epoch;

    // The baseline and one change, by the owner.
    let base = rooms::base(&admin, &room).await.unwrap().unwrap();
    let a = answer(&base, 1);
    rooms::commit(&mut c_old, &fenced(&a, "old", epoch_old))
        .await
        .unwrap();
    let base = rooms::base(&admin, &room).await.unwrap().unwrap();
    let a = answer(&base, 2);
    assert_eq!(a.1.len(), 1);
    rooms::commit(&mut c_old, &fenced(&a, "old", epoch_old))
        .await
        .unwrap();

    // The old owner stalls past its TTL; the new one takes the room.
    admin
        .batch_execute(
            "UPDATE relay_members SET heartbeat_at = now() - interval '1 hour' WHERE instance = 'old';
             UPDATE relay_leases SET expires_at = now() - interval '1 second'",
        )
        .await
        .unwrap();
    let taken = round(&new, &mut c_new).await;
    assert_eq!((taken.taken_over, taken.owned[0].epoch), (1, epoch_old + 1));

    // Both poll the same change from the same base: only the owner's lands.
    let base = rooms::base(&admin, &room).await.unwrap().unwrap();
    let stale = answer(&base, 3);
    let fresh = answer(&base, 3);
    let refused = rooms::commit(&mut c_old, &fenced(&stale, "old", epoch_old)).await;
    assert!(matches!(refused, Err(CommitError::Fenced)), "{refused:?}");
    rooms::commit(&mut c_new, &fenced(&fresh, "new", epoch_old + 1))
        .await
        .unwrap();
    // A commit diffed against a version that moved is refused too.
    let late = rooms::commit(&mut c_new, &fenced(&fresh, "new", epoch_old + 1)).await;
    assert!(matches!(late, Err(CommitError::Fenced)));

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

async fn subscription(client: &Client, id: &str) {
    client
        .execute(
            "INSERT INTO relay_subscriptions (id, view, secrets) VALUES ($1, '{}', '[]')",
            &[&id],
        )
        .await
        .unwrap();
}

/// Queue `(room, sequence)` deliveries to `sub` in one transaction.
async fn queue(client: &mut Client, sub: &str, items: &[(&str, i64)]) {
    let ids: Vec<(String, String)> = items
        .iter()
        .map(|(room, seq)| {
            (
                format!("dlv_{sub}_{room}_{seq}"),
                format!("evt_{room}_{seq}"),
            )
        })
        .collect();
    let new: Vec<lanes::NewDelivery> = items
        .iter()
        .zip(&ids)
        .map(|((room, seq), (id, event))| lanes::NewDelivery {
            id,
            subscription_id: sub,
            event_id: event,
            room_id: room,
            sequence: *seq,
        })
        .collect();
    let tx = client.transaction().await.unwrap();
    lanes::enqueue(&tx, &new).await.unwrap();
    tx.commit().await.unwrap();
}

fn heads(h: &[lanes::Head]) -> Vec<(String, i64)> {
    let mut v: Vec<_> = h.iter().map(|h| (h.room_id.clone(), h.sequence)).collect();
    v.sort();
    v
}

const HOLD: Duration = Duration::from_secs(30);

#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn each_lane_has_one_head_in_flight_across_instances_in_order() {
    let (url, mut admin) = migrated().await;
    subscription(&admin, "s1").await;
    queue(
        &mut admin,
        "s1",
        &[("r1", 1), ("r1", 2), ("r1", 3), ("r2", 1), ("r2", 2)],
    )
    .await;
    let mut a = connect(&url).await.unwrap();
    let mut b = connect(&url).await.unwrap();
    let got = lanes::claim(&mut a, "a", HOLD, 10).await.unwrap();
    assert_eq!(heads(&got), vec![("r1".into(), 1), ("r2".into(), 1)]);
    assert!(
        lanes::claim(&mut b, "b", HOLD, 10)
            .await
            .unwrap()
            .is_empty(),
        "both lanes held"
    );

    let ok = serde_json::json!({"statusCode": 200});
    let r1 = got.iter().find(|h| h.room_id == "r1").unwrap();
    lanes::complete(&mut a, "a", r1, &lanes::Outcome::Succeeded, ok.clone())
        .await
        .unwrap();
    let next = lanes::claim(&mut b, "b", HOLD, 10).await.unwrap();
    assert_eq!(heads(&next), vec![("r1".into(), 2)]);
    let refused = lanes::complete(
        &mut a,
        "a",
        &next[0],
        &lanes::Outcome::Succeeded,
        ok.clone(),
    )
    .await;
    assert!(
        matches!(refused, Err(lanes::CompleteError::ClaimLost)),
        "not a's to complete"
    );

    // A retry later keeps the lane on its head: #3 never overtakes #2.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    lanes::complete(
        &mut b,
        "b",
        &next[0],
        &lanes::Outcome::RetryAt(later),
        ok.clone(),
    )
    .await
    .unwrap();
    assert!(
        lanes::claim(&mut a, "a", HOLD, 10)
            .await
            .unwrap()
            .is_empty(),
        "r1 waits, r2 held"
    );
    admin
        .batch_execute(
            "UPDATE relay_lanes SET due_at = now() - interval '1 second' WHERE room_id = 'r1'",
        )
        .await
        .unwrap();
    let again = lanes::claim(&mut a, "a", HOLD, 10).await.unwrap();
    assert_eq!(heads(&again), vec![("r1".into(), 2)]);
    let attempts: serde_json::Value = admin
        .query_one(
            "SELECT attempts FROM relay_deliveries WHERE room_id = 'r1' AND sequence = 2",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts.as_array().unwrap().len(), 1);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn a_dead_holders_claim_expires_and_queuing_wakes_listeners() {
    let (url, mut admin) = migrated().await;
    subscription(&admin, "s1").await;
    let (_listener, mut woken) = lanes::listen(&url).await.unwrap();
    queue(&mut admin, "s1", &[("r1", 1)]).await;
    tokio::time::timeout(Duration::from_secs(15), woken.recv())
        .await
        .expect("a notification within the deadline")
        .expect("the listener is alive");

    let mut a = connect(&url).await.unwrap();
    let mut b = connect(&url).await.unwrap();
    let held = lanes::claim(&mut a, "a", HOLD, 10).await.unwrap();
    assert_eq!(held.len(), 1);
    // a dies holding it: its claim runs out, and b sends the head again.
    admin
        .batch_execute("UPDATE relay_lanes SET claim_until = now() - interval '1 second'")
        .await
        .unwrap();
    let taken = lanes::claim(&mut b, "b", HOLD, 10).await.unwrap();
    assert_eq!(taken, held, "the same head, again: at least once");
    let late = lanes::complete(
        &mut a,
        "a",
        &held[0],
        &lanes::Outcome::Failed,
        serde_json::json!({}),
    )
    .await;
    assert!(matches!(late, Err(lanes::CompleteError::ClaimLost)));
    lanes::complete(
        &mut b,
        "b",
        &taken[0],
        &lanes::Outcome::Succeeded,
        serde_json::json!({}),
    )
    .await
    .unwrap();
    let lane: (Option<chrono::DateTime<chrono::Utc>>, Option<String>) = {
        let r = admin
            .query_one("SELECT due_at, claimed_by FROM relay_lanes", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(lane, (None, None), "an empty lane rests");
}
