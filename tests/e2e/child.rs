//! The relay binary as a child process, for tests that kill or signal it.

use crate::support::*;
use serde_json::Value;
use std::process::{Child, Command, Stdio};

pub struct Relay {
    pub child: Child,
    pub base: String,
}

/// A test that fails midway still leaves no relay running.
impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start the relay binary on `dir` against `up`; `extra` settings win over
/// the defaults (20 ms polls, private targets allowed, quiet logs).
pub async fn start(
    up: &Upstream,
    dir: &std::path::Path,
    extra: &[(&'static str, String)],
) -> Relay {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_verriflo-relay"));
    cmd.arg("serve")
        .env("VERRIFLO_ORG_ID", ORG)
        .env("VERRIFLO_API_URL", &up.url)
        .env("RELAY_ADMIN_TOKEN", TOKEN)
        .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("RELAY_DATA_DIR", dir)
        .env("RELAY_POLL_INTERVAL", "20ms")
        .env("RELAY_ALLOW_PRIVATE_TARGETS", "true")
        .env("RELAY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("the relay binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("the relay to come up", || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
    Relay { child, base }
}

pub async fn api(base: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap().json().await.unwrap()
}

pub async fn all_events(base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let page = api(
            base,
            reqwest::Method::GET,
            &format!("/v1/events?limit=1000{after}"),
            None,
        )
        .await;
        out.extend(page["data"]["events"].as_array().unwrap().iter().cloned());
        match page["data"]["next"].as_str() {
            Some(n) => after = format!("&after={n}"),
            None => return out,
        }
    }
}
