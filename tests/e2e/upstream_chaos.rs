//! Chaos from the upstream: 30% of its answers spoiled (timeouts, garbage,
//! lies, errors) while rooms change; no false event, no true one missed.

use crate::chaos::{check_room, drive, live, History};
use crate::support::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use verriflo_relay::mock::{Fault, FaultKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_upstream_faults_make_no_false_event_and_miss_no_true_one() {
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let up = spawn_upstream().await;
    up.mock.log_served();
    let mut settings = fast_settings(&up);
    settings.retain(|(k, _)| {
        !matches!(
            *k,
            "RELAY_POLL_INTERVAL" | "RELAY_POLL_BACKOFF_MAX" | "RELAY_UPSTREAM_TIMEOUT"
        )
    });
    settings.push(("RELAY_POLL_INTERVAL", "20ms".into()));
    settings.push(("RELAY_POLL_BACKOFF_MAX", "80ms".into()));
    // Long enough that only a fault, never a busy machine, spoils an answer.
    settings.push(("RELAY_UPSTREAM_TIMEOUT", "2s".into()));
    let app = TestApp::spawn_with(settings, Arc::new(tempfile::TempDir::new().unwrap())).await;
    let rooms: Vec<String> = (0..3).map(|i| format!("u{i}")).collect();
    for r in &rooms {
        up.mock.set_room(live(r, 1));
        app.watch(r).await;
    }
    for r in &rooms {
        app.until_snapshot(r, &live(r, 1)).await;
    }
    // Six kinds of fault, each on ~5.8% of answers: 30% of answers spoiled.
    for kind in [
        FaultKind::Status { status: 500 },
        FaultKind::Status { status: 503 },
        FaultKind::RateLimited { retry_after: None },
        FaultKind::Garbage,
        FaultKind::Slow { delay_ms: 400 },
        FaultKind::WrongRoom,
    ] {
        up.mock.inject(Fault {
            kind,
            room_id: None,
            count: None,
            chance: Some(0.0578),
        });
    }
    let requests_before = up.mock.requests();
    let history: History = Arc::default();
    let running = Arc::new(AtomicBool::new(true));
    let driver = drive(
        up.mock.clone(),
        rooms.clone(),
        (60, 200),
        history.clone(),
        running.clone(),
    );
    // The chaos runs this long; nothing waits on it for a result.
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    running.store(false, Ordering::SeqCst);
    let changes = driver.await.unwrap();
    let faults = up.mock.faults_served();
    let answers = up.mock.requests() - requests_before;
    up.mock.clear_faults();
    for r in &rooms {
        app.until_snapshot(r, &up.mock.room(r).unwrap()).await;
    }
    let mut events = Vec::new();
    for r in &rooms {
        events.extend(app.events(r).await);
    }
    // A state answered twice in good shape must be an event: a room's
    // polls are sequential, so the first answer was stored before the
    // second was asked for. What the upstream served decides, not a clock.
    let history = history.lock().unwrap().clone();
    let mut good: HashMap<(String, u64), usize> = HashMap::new();
    for s in up.mock.served() {
        let n = s.status.participant_count.unwrap_or(0);
        *good.entry((s.status.room_id.clone(), n)).or_default() += 1;
    }
    let mut must_see = 0;
    for r in &rooms {
        let seen = check_room(&events, r, &history[r]);
        for h in &history[r] {
            let n = h.participant_count.unwrap();
            if good.get(&(r.clone(), n)).is_some_and(|c| *c >= 2) {
                must_see += 1;
                assert!(
                    seen.contains(&n),
                    "room {r}: a state answered twice is no event"
                );
            }
        }
    }
    let share = faults as f64 / answers as f64;
    assert!(
        (0.2..0.4).contains(&share),
        "faults on {share:.2} of answers"
    );
    eprintln!(
        "upstream chaos: {seconds} s, {answers} answers, {faults} faults injected ({:.0}%), {changes} changes, {} events checked, {must_see} states answered twice all seen, no false event",
        share * 100.0,
        events.len()
    );
}
