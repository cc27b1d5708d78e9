//! Load with an outage: many rooms and subscriptions, half of the receivers
//! failing for a while. Memory stays bounded and the backlog drains once
//! they recover. Shortened here; the full run (10,000 rooms, 100
//! subscriptions) is
//! `OUTAGE_ROOMS=10000 OUTAGE_SUBS=100 cargo test --release --test e2e outage -- --nocapture`.

use crate::child::{all_events, api, start};
use crate::receiver::Receiver;
use crate::support::*;
use axum::http::StatusCode as AxStatus;
use axum::response::IntoResponse;
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use verriflo_relay::room::RoomStatus;

fn param(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_outage_under_load_drains_with_bounded_memory() {
    let (rooms, subs) = (param("OUTAGE_ROOMS", 600), param("OUTAGE_SUBS", 10));
    let (rounds, outage_rounds) = (param("OUTAGE_ROUNDS", 5), param("OUTAGE_FAILING_ROUNDS", 3));
    let up = spawn_upstream().await;
    let room = |i: usize| format!("room-{i:05}");
    for i in 0..rooms {
        up.mock.set_room(RoomStatus {
            is_active: true,
            participant_count: Some(0),
            ..idle(&room(i))
        });
    }
    let dir = tempfile::TempDir::new().unwrap();
    let settings = [
        ("RELAY_POLL_INTERVAL", "1s".to_string()),
        ("RELAY_RETRY_SCHEDULE", vec!["500ms"; 100].join(",")),
        ("RELAY_MAX_ROOMS", rooms.max(1).to_string()),
    ];
    let relay = start(&up, dir.path(), &settings).await;
    let pid = relay.child.id();

    // Each subscription covers its own share of the rooms; half of them fail.
    let failing = Arc::new(AtomicBool::new(true));
    let mut receivers = Vec::new();
    let per = rooms / subs;
    for s in 0..subs {
        let rx = Receiver::spawn().await;
        if s % 2 == 0 {
            let failing = failing.clone();
            rx.answer(move |_, _| {
                if failing.load(Ordering::SeqCst) {
                    AxStatus::SERVICE_UNAVAILABLE.into_response()
                } else {
                    AxStatus::OK.into_response()
                }
            });
        }
        let its_rooms: Vec<String> = (s * per..(s + 1) * per).map(room).collect();
        let created = api(
            &relay.base,
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(json!({"url": rx.url, "rooms": its_rooms})),
        )
        .await;
        assert_eq!(created["success"], true, "{created}");
        receivers.push((rx, its_rooms));
    }
    eventually("every room's baseline", || async {
        let listed = api(&relay.base, reqwest::Method::GET, "/v1/rooms", None).await;
        let all = listed["data"].as_array().unwrap();
        (all.len() == per * subs && all.iter().all(|r| !r["status"].is_null())).then_some(())
    })
    .await;

    // Every room changes once a round; the failing half recovers after a while.
    let mut max_pending = 0;
    for round in 1..=rounds {
        for i in 0..rooms {
            up.mock
                .update_room(&room(i), |s| s.participant_count = Some(round as u64));
        }
        if round == outage_rounds {
            failing.store(false, Ordering::SeqCst);
        }
        // One round per second of simulated classroom time.
        tokio::time::sleep(Duration::from_secs(1)).await;
        max_pending = max_pending.max(pending_deliveries(&relay.base).await);
    }
    let recovered = std::time::Instant::now();
    // Wait for the last round to be seen, then for the backlog to drain.
    eventually("the last round to be seen", || async {
        let listed = api(&relay.base, reqwest::Method::GET, "/v1/rooms", None).await;
        let all = listed["data"].as_array().unwrap();
        all.iter()
            .all(|r| r["status"]["participantCount"] == rounds)
            .then_some(())
    })
    .await;
    let deadline = DEADLINE.max(Duration::from_secs((rooms * rounds / 500) as u64));
    let start_wait = std::time::Instant::now();
    while pending_deliveries(&relay.base).await > 0 {
        assert!(start_wait.elapsed() < deadline, "the backlog did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = recovered.elapsed();
    let peak = peak_rss_mib(pid);
    // Every stored event reached the receiver that covers its room.
    let events = all_events(&relay.base).await;
    let mut expected = 0;
    for (rx, its_rooms) in &receivers {
        let ids: HashSet<String> = rx.hooks().iter().map(|h| h.id()).collect();
        let its: HashSet<&str> = its_rooms.iter().map(String::as_str).collect();
        for e in events
            .iter()
            .filter(|e| its.contains(e["data"]["roomId"].as_str().unwrap()))
        {
            expected += 1;
            assert!(
                ids.contains(e["id"].as_str().unwrap()),
                "an event never reached its receiver"
            );
        }
    }
    assert!(peak < 256.0, "peak RSS {peak:.0} MiB");
    eprintln!(
        "outage load: {rooms} rooms, {subs} subscriptions ({} failing for {outage_rounds} s), {expected} events delivered, backlog peaked at {max_pending}, drained {drained:.1?} after the last round, peak RSS {peak:.1} MiB",
        subs.div_ceil(2)
    );
    drop(relay);
}
