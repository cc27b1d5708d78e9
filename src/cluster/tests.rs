//! Against a real PostgreSQL: `scripts/test.sh` starts one and sets
//! `RELAY_TEST_DATABASE_URL`; each test makes a database of its own.
//! Time passing is played by moving heartbeats and expiries into the past,
//! so no verdict depends on the clock.

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
    assert_eq!(ran, 1);
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
    RoomStatus {
        exists: true,
        is_active: true,
        room_id: "r1".into(),
        title: Some("Calculus".into()),
        participant_count: Some(n),
        has_teacher: Some(true),
        is_recording: Some(false),
        created_at: None,
        started_at: None,
    }
}

/// Diff against `base` and give the events ids, as a poller would.
fn answer(base: &crate::store::Base, n: u64) -> PollAnswer {
    let room = RoomId::parse("r1").unwrap();
    let mut a = PollAnswer::diffed(&room, base, &status(n), chrono::Utc::now(), false).unwrap();
    for e in &mut a.events {
        e.id = crate::ids::event_id(ulid::Ulid::new().into());
    }
    a
}

fn fenced<'a>(a: &'a PollAnswer, owner: &'a str, epoch: i64) -> Fenced<'a> {
    Fenced {
        owner,
        epoch,
        room: &a.room,
        base_version: a.base_version,
        status: &a.status,
        events: &a.events,
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
    assert_eq!(a.events.len(), 1);
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
