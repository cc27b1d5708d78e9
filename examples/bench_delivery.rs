//! Benchmark: webhook deliveries per second with 1 and with 100
//! subscriptions, beside a bare HTTP POST loop against the same receiver; and
//! change-to-delivery latency at 1,000 rooms on a 1 s interval.
//!
//! Run: `cargo run --release --example bench_delivery`

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use verriflo_relay::config::{Config, Sources};
use verriflo_relay::mock::MockUpstream;
use verriflo_relay::room::RoomStatus;

const TOKEN: &str = "bench-token-0123456789";

#[derive(Clone, Default)]
struct Sink {
    count: Arc<AtomicU64>,
    /// (roomId, participantCount) → when it arrived, for the latency run.
    arrivals: Arc<Mutex<HashMap<(String, u64), Instant>>>,
    track: Arc<std::sync::atomic::AtomicBool>,
}

async fn sink(State(s): State<Sink>, body: Bytes) -> StatusCode {
    s.count.fetch_add(1, Ordering::Relaxed);
    if s.track.load(Ordering::Relaxed) {
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            if v["type"] == "participants.changed" {
                let room = v["data"]["roomId"].as_str().unwrap_or_default().to_string();
                let n = v["data"]["current"]["participantCount"]
                    .as_u64()
                    .unwrap_or(0);
                s.arrivals
                    .lock()
                    .unwrap()
                    .entry((room, n))
                    .or_insert_with(Instant::now);
            }
        }
    }
    StatusCode::OK
}

async fn spawn_sink() -> (String, Sink) {
    let s = Sink::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = Router::new().fallback(sink).with_state(s.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, s)
}

async fn spawn_upstream() -> (MockUpstream, String) {
    let mock = MockUpstream::new(None);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(mock.clone().serve(listener, std::future::pending()));
    (mock, url)
}

struct Relay {
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn spawn_relay(upstream: &str, interval: &str, initial: bool) -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Sources::default();
    s.set("VERRIFLO_ORG_ID", "bench");
    s.set("VERRIFLO_API_URL", upstream);
    s.set("RELAY_ADMIN_TOKEN", TOKEN);
    s.set("RELAY_DATA_DIR", dir.path().to_string_lossy().to_string());
    s.set("RELAY_POLL_INTERVAL", interval);
    s.set("RELAY_ALLOW_PRIVATE_TARGETS", "true");
    s.set(
        "RELAY_INITIAL_EVENTS",
        if initial { "true" } else { "false" },
    );
    let config = Config::from_sources(&s).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(verriflo_relay::app::run(config, listener, async move {
        let _ = rx.await;
    }));
    Relay {
        base,
        http: reqwest::Client::new(),
        _dir: dir,
        _stop: tx,
    }
}

impl Relay {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    async fn events_total(&self) -> usize {
        let mut n = 0;
        let mut after = String::new();
        loop {
            let v = self
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/events?limit=1000{after}"),
                    json!(null),
                )
                .await;
            n += v["data"]["events"].as_array().unwrap().len();
            match v["data"]["next"].as_str() {
                Some(c) => after = format!("&after={c}"),
                None => return n,
            }
        }
    }
}

fn live(room: &str, participants: u64) -> RoomStatus {
    RoomStatus {
        exists: true,
        is_active: true,
        room_id: room.into(),
        title: Some("Bench".into()),
        participant_count: Some(participants),
        has_teacher: Some(true),
        is_recording: Some(true),
        created_at: Some("2024-01-15T09:00:00.000Z".into()),
        started_at: Some("2024-01-15T09:02:30.000Z".into()),
    }
}

async fn bare_loop(url: &str, seconds: u64, body: Vec<u8>) -> f64 {
    let client = reqwest::Client::new();
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for _ in 0..64 {
        let (client, done, url, body) =
            (client.clone(), done.clone(), url.to_string(), body.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < until {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let _ = r.bytes().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / seconds as f64
}

/// A simulated upstream with `rooms` live rooms, a sink, and the relay
/// watching every room.
async fn setup(
    rooms: usize,
    participants: u64,
    interval: &str,
    initial: bool,
) -> (MockUpstream, Relay, String, Sink) {
    let (mock, upstream) = spawn_upstream().await;
    let (url, sink) = spawn_sink().await;
    for i in 0..rooms {
        mock.set_room(live(&format!("room-{i:05}"), participants));
    }
    let relay = spawn_relay(&upstream, interval, initial).await;
    for i in 0..rooms {
        relay
            .call(
                reqwest::Method::PUT,
                &format!("/v1/rooms/room-{i:05}"),
                json!(null),
            )
            .await;
    }
    (mock, relay, url, sink)
}

/// Events pile up first; then replay queues them for `subs` subscriptions at
/// once and we time until the receiver has every delivery.
async fn throughput(rooms: usize, subs: usize) -> (usize, f64) {
    let (_upstream, relay, url, sink) = setup(rooms, 3, "200ms", true).await;
    // Each live room's first poll yields five events.
    let events = rooms * 5;
    while relay.events_total().await < events {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stop polling so that only delivery is measured; the events stay.
    for i in 0..rooms {
        relay
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/rooms/room-{i:05}"),
                json!(null),
            )
            .await;
    }
    let mut ids = Vec::new();
    for _ in 0..subs {
        let v = relay
            .call(
                reqwest::Method::POST,
                "/v1/subscriptions",
                json!({"url": url}),
            )
            .await;
        ids.push(v["data"]["id"].as_str().unwrap().to_string());
    }
    let total = events * subs;
    let start = Instant::now();
    for id in &ids {
        relay
            .call(
                reqwest::Method::POST,
                &format!("/v1/subscriptions/{id}/replay"),
                json!({"since": "2000-01-01T00:00:00Z"}),
            )
            .await;
    }
    eprintln!("  (queued by replay in {:?})", start.elapsed());
    while (sink.count.load(Ordering::Relaxed) as usize) < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (total, total as f64 / start.elapsed().as_secs_f64())
}

async fn latency(
    rooms: usize,
    seconds: u64,
    changes_per_sec: u64,
) -> (usize, Duration, Duration, Duration) {
    let (mock, relay, url, sink) = setup(rooms, 1, "1s", false).await;
    relay
        .call(
            reqwest::Method::POST,
            "/v1/subscriptions",
            json!({"url": url, "events": ["participants.changed"]}),
        )
        .await;
    // Let every room take its baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sink.track.store(true, Ordering::Relaxed);
    let mut changes: Vec<((String, u64), Instant)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / changes_per_sec));
    for n in 0..(seconds * changes_per_sec) {
        tick.tick().await;
        let room = format!("room-{:05}", (n * 7919) as usize % rooms);
        // Unique per change so each arrival matches exactly one change.
        let count = 1_000 + n;
        mock.update_room(&room, |s| s.participant_count = Some(count));
        changes.push(((room, count), Instant::now()));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let arrivals = sink.arrivals.lock().unwrap().clone();
    let mut lat: Vec<Duration> = changes
        .iter()
        .filter_map(|(k, t)| arrivals.get(k).map(|a| a.saturating_duration_since(*t)))
        .collect();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (lat.len(), pct(0.50), pct(0.99), *lat.last().unwrap())
}

#[tokio::main]
async fn main() {
    let only = std::env::args().nth(1).unwrap_or_default();
    if only == "throughput" {
        let (n1, one) = throughput(4_000, 1).await;
        println!("relay, 1 subscription             {one:.0} deliveries/s ({n1} deliveries)");
        return;
    }
    let (url, _sink) = spawn_sink().await;
    let body = serde_json::to_vec(
        &json!({"type": "participants.changed", "data": {"pad": "x".repeat(900)}}),
    )
    .unwrap();
    let bare = bare_loop(&url, 5, body).await;
    println!("bare POST loop (64 in flight)     {bare:.0} req/s");
    let (n1, one) = throughput(4_000, 1).await;
    println!(
        "relay, 1 subscription             {one:.0} deliveries/s ({n1} deliveries, {:.0}% of bare)",
        100.0 * one / bare
    );
    let (n100, hundred) = throughput(200, 100).await;
    println!("relay, 100 subscriptions          {hundred:.0} deliveries/s ({n100} deliveries, {:.0}% of bare)", 100.0 * hundred / bare);
    let (n, p50, p99, max) = latency(1_000, 10, 50).await;
    println!(
        "change-to-delivery, 1,000 rooms @1s: {n} changes, p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
}
