//! Crash safety: the relay binary killed with SIGKILL while deliveries flow,
//! restarted on the same data dir, still delivers every stored event.

use crate::child::{all_events, api, start};
use crate::receiver::Receiver;
use crate::support::*;
use serde_json::json;
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const ROOMS: [&str; 4] = ["c0", "c1", "c2", "c3"];
const CONCURRENCY: usize = 8;

fn settings() -> Vec<(&'static str, String)> {
    vec![
        ("RELAY_ROOMS", ROOMS.join(",")),
        ("RELAY_RETRY_SCHEDULE", vec!["50ms"; 100].join(",")),
        ("RELAY_DELIVERY_CONCURRENCY", CONCURRENCY.to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_delivering_loses_nothing() {
    let up = spawn_upstream().await;
    let rx = Receiver::spawn().await;
    let dir = tempfile::TempDir::new().unwrap();
    for r in ROOMS {
        up.mock.set_room(idle(r));
    }
    let mut relay = start(&up, dir.path(), &settings()).await;
    let created = api(
        &relay.base,
        reqwest::Method::POST,
        "/v1/subscriptions",
        Some(json!({"url": rx.url})),
    )
    .await;
    assert_eq!(created["success"], true, "{created}");

    // A steady flow of changes: participant counts move in every room.
    let running = Arc::new(AtomicBool::new(true));
    let driver = {
        let (mock, running) = (up.mock.clone(), running.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while running.load(Ordering::SeqCst) {
                let room = ROOMS[(n % ROOMS.len() as u64) as usize];
                mock.update_room(room, |s| s.participant_count = Some(n % 50 + 1));
                n += 1;
                // Pacing of the simulated classroom, not a wait for a result.
                tokio::time::sleep(std::time::Duration::from_millis(7)).await;
            }
        })
    };

    let mut kill_marks = Vec::new();
    for round in 0..3 {
        let target = rx.hooks().len() + 40;
        eventually(&format!("deliveries before kill {round}"), || async {
            (rx.hooks().len() >= target).then_some(())
        })
        .await;
        relay.child.kill().expect("SIGKILL");
        relay.child.wait().unwrap();
        kill_marks.push(rx.hooks().len());
        relay = start(&up, dir.path(), &settings()).await;
    }
    running.store(false, Ordering::SeqCst);
    driver.await.unwrap();

    // The relay catches up with the last state, then delivers everything stored.
    for r in ROOMS {
        let want = serde_json::to_value(up.mock.room(r).unwrap()).unwrap();
        eventually(&format!("{r} to catch up"), || async {
            let room = api(
                &relay.base,
                reqwest::Method::GET,
                &format!("/v1/rooms/{r}"),
                None,
            )
            .await;
            (room["data"]["status"] == want).then_some(())
        })
        .await;
    }
    let events = all_events(&relay.base).await;
    assert!(events.len() >= 100, "only {} events", events.len());
    eventually("every stored event to arrive", || async {
        let got: std::collections::HashSet<String> = rx.hooks().iter().map(|r| r.id()).collect();
        events
            .iter()
            .all(|e| got.contains(e["id"].as_str().unwrap()))
            .then_some(())
    })
    .await;

    // Sequences are contiguous per room: no change emitted twice, none skipped.
    let mut by_room: HashMap<String, Vec<u64>> = HashMap::new();
    for e in &events {
        by_room
            .entry(e["data"]["roomId"].as_str().unwrap().into())
            .or_default()
            .push(e["data"]["sequence"].as_u64().unwrap());
    }
    for (room, seqs) in &by_room {
        assert_eq!(
            *seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "room {room}"
        );
    }
    // First arrivals keep each room's order; repeats are only what was in
    // flight at a kill (at most the delivery concurrency per kill).
    let hooks = rx.hooks();
    let mut seen = HashMap::new();
    let mut repeats = 0;
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for h in &hooks {
        let body = h.json();
        if seen.insert(h.id(), ()).is_some() {
            repeats += 1;
            continue;
        }
        let room = body["data"]["roomId"].as_str().unwrap().to_string();
        let seq = body["data"]["sequence"].as_u64().unwrap();
        let prev = last_seq.insert(room.clone(), seq).unwrap_or(0);
        assert_eq!(seq, prev + 1, "room {room} out of order");
    }
    assert!(
        repeats <= kill_marks.len() * CONCURRENCY,
        "{repeats} repeats"
    );
    eprintln!(
        "crash test: {} kills, {} events, {} webhooks received, {} repeats",
        kill_marks.len(),
        events.len(),
        hooks.len(),
        repeats
    );
    drop(relay);
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let up = spawn_upstream().await;
    let dir = tempfile::TempDir::new().unwrap();
    for r in ROOMS {
        up.mock.set_room(idle(r));
    }
    let mut relay = start(&up, dir.path(), &settings()).await;
    let pid = relay.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let status = eventually("the relay to exit", || {
        let done = relay.child.try_wait().unwrap();
        async move { done }
    })
    .await;
    assert_eq!(status.code(), Some(0));
    // The store it left opens again, with its rooms.
    let relay = start(&up, dir.path(), &settings()).await;
    let rooms = api(&relay.base, reqwest::Method::GET, "/v1/rooms", None).await;
    assert_eq!(rooms["data"].as_array().unwrap().len(), ROOMS.len());
    drop(relay);
}
