//! The relay's release binary in its own process, for the live benchmarks.

use super::nginx::free_port;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "bench-token-0123456789";

pub fn room_id(i: usize) -> String {
    format!("room-{i:05}")
}

/// A process's parent and its CPU seconds (user + system), from
/// `/proc/PID/stat`; None when it is gone.
pub fn parent_and_cpu(pid: u32) -> Option<(u32, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state, ppid, ...
    let f: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Some((f.get(1)?.parse().ok()?, ticks as f64 / 100.0))
}

/// CPU seconds (user + system) and peak RSS (MiB) of a process.
fn cpu_and_peak(pid: u32) -> (f64, f64) {
    let cpu = parent_and_cpu(pid).map_or(0.0, |(_, c)| c);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    (cpu, kib / 1024.0)
}

pub struct Relay {
    pub base: String,
    pub http: reqwest::Client,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    pub async fn start(upstream: &str, rooms: usize, extra: &[(&str, &str)]) -> Self {
        let exe = std::env::current_exe().unwrap();
        let bin = exe
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("verriflo-relay");
        assert!(
            bin.exists(),
            "build the binary first: cargo build --release"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("relay.toml");
        let list: Vec<String> = (0..rooms).map(|i| format!("\"{}\"", room_id(i))).collect();
        std::fs::write(&config, format!("rooms = [{}]\n", list.join(","))).unwrap();
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--config", config.to_str().unwrap()])
            .env("VERRIFLO_ORG_ID", "bench")
            .env("VERRIFLO_API_URL", upstream)
            .env("RELAY_ADMIN_TOKEN", TOKEN)
            .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("RELAY_DATA_DIR", dir.path().join("data"))
            .env("RELAY_POLL_INTERVAL", "1s")
            .env("RELAY_MAX_ROOMS", rooms.max(1).to_string())
            .env("RELAY_ALLOW_PRIVATE_TARGETS", "true")
            .env("RELAY_READY_MAX_BACKLOG", "100000000")
            .env(
                "RELAY_LOG",
                std::env::var("BENCH_RELAY_LOG").unwrap_or("warn".into()),
            )
            .stdout(if std::env::var("BENCH_RELAY_LOG").is_ok() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let relay = Relay {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            child: cmd.spawn().unwrap(),
            _dir: dir,
        };
        for _ in 0..400 {
            if relay
                .http
                .get(format!("{}/healthz", relay.base))
                .send()
                .await
                .is_ok()
            {
                return relay;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the relay did not come up");
    }

    /// One admin API call. A request that meets a pooled connection the
    /// relay has just closed is sent again (twice at most); anything else
    /// stops the bench with what went wrong.
    pub async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut tries = 0;
        loop {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(TOKEN);
            if let Some(b) = &body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(res) => {
                    let status = res.status();
                    let text = res.text().await.expect("the relay's answer");
                    return serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("{path}: {status} {e}: {text}"));
                }
                Err(e) if e.is_request() && tries < 2 => tries += 1,
                Err(e) => panic!("{path}: {e:?}"),
            }
        }
    }

    /// Until every room has its baseline snapshot.
    pub async fn baselined(&self, rooms: usize) {
        loop {
            let v = self.api(reqwest::Method::GET, "/v1/rooms", None).await;
            let ready = v["data"]
                .as_array()
                .map(|a| a.iter().filter(|r| !r["status"].is_null()).count())
                .unwrap_or(0);
            if ready >= rooms {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn subscribe(&self, url: &str, events: Value) {
        let v = self
            .api(
                reqwest::Method::POST,
                "/v1/subscriptions",
                Some(json!({"url": url, "events": events})),
            )
            .await;
        assert_eq!(v["success"], true, "{v}");
    }

    /// When the last stored event was seen (Unix ms).
    pub async fn last_event_ms(&self) -> f64 {
        let (mut after, mut last) = (String::new(), 0.0f64);
        loop {
            let q = if after.is_empty() {
                String::new()
            } else {
                format!("&after={after}")
            };
            let v = self
                .api(
                    reqwest::Method::GET,
                    &format!("/v1/events?limit=1000{q}"),
                    None,
                )
                .await;
            for e in v["data"]["events"].as_array().unwrap() {
                let t =
                    chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
                last = last.max(t.timestamp_millis() as f64);
            }
            match v["data"]["next"].as_str() {
                Some(n) => after = n.to_string(),
                None => return last,
            }
        }
    }

    pub fn cpu(&self) -> f64 {
        cpu_and_peak(self.child.id()).0
    }

    pub fn peak_mib(&self) -> f64 {
        cpu_and_peak(self.child.id()).1
    }
}
