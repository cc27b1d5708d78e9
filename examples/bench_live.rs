//! Benchmark: the relay as users run it, polling and delivering at once,
//! against nginx as the upstream (a static file per room) and as the
//! receiver (`return 200`), with wrk's ceiling on the same nginx in the
//! same run.
//!
//! - `throughput ROOMS SUBS`: every room starts at once (3 events each);
//!   deliveries per second until the receiver has them all.
//! - `poll ROOMS INTERVAL SECONDS`: relay CPU per unchanged poll.
//! - `latency ROOMS RATE SECONDS`: RATE participant changes a second;
//!   change-to-receipt from the upstream's first answer that shows the
//!   change to the receiver's receipt (both from nginx's access logs).
//! - `cluster ROOMS INSTANCES`: sled, then one and INSTANCES relays on one
//!   PostgreSQL (`scripts/bench-live.sh` starts it): polls/s and CPU per
//!   unchanged poll, then every room live at once: deliveries/s and CPU per
//!   delivery, the database's CPU counted with the relays'.
//!
//! Run: `scripts/bench-live.sh` (installs nginx-light and wrk, builds, runs
//! every shape), or `cargo run --release --example bench_live -- throughput 10000 1`.

#[path = "live/cluster.rs"]
mod cluster;
#[path = "live/nginx.rs"]
mod nginx;
#[path = "live/relay.rs"]
mod relay;

use nginx::Nginx;
use relay::{room_id, Relay};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use verriflo_relay::room::RoomStatus;

fn idle(room: &str) -> RoomStatus {
    RoomStatus {
        exists: true,
        is_active: false,
        room_id: room.into(),
        title: Some("Calculus I".into()),
        participant_count: Some(0),
        has_teacher: Some(false),
        is_recording: Some(false),
        created_at: Some("2024-01-15T09:00:00.000Z".into()),
        started_at: None,
    }
}

/// Started with a teacher and a crowd: room.started, teacher.joined,
/// participants.changed.
fn live(room: &str, n: u64) -> RoomStatus {
    RoomStatus {
        is_active: true,
        has_teacher: Some(true),
        participant_count: Some(n),
        started_at: Some("2024-01-15T09:02:30.000Z".into()),
        ..idle(room)
    }
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

async fn throughput(rooms: usize, subs: usize) {
    let work = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(work.path(), false);
    for i in 0..rooms {
        nginx.set_room(&idle(&room_id(i)));
    }
    let ceiling_before = nginx.wrk_ceiling(5);
    let relay = Relay::start(&nginx.upstream, rooms, &[]).await;
    relay.baselined(rooms).await;
    for _ in 0..subs {
        relay.subscribe(&nginx.hook, json!([])).await;
    }
    let expected = rooms * subs * 3;
    // Every room starts at one instant, as the shape says. BENCH_ROOMS=serial
    // writes them one by one after the start instead, as runs before
    // 2026-12-04 did: the start then spreads over the writes' own time.
    let serial = std::env::var("BENCH_ROOMS").is_ok_and(|v| v == "serial");
    let staged = (!serial).then(|| {
        let all: Vec<RoomStatus> = (0..rooms).map(|i| live(&room_id(i), 5)).collect();
        nginx.stage_rooms(&all)
    });
    let (cpu0, t0, ms0) = (relay.cpu(), Instant::now(), unix_ms());
    match &staged {
        Some(dir) => nginx.switch_rooms(dir),
        None => {
            for i in 0..rooms {
                nginx.set_room(&live(&room_id(i), 5));
            }
            let took = t0.elapsed().as_secs_f64();
            println!("throughput: the rooms were written one by one in {took:.2} s");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while nginx.count_lines("hook.log") < expected {
        assert!(
            Instant::now() < deadline,
            "deliveries stalled at {}",
            nginx.count_lines("hook.log")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t0.elapsed().as_secs_f64();
    let cpu = relay.cpu() - cpu0;
    // The last receipt's own time, from nginx's log, rather than our poll of it.
    let last_ms: f64 = nginx
        .log("hook.log")
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .fold(0.0, f64::max)
        * 1000.0;
    let secs = ((last_ms - ms0) / 1000.0).max(0.001).min(took);
    if std::env::var_os("BENCH_TIMELINE").is_some() {
        let buckets = per_quarter_second(&nginx.log("hook.log"), ms0, last_ms);
        println!("throughput: receipts per 250 ms: {buckets:?}");
    }
    let ceiling_after = nginx.wrk_ceiling(5);
    let seen_ms = relay.last_event_ms().await;
    println!(
        "throughput: the last change was seen {:.2} s after the rooms started",
        (seen_ms - ms0) / 1000.0
    );
    println!(
        "throughput: {rooms} rooms x {subs} subscriptions = {expected} deliveries in {secs:.2} s: {:.0} deliveries/s; relay CPU {:.0} µs per delivery (polls included); peak RSS {:.1} MiB; wrk ceiling {ceiling_before:.0} / {ceiling_after:.0} req/s",
        expected as f64 / secs,
        cpu / expected as f64 * 1e6,
        relay.peak_mib()
    );
}

/// Receipts in each 250 ms from `from_ms` to `to_ms` (nginx's `$msec`
/// per line): where a run waits shows as a dip.
fn per_quarter_second(log: &str, from_ms: f64, to_ms: f64) -> Vec<usize> {
    let mut buckets = vec![0usize; 1 + ((to_ms - from_ms).max(0.0) / 250.0) as usize];
    let last = buckets.len() - 1;
    for t in log
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
    {
        let b = ((t * 1000.0 - from_ms) / 250.0).max(0.0) as usize;
        buckets[b.min(last)] += 1;
    }
    buckets
}

/// Relay CPU per unchanged poll: every room idle and unchanged, polled at
/// `interval`, measured over `seconds` after a warm-up. The baseline, in
/// the same run: the same binary polling through reqwest (the transport
/// it keeps for proxied egress; `NO_PROXY` sends it straight to nginx).
async fn poll_cost(rooms: usize, interval: &str, seconds: u64) {
    let work = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(work.path(), false);
    for i in 0..rooms {
        nginx.set_room(&idle(&room_id(i)));
    }
    let via_reqwest = [
        ("RELAY_POLL_INTERVAL", interval),
        ("HTTP_PROXY", "http://127.0.0.1:9"),
        ("NO_PROXY", "127.0.0.1,localhost"),
    ];
    let (rate_b, base, rss_b) = poll_cost_of(&nginx, rooms, &via_reqwest, seconds).await;
    println!(
        "poll cost: {rooms} rooms at {interval}, reqwest (baseline): {rate_b:.0} polls/s, relay CPU {base:.1} µs per unchanged poll, peak RSS {rss_b:.1} MiB",
    );
    let own = [("RELAY_POLL_INTERVAL", interval)];
    let (rate, cost, rss) = poll_cost_of(&nginx, rooms, &own, seconds).await;
    println!(
        "poll cost: {rooms} rooms at {interval}: {rate:.0} polls/s, relay CPU {cost:.1} µs per unchanged poll ({:.2} of the baseline), peak RSS {rss:.1} MiB",
        cost / base
    );
}

/// One relay polling `rooms` idle rooms: (polls/s, µs per poll, peak MiB).
async fn poll_cost_of(
    nginx: &Nginx,
    rooms: usize,
    env: &[(&str, &str)],
    seconds: u64,
) -> (f64, f64, f64) {
    let relay = Relay::start(&nginx.upstream, rooms, env).await;
    relay.baselined(rooms).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let polls = |text: String| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("relay_polls_total{"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    };
    let metrics = || async {
        relay
            .http
            .get(format!("{}/metrics", relay.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let (p0, c0, t0) = (polls(metrics().await), relay.cpu(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (p1, c1) = (polls(metrics().await), relay.cpu());
    let n = p1 - p0;
    (
        n / t0.elapsed().as_secs_f64(),
        (c1 - c0) / n * 1e6,
        relay.peak_mib(),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn latency(rooms: usize, rate: usize, seconds: usize) {
    let work = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(work.path(), true);
    for i in 0..rooms {
        nginx.set_room(&live(&room_id(i), 1));
    }
    let relay = Relay::start(&nginx.upstream, rooms, &[]).await;
    relay.baselined(rooms).await;
    relay
        .subscribe(&nginx.hook, json!(["participants.changed"]))
        .await;
    // Each change goes to a room of its own, so every event names one change.
    let changes = (rate * seconds).min(rooms);
    let mut written: HashMap<String, f64> = HashMap::new();
    let start = Instant::now();
    for k in 0..changes {
        let at = start + Duration::from_secs_f64(k as f64 / rate as f64);
        tokio::time::sleep_until(at.into()).await;
        let room = room_id(k);
        written.insert(room.clone(), unix_ms());
        nginx.set_room(&live(&room, 2));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while nginx.count_lines("hook.log") < changes {
        assert!(Instant::now() < deadline, "receipts stalled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The upstream's first answer after each write shows the change.
    let mut first_answer: HashMap<String, f64> = HashMap::new();
    for line in nginx.log("up.log").lines() {
        let mut it = line.split_whitespace();
        let (Some(t), Some(uri)) = (it.next(), it.next()) else {
            continue;
        };
        let t: f64 = t.parse::<f64>().unwrap_or(0.0) * 1000.0;
        let room = uri
            .trim_start_matches("/v1/room/")
            .trim_end_matches("/status");
        if let Some(w) = written.get(room) {
            // The file was renamed before `w` was read back; an answer that
            // ended a millisecond later was served from it.
            if t >= w.floor() + 1.0 {
                first_answer.entry(room.to_string()).or_insert(t);
            }
        }
    }
    let ids: HashMap<String, String> = {
        let mut map = HashMap::new();
        let mut after = String::new();
        loop {
            let q = if after.is_empty() {
                String::new()
            } else {
                format!("&after={after}")
            };
            let v = relay
                .api(
                    reqwest::Method::GET,
                    &format!("/v1/events?type=participants.changed&limit=1000{q}"),
                    None,
                )
                .await;
            for e in v["data"]["events"].as_array().unwrap() {
                map.insert(
                    e["id"].as_str().unwrap().to_string(),
                    e["data"]["roomId"].as_str().unwrap().to_string(),
                );
            }
            match v["data"]["next"].as_str() {
                Some(n) => after = n.to_string(),
                None => break map,
            }
        }
    };
    let mut lat = Vec::new();
    for line in nginx.log("hook.log").lines() {
        let mut it = line.split_whitespace();
        let (Some(t), Some(id)) = (it.next(), it.next()) else {
            continue;
        };
        let t: f64 = t.parse::<f64>().unwrap_or(0.0) * 1000.0;
        if let Some(seen) = ids.get(id).and_then(|room| first_answer.get(room)) {
            lat.push(t - seen);
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "latency: {rooms} rooms, {rate} changes/s for {seconds} s, {} matched: change-to-receipt p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (nginx logs in whole ms)",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0.0)
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |i: usize, d: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    match args.first().map(String::as_str) {
        Some("throughput") => throughput(n(1, 10_000), n(2, 1)).await,
        Some("latency") => latency(n(1, 1_000), n(2, 100), n(3, 10)).await,
        Some("cluster") => {
            let work = tempfile::tempdir().unwrap();
            let nginx = Nginx::start(work.path(), false);
            let rooms = n(1, 2_000);
            let idle_all = || (0..rooms).for_each(|i| nginx.set_room(&idle(&room_id(i))));
            let live_all = || (0..rooms).for_each(|i| nginx.set_room(&live(&room_id(i), 5)));
            cluster::compare(&nginx, rooms, n(2, 3), idle_all, live_all).await
        }
        Some("poll") => {
            let interval = args.get(2).cloned().unwrap_or_else(|| "1s".into());
            poll_cost(n(1, 10_000), &interval, n(3, 10) as u64).await
        }
        _ => {
            throughput(10_000, 1).await;
            throughput(2_000, 10).await;
            latency(1_000, 100, 10).await;
        }
    }
}
