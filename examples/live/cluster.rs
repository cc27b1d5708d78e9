//! Cluster mode beside sled, in one run: the same rooms polled and then
//! delivered by one relay on sled, one on PostgreSQL, and several on one
//! PostgreSQL. CPU is the relays' plus the database server's.

use super::nginx::Nginx;
use super::relay::{parent_and_cpu, Relay};
use serde_json::json;
use std::time::{Duration, Instant};

/// CPU seconds of the PostgreSQL server `scripts/pg.sh` started (its
/// postmaster and every backend under it).
fn database_cpu() -> f64 {
    let Ok(pid) = std::fs::read_to_string("target/pg/data/postmaster.pid") else {
        return 0.0;
    };
    let main: u32 = pid.lines().next().and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        if let Some((ppid, cpu)) = parent_and_cpu(pid) {
            if pid == main || ppid == main {
                total += cpu;
            }
        }
    }
    total
}

/// A database of its own on the benchmark's server.
async fn fresh_database(admin_url: &str) -> String {
    let (admin, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers: run scripts/bench-live.sh cluster");
    tokio::spawn(conn);
    let name = format!("bench_{}", ulid::Ulid::new().to_string().to_lowercase());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0)
}

struct Figures {
    polls_per_s: f64,
    cpu_per_poll_us: f64,
    deliveries_per_s: f64,
    cpu_per_delivery_us: f64,
    /// Of which the database server's.
    db_per_delivery_us: f64,
}

async fn polls(relays: &[Relay]) -> f64 {
    let mut n = 0.0;
    for r in relays {
        let text = r
            .http
            .get(format!("{}/metrics", r.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        n += text
            .lines()
            .filter(|l| l.starts_with("relay_polls_total{"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    n
}

fn cpu(relays: &[Relay]) -> f64 {
    relays.iter().map(Relay::cpu).sum::<f64>() + database_cpu()
}

/// One setup: `instances` relays (on `database`, or one on sled when None).
async fn run(
    nginx: &Nginx,
    rooms: usize,
    database: Option<&str>,
    instances: usize,
    live_all: &impl Fn(),
) -> Figures {
    let mut relays = Vec::new();
    for i in 0..instances {
        let name = format!("bench-{i}");
        let mut env = vec![("RELAY_POLL_INTERVAL", "1s")];
        if let Some(url) = database {
            env.push(("RELAY_DATABASE_URL", url));
            env.push(("RELAY_INSTANCE_ID", name.as_str()));
        }
        relays.push(Relay::start(&nginx.upstream, rooms, &env).await);
    }
    relays[0].baselined(rooms).await;
    // Leases settle and connections warm up before anything is counted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (p0, c0, t0) = (polls(&relays).await, cpu(&relays), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (p1, c1) = (polls(&relays).await, cpu(&relays));
    let n = p1 - p0;
    let (polls_per_s, cpu_per_poll_us) = (n / t0.elapsed().as_secs_f64(), (c1 - c0) / n * 1e6);

    relays[0].subscribe(&nginx.hook, json!([])).await;
    let before = nginx.count_lines("hook.log");
    let expected = rooms * 3;
    let (c0, d0, t0) = (cpu(&relays), database_cpu(), Instant::now());
    live_all();
    let deadline = Instant::now() + Duration::from_secs(600);
    while nginx.count_lines("hook.log") < before + expected {
        assert!(Instant::now() < deadline, "deliveries stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t0.elapsed().as_secs_f64();
    let (c1, d1) = (cpu(&relays), database_cpu());
    Figures {
        db_per_delivery_us: (d1 - d0) / expected as f64 * 1e6,
        polls_per_s,
        cpu_per_poll_us,
        deliveries_per_s: expected as f64 / took,
        cpu_per_delivery_us: (c1 - c0) / expected as f64 * 1e6,
    }
}

pub async fn compare(
    nginx: &Nginx,
    rooms: usize,
    instances: usize,
    idle_all: impl Fn(),
    live_all: impl Fn(),
) {
    let admin = std::env::var("RELAY_TEST_DATABASE_URL")
        .expect("RELAY_TEST_DATABASE_URL: run scripts/bench-live.sh cluster");
    let mut setups: Vec<(String, Option<String>, usize)> = vec![("sled".into(), None, 1)];
    for n in [1, instances] {
        let url = fresh_database(&admin).await;
        setups.push((format!("PostgreSQL x{n}"), Some(url), n));
    }
    let mut base = None;
    for (name, url, n) in setups {
        idle_all();
        let f = run(nginx, rooms, url.as_deref(), n, &live_all).await;
        let (bp, bd) = *base.get_or_insert((f.cpu_per_poll_us, f.cpu_per_delivery_us));
        println!(
            "cluster: {name}, {rooms} rooms at 1 s: {:.0} polls/s at {:.1} µs CPU per unchanged poll ({:.2} of sled); {} deliveries at {:.0}/s, {:.0} µs CPU per delivery ({:.2} of sled), {:.0} µs of it the database's",
            f.polls_per_s,
            f.cpu_per_poll_us,
            f.cpu_per_poll_us / bp,
            rooms * 3,
            f.deliveries_per_s,
            f.cpu_per_delivery_us,
            f.cpu_per_delivery_us / bd,
            f.db_per_delivery_us,
        );
    }
}
