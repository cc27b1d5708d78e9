//! JSON logs through a whole run (a subscription, a rotation, a failed
//! delivery): one object per line, ids as fields, no secret or token.

use crate::receiver::Receiver;
use crate::support::*;
use axum::http::StatusCode as AxStatus;
use axum::response::IntoResponse;
use serde_json::{json, Value};
use std::io::Read;
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_ids_and_never_secrets() {
    let up = spawn_upstream().await;
    let rx = Receiver::spawn().await;
    rx.answer(|_, _| AxStatus::BAD_GATEWAY.into_response());
    let dir = tempfile::TempDir::new().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_verriflo-relay"))
        .arg("serve")
        .env("VERRIFLO_ORG_ID", ORG)
        .env("VERRIFLO_API_URL", &up.url)
        .env("RELAY_ADMIN_TOKEN", TOKEN)
        .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("RELAY_DATA_DIR", dir.path())
        .env("RELAY_POLL_INTERVAL", "20ms")
        .env("RELAY_ALLOW_PRIVATE_TARGETS", "true")
        .env("RELAY_RETRY_SCHEDULE", "10ms,10ms")
        .env("RELAY_LOG_FORMAT", "json")
        .env("RELAY_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut r = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move { r.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    eventually("the relay to come up", || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let created = call(
        reqwest::Method::POST,
        "/v1/subscriptions",
        Some(json!({"url": rx.url, "rooms": ["log-room"]})),
    )
    .await;
    let sub = created["data"]["id"].as_str().unwrap().to_string();
    let first_secret = created["data"]["secret"].as_str().unwrap().to_string();
    let rotated = call(
        reqwest::Method::POST,
        &format!("/v1/subscriptions/{sub}/rotate-secret"),
        None,
    )
    .await;
    let second_secret = rotated["data"]["secret"].as_str().unwrap().to_string();
    eventually("the baseline", || async {
        let r = call(reqwest::Method::GET, "/v1/rooms/log-room", None).await;
        (!r["data"]["status"].is_null()).then_some(())
    })
    .await;
    up.mock.set_room(idle("log-room"));
    eventually("the delivery to fail", || async {
        let d = call(
            reqwest::Method::GET,
            &format!("/v1/subscriptions/{sub}/deliveries"),
            None,
        )
        .await;
        (d["data"]["deliveries"][0]["status"] == "failed").then_some(())
    })
    .await;
    // A clean stop flushes the log.
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(child.wait().unwrap().success());

    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}"))
        })
        .collect();
    assert!(lines.len() > 10);
    let has = |field: &str| {
        lines
            .iter()
            .any(|l| !l[field].is_null() || !l["span"][field].is_null())
    };
    for field in ["room", "subscription", "event", "delivery"] {
        assert!(has(field), "no log line carries {field}");
    }
    for secret in [
        &first_secret,
        &second_secret,
        &TOKEN.to_string(),
        &ORG.to_string(),
    ] {
        let bare = secret.trim_start_matches("whsec_");
        assert!(
            !stderr.contains(bare),
            "a secret or token leaked into the logs"
        );
    }
}
