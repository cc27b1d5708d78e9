//! Benchmark: the relay polling 10,000 rooms on a 1 s interval against the
//! simulated upstream in another process, beside a bare HTTP client loop
//! against the same upstream in the same run.
//!
//! Run: `cargo build --release && cargo run --release --example bench_poll [rooms] [seconds]`

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn relay_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("verriflo-relay");
    assert!(
        bin.exists(),
        "build the binary first: cargo build --release"
    );
    bin
}

/// CPU seconds (user + system) and peak RSS (KiB) of a process, from /proc.
fn cpu_and_peak(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks as f64 / 100.0, peak)
}

async fn upstream_requests(http: &reqwest::Client, base: &str) -> u64 {
    let v: serde_json::Value = http
        .get(format!("{base}/_control/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"]["requests"].as_u64().unwrap()
}

async fn wait_up(http: &reqwest::Client, url: &str) {
    for _ in 0..200 {
        if http.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not come up");
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rooms: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let seconds: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(10);
    let bin = relay_binary();
    let http = reqwest::Client::new();

    let up_port = free_port();
    let upstream = format!("http://127.0.0.1:{up_port}");
    let mock = Kill(
        Command::new(&bin)
            .args([
                "mock-upstream",
                "--listen",
                &format!("127.0.0.1:{up_port}"),
                "--org-id",
                "bench",
            ])
            .env("RELAY_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_up(&http, &format!("{upstream}/_control/stats")).await;

    // Baseline: a bare client loop, 64 requests in flight like the relay's default.
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let client = reqwest::Client::new();
    let mut workers = Vec::new();
    for w in 0..64 {
        let (client, done, upstream) = (client.clone(), done.clone(), upstream.clone());
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < until {
                let url = format!("{upstream}/v1/room/room-{:05}/status", i % rooms);
                let r = client
                    .get(url)
                    .header("VF-ORG-ID", "bench")
                    .send()
                    .await
                    .unwrap();
                let _ = r.bytes().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
                i += 64;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let bare_rps = done.load(Ordering::Relaxed) as f64 / seconds as f64;

    // The relay, in its own process, configured through a TOML file.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    let list: Vec<String> = (0..rooms).map(|i| format!("\"room-{i:05}\"")).collect();
    std::fs::write(&config, format!("rooms = [{}]\n", list.join(","))).unwrap();
    let admin_port = free_port();
    let relay = Kill(
        Command::new(&bin)
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("VERRIFLO_ORG_ID", "bench")
            .env("VERRIFLO_API_URL", &upstream)
            .env("RELAY_ADMIN_TOKEN", "bench-token-0123456789")
            .env("RELAY_LISTEN", format!("127.0.0.1:{admin_port}"))
            .env("RELAY_DATA_DIR", dir.path().join("data"))
            .env("RELAY_POLL_INTERVAL", "1s")
            .env("RELAY_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = relay.0.id();
    wait_up(&http, &format!("http://127.0.0.1:{admin_port}/healthz")).await;
    // Warm-up: every room takes its baseline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu0, _) = cpu_and_peak(pid);
    let req0 = upstream_requests(&http, &upstream).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let req1 = upstream_requests(&http, &upstream).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, peak_kib) = cpu_and_peak(pid);
    drop(relay);
    drop(mock);

    let polls = (req1 - req0) as f64;
    let relay_rps = polls / elapsed;
    let schedule = rooms as f64; // one poll per room per second
    println!("rooms                      {rooms}");
    println!("window                     {seconds} s");
    println!("bare client loop           {bare_rps:.0} req/s");
    println!("relay polls                {relay_rps:.0} polls/s (schedule: {schedule:.0}/s)");
    println!(
        "relay / bare loop          {:.0}%",
        100.0 * relay_rps / bare_rps
    );
    println!(
        "relay / schedule           {:.0}%",
        100.0 * relay_rps / schedule
    );
    println!(
        "relay CPU per 1,000 polls  {:.3} CPU-s",
        (cpu1 - cpu0) / polls * 1000.0
    );
    println!(
        "relay peak RSS             {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
}
