//! Cluster mode: three relay processes on one PostgreSQL (started by
//! `scripts/test.sh`), 300 rooms whose classes change all the while, one
//! receiver. One instance is SIGKILLed and started again; another is frozen
//! with SIGSTOP past the lease TTL, then thawed; a third stops cleanly at
//! the end and hands its rooms back. No change the upstream
//! served to an owner is lost, none is emitted twice, every event is
//! delivered in order per room, and outside takeovers each room is polled
//! about once per interval.

use crate::chaos::{
    caught_up, drive, first_arrivals_in_order, live, served_thrice_are_events, Answers, History,
};
use crate::child::{all_events, api, start, Relay};
use crate::receiver::Receiver;
use crate::support::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ROOMS: usize = 300;
const INTERVAL: Duration = Duration::from_millis(500);
const TTL: Duration = Duration::from_secs(2);

/// A database of its own on the test server.
pub(crate) async fn fresh_database() -> String {
    let admin_url = std::env::var("RELAY_TEST_DATABASE_URL")
        .expect("RELAY_TEST_DATABASE_URL: run scripts/test.sh, which starts PostgreSQL");
    let (admin, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .expect("the test server answers");
    tokio::spawn(conn);
    let name = format!("relay_e2e_{}", ulid::Ulid::new().to_string().to_lowercase());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

fn signal(relay: &Relay, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &relay.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// Every watched room's owner, from one instance's `GET /v1/rooms`.
async fn owners(base: &str) -> HashMap<String, Value> {
    let rooms = api(base, reqwest::Method::GET, "/v1/rooms", None).await;
    rooms["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["roomId"].as_str().unwrap().to_string(),
                r["owner"].clone(),
            )
        })
        .collect()
}

/// Leases the relays took over from one that stopped renewing.
async fn takeovers_of(relays: &[Relay]) -> f64 {
    let mut n = 0.0;
    for r in relays {
        let text = reqwest::get(format!("{}/metrics", r.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        n += text
            .lines()
            .find(|l| l.starts_with("relay_lease_takeovers_total "))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn three_relays_survive_a_kill_and_a_freeze_losing_nothing() {
    let url = fresh_database().await;
    let up = spawn_upstream().await;
    let rx = Receiver::spawn().await;
    let rooms: Vec<String> = (0..ROOMS).map(|i| format!("c{i:03}")).collect();
    for r in &rooms {
        up.mock.set_room(live(r, 1));
    }
    let dir = tempfile::TempDir::new().unwrap();
    let settings = |name: &str| {
        vec![
            ("RELAY_DATABASE_URL", url.clone()),
            ("RELAY_LEASE_TTL", format!("{}ms", TTL.as_millis())),
            ("RELAY_POLL_INTERVAL", format!("{}ms", INTERVAL.as_millis())),
            ("RELAY_INSTANCE_ID", name.to_string()),
            ("RELAY_RETRY_SCHEDULE", vec!["100ms"; 100].join(",")),
            ("RELAY_MAX_ROOMS", "1000".into()),
            // A dead instance's claims expire this long after, plus 5 s.
            ("RELAY_DELIVERY_TIMEOUT", "2s".into()),
        ]
    };
    let mut relays: Vec<Relay> = Vec::new();
    relays.push(start(&up, dir.path(), &settings("i0")).await);
    let base = relays[0].base.clone();
    let created = api(
        &base,
        reqwest::Method::POST,
        "/v1/subscriptions",
        Some(json!({"url": rx.url})),
    )
    .await;
    assert_eq!(created["success"], true, "{created}");
    for r in &rooms {
        let put = api(&base, reqwest::Method::PUT, &format!("/v1/rooms/{r}"), None).await;
        assert_eq!(put["success"], true, "{put}");
    }
    for name in ["i1", "i2"] {
        relays.push(start(&up, dir.path(), &settings(name)).await);
    }
    // The rooms spread over the three, and each has its silent baseline.
    eventually("every room owned, a third each, and baselined", || async {
        let list = api(&relays[2].base, reqwest::Method::GET, "/v1/rooms", None).await;
        let list = list["data"].as_array()?.clone();
        let mut per: HashMap<String, usize> = HashMap::new();
        for r in &list {
            r["status"].as_object()?;
            *per.entry(r["owner"].as_str()?.to_string()).or_default() += 1;
        }
        (list.len() == ROOMS && per.len() == 3 && per.values().all(|n| *n == ROOMS / 3))
            .then_some(())
    })
    .await;

    // Outside takeovers, each room is polled about once per interval.
    up.mock.log_served();
    let steady = std::time::Instant::now();
    // The length of the observation, not a wait for a result.
    tokio::time::sleep(INTERVAL * 8).await;
    let polls = up.mock.served().len() as f64;
    let intervals = steady.elapsed().as_secs_f64() / INTERVAL.as_secs_f64();
    let per_room = polls / ROOMS as f64 / intervals;
    assert!(
        per_room <= 1.2,
        "{per_room:.2} polls per room per interval in a steady cluster"
    );

    // Classes run; one instance is killed and comes back, another freezes.
    let history: History = Arc::default();
    let running = Arc::new(AtomicBool::new(true));
    let driver = drive(
        up.mock.clone(),
        rooms.clone(),
        (2, 12),
        history.clone(),
        running.clone(),
    );
    let mut disruptions = Vec::new();
    let pause = |d: Duration| tokio::time::sleep(d);
    pause(TTL).await;
    disruptions.push(std::time::Instant::now());
    relays[1].child.kill().expect("SIGKILL");
    relays[1].child.wait().unwrap();
    pause(TTL * 2).await;
    disruptions.push(std::time::Instant::now());
    relays[1] = start(&up, dir.path(), &settings("i1")).await;
    pause(TTL * 2).await;
    disruptions.push(std::time::Instant::now());
    signal(&relays[2], "-STOP");
    pause(TTL * 3).await;
    disruptions.push(std::time::Instant::now());
    signal(&relays[2], "-CONT");
    pause(TTL * 2).await;
    running.store(false, Ordering::SeqCst);
    let changes = driver.await.unwrap();

    caught_up(&base, &up.mock, &rooms).await;
    let events = all_events(&base).await;
    let shown = owners(&base).await;
    assert!(
        shown.values().all(|o| o.is_string()),
        "every room has an owner"
    );
    // The dead and the frozen instance's rooms were taken over, not waited for.
    let takeovers = takeovers_of(&relays).await;
    assert!(
        takeovers >= (ROOMS / 3) as f64,
        "{takeovers} rooms taken over"
    );

    // A state must be an event when it was served three times inside one
    // stable stretch: between disruptions, and past the lease TTL after
    // each (a takeover waits for the TTL). In a stable stretch each room
    // has one owner, which polls it in turn and commits each answer before
    // the next: of three answers two are surely its own. No wall clock
    // decides what had to be seen; the stretches come from the served log.
    let mut bounds: Vec<std::time::Instant> = disruptions
        .iter()
        .flat_map(|d| [*d, *d + TTL * 2])
        .collect();
    bounds.sort();
    let history = history.lock().unwrap().clone();
    let mut answers = Answers::new();
    for s in up.mock.served() {
        let stretch = bounds.iter().filter(|b| **b < s.at).count();
        // Odd stretches are takeovers in progress: nothing must be seen there.
        if stretch % 2 == 1 {
            continue;
        }
        let n = s.status.participant_count.unwrap_or(0);
        *answers
            .entry((s.status.room_id.clone(), n, stretch))
            .or_default() += 1;
    }
    let must_see = served_thrice_are_events(&events, &rooms, &history, &answers);
    assert!(
        must_see > 100,
        "too few changes to prove anything: {must_see}"
    );
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");

    // Every event reaches the receiver; first arrivals keep each room's order.
    eventually("every event to be delivered", || async {
        let got: HashSet<String> = rx.hooks().iter().map(|h| h.id()).collect();
        ids.iter().all(|id| got.contains(*id)).then_some(())
    })
    .await;
    let hooks = rx.hooks();
    let repeats = first_arrivals_in_order(&hooks);
    // A clean stop hands the rooms back at once: the others claim them as
    // free, none by a takeover after the TTL.
    let before = takeovers_of(&relays[1..]).await;
    signal(&relays[0], "-TERM");
    assert!(relays[0].child.wait().unwrap().success(), "a clean exit");
    eventually("the stopped relay's rooms to be claimed", || async {
        let now = owners(&relays[1].base).await;
        now.values().all(|o| o == "i1" || o == "i2").then_some(())
    })
    .await;
    assert_eq!(
        takeovers_of(&relays[1..]).await,
        before,
        "handed back, not taken over"
    );
    // Repeats are what was in flight at the kill and the freeze: at most
    // the delivery concurrency (64) each.
    assert!(repeats <= 2 * 64, "{repeats} repeats");
    eprintln!(
        "cluster: {changes} upstream changes, {takeovers} rooms taken over, {} events, {must_see} changes that had to be seen were seen, {} webhooks ({repeats} repeats), {per_room:.2} polls per room per interval when steady",
        events.len(),
        hooks.len()
    );
}
