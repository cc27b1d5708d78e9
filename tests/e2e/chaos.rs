//! Chaos: a steady flow of room changes while the relay is killed with
//! SIGKILL twenty times. No event lost, none invented, none emitted twice;
//! every one delivered (the upstream's faults are in `upstream_chaos`).

use crate::child::{all_events, api, start, Relay};
use crate::receiver::Receiver;
use crate::support::*;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use verriflo_relay::mock::MockUpstream;
use verriflo_relay::room::RoomStatus;

/// Every state the upstream held for each room, in order.
pub(crate) type History = Arc<Mutex<HashMap<String, Vec<RoomStatus>>>>;

/// Deliveries in flight at once in the crash run: what a kill can repeat.
const CONCURRENCY: usize = 8;

pub(crate) fn live(room: &str, n: u64) -> RoomStatus {
    RoomStatus {
        is_active: true,
        has_teacher: Some(true),
        participant_count: Some(n),
        started_at: Some("2024-01-15T09:02:30.000Z".into()),
        ..idle(room)
    }
}

/// Change one room at a time; every state gets a participant count of its
/// own, so each is a visible change and each event names exactly one state.
pub(crate) fn drive(
    mock: MockUpstream,
    rooms: Vec<String>,
    pace: (u64, u64),
    history: History,
    running: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n = 100;
        while running.load(Ordering::SeqCst) {
            let (room, wait, flip_rec, flip_teacher) = {
                let mut rng = rand::thread_rng();
                (
                    rooms[rng.gen_range(0..rooms.len())].clone(),
                    rng.gen_range(pace.0..=pace.1),
                    rng.gen_bool(0.2),
                    rng.gen_bool(0.1),
                )
            };
            n += 1;
            let mut status = mock.room(&room).unwrap();
            status.participant_count = Some(n);
            if flip_rec {
                status.is_recording = Some(!status.is_recording.unwrap_or(false));
            }
            if flip_teacher {
                status.has_teacher = Some(!status.has_teacher.unwrap_or(false));
            }
            history
                .lock()
                .unwrap()
                .entry(room.clone())
                .or_default()
                .push(status.clone());
            mock.set_room(status);
            // The pace of the simulated classrooms, not a wait for a result.
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        n - 100
    })
}

/// Events of one room as poll groups: (previous, current, sequences).
fn groups(events: &[Value], room: &str) -> Vec<(Value, Value, Vec<u64>)> {
    let mut out: Vec<(Value, Value, Vec<u64>)> = Vec::new();
    for e in events.iter().filter(|e| e["data"]["roomId"] == room) {
        let (p, c, s) = (
            e["data"]["previous"].clone(),
            e["data"]["current"].clone(),
            e["data"]["sequence"].as_u64().unwrap(),
        );
        match out.last_mut() {
            Some(g) if g.0 == p && g.1 == c => g.2.push(s),
            _ => out.push((p, c, vec![s])),
        }
    }
    out
}

/// Until every room's snapshot is the upstream's last state.
pub(crate) async fn caught_up(base: &str, mock: &MockUpstream, rooms: &[String]) {
    for r in rooms {
        let want = serde_json::to_value(mock.room(r).unwrap()).unwrap();
        eventually(&format!("{r} to catch up"), || async {
            let room = api(base, reqwest::Method::GET, &format!("/v1/rooms/{r}"), None).await;
            (room["data"]["status"] == want).then_some(())
        })
        .await;
    }
}

/// Upstream answers counted by (room, participant count, stretch of time).
pub(crate) type Answers = HashMap<(String, u64, usize), usize>;

/// Check each room's events (see [`check_room`]) and that every state
/// served three times within one stretch is among them; returns how many
/// states had to be seen.
pub(crate) fn served_thrice_are_events(
    events: &[Value],
    rooms: &[String],
    history: &HashMap<String, Vec<RoomStatus>>,
    answers: &Answers,
) -> usize {
    let mut must_see = 0;
    for r in rooms {
        let held = history.get(r).map(Vec::as_slice).unwrap_or_default();
        let seen = check_room(events, r, held);
        for h in held {
            let n = h.participant_count.unwrap();
            let served_enough = answers
                .iter()
                .any(|((room, m, _), count)| room == r && *m == n && *count >= 3);
            if served_enough {
                must_see += 1;
                assert!(
                    seen.contains(&n),
                    "room {r}: the state with {n} participants was served three times in one stretch, and is no event"
                );
            }
        }
    }
    must_see
}

/// Check that each room's webhooks first arrived in `sequence` order
/// (1, 2, 3, …); returns how many arrivals were repeats.
pub(crate) fn first_arrivals_in_order(hooks: &[crate::receiver::Received]) -> usize {
    let (mut first, mut repeats) = (HashSet::new(), 0);
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for h in hooks {
        if !first.insert(h.id()) {
            repeats += 1;
            continue;
        }
        let body = h.json();
        let room = body["data"]["roomId"].as_str().unwrap().to_string();
        let seq = body["data"]["sequence"].as_u64().unwrap();
        let prev = last_seq.insert(room.clone(), seq).unwrap_or(0);
        assert_eq!(seq, prev + 1, "room {room}: delivered out of order");
    }
    repeats
}

/// No event invented, none twice, sequences contiguous; returns the states seen.
pub(crate) fn check_room(events: &[Value], room: &str, held: &[RoomStatus]) -> HashSet<u64> {
    let states: Vec<Value> = held
        .iter()
        .map(|h| serde_json::to_value(h).unwrap())
        .collect();
    let gs = groups(events, room);
    let seqs: Vec<u64> = gs.iter().flat_map(|g| g.2.clone()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "room {room}: sequences"
    );
    for pair in gs.windows(2) {
        // Each poll's previous is the last one's current: nothing emitted twice.
        assert_eq!(
            pair[1].0, pair[0].1,
            "room {room}: the chain of snapshots breaks"
        );
    }
    let mut seen = HashSet::new();
    for g in &gs {
        assert!(
            states.contains(&g.1) || g.1["participantCount"] == 1,
            "room {room}: an event names a state the upstream never held: {}",
            g.1
        );
        if let Some(n) = g.1["participantCount"].as_u64() {
            seen.insert(n);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_lose_nothing_and_invent_nothing() {
    let kills: usize = std::env::var("CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let rooms: Vec<String> = (0..4).map(|i| format!("k{i}")).collect();
    let up = spawn_upstream().await;
    up.mock.log_served();
    let rx = Receiver::spawn().await;
    for r in &rooms {
        up.mock.set_room(live(r, 1));
    }
    let dir = tempfile::TempDir::new().unwrap();
    let settings = vec![
        ("RELAY_ROOMS", rooms.join(",")),
        ("RELAY_RETRY_SCHEDULE", vec!["50ms"; 200].join(",")),
        ("RELAY_DELIVERY_CONCURRENCY", CONCURRENCY.to_string()),
    ];
    let mut relay: Relay = start(&up, dir.path(), &settings).await;
    let mut windows = vec![(Instant::now(), None::<Instant>)];
    let created = api(
        &relay.base,
        reqwest::Method::POST,
        "/v1/subscriptions",
        Some(json!({"url": rx.url})),
    )
    .await;
    assert_eq!(created["success"], true, "{created}");

    // The first poll of a room is a silent baseline: the flow starts after it.
    for r in &rooms {
        eventually(&format!("{r}'s baseline"), || async {
            let room = api(
                &relay.base,
                reqwest::Method::GET,
                &format!("/v1/rooms/{r}"),
                None,
            )
            .await;
            (!room["data"]["status"].is_null()).then_some(())
        })
        .await;
    }
    let history: History = Arc::default();
    let running = Arc::new(AtomicBool::new(true));
    let driver = drive(
        up.mock.clone(),
        rooms.clone(),
        (3, 25),
        history.clone(),
        running.clone(),
    );
    for _ in 0..kills {
        let uptime = Duration::from_millis(rand::thread_rng().gen_range(100..400));
        // Uptime before the next kill: the chaos schedule itself.
        tokio::time::sleep(uptime).await;
        relay.child.kill().expect("SIGKILL");
        relay.child.wait().unwrap();
        windows.last_mut().unwrap().1 = Some(Instant::now());
        relay = start(&up, dir.path(), &settings).await;
        windows.push((Instant::now(), None));
    }
    running.store(false, Ordering::SeqCst);
    let changes = driver.await.unwrap();
    caught_up(&relay.base, &up.mock, &rooms).await;
    let events = all_events(&relay.base).await;

    // A state must be an event when one relay process was served it twice
    // for its room: a room's polls are sequential, and a poll is committed
    // and flushed before the next one is sent. Answers are grouped by the
    // kills around them; a killed process may have one request per room
    // still on its way to the upstream, answered after the kill, so a
    // state needs three answers between two kills: two are then surely
    // the live process's. No wall clock decides what had to be seen.
    let history = history.lock().unwrap().clone();
    let kills_at: Vec<std::time::Instant> = windows
        .iter()
        .filter_map(|(_, b)| b.map(|b| b.into_std()))
        .collect();
    let mut answers = Answers::new();
    for s in up.mock.served() {
        let window = kills_at.iter().filter(|k| **k < s.at).count();
        let n = s.status.participant_count.unwrap_or(0);
        *answers
            .entry((s.status.room_id.clone(), n, window))
            .or_default() += 1;
    }
    let must_see = served_thrice_are_events(&events, &rooms, &history, &answers);
    assert!(
        must_see > 50,
        "too few changes to prove anything: {must_see}"
    );
    // Every event reached the receiver at least once.
    eventually("every event to be delivered", || async {
        let got: HashSet<String> = rx.hooks().iter().map(|h| h.id()).collect();
        events
            .iter()
            .all(|e| got.contains(e["id"].as_str().unwrap()))
            .then_some(())
    })
    .await;
    // First arrivals keep each room's order; repeats are only what was sent
    // and not yet recorded at a kill: at most the delivery concurrency in
    // flight, and as many answered while the last batch was recorded.
    let hooks = rx.hooks();
    let repeats = first_arrivals_in_order(&hooks);
    assert!(repeats <= kills * 2 * CONCURRENCY, "{repeats} repeats");
    eprintln!(
        "crash chaos: {kills} kills survived, {changes} upstream changes, {} events checked, {must_see} changes that had to be seen were seen, {} webhooks ({repeats} repeats)",
        events.len(),
        hooks.len()
    );
    drop(relay);
}
