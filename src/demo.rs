//! `verriflo-relay demo`: a simulated upstream whose classes run on their own,
//! the relay against it, and a receiver that verifies and prints each webhook.

use crate::config::{Config, Sources};
use crate::mock::{MockUpstream, Scenario};
use crate::signing::{verify, Secret, DEFAULT_TOLERANCE};
use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const ROOMS: [&str; 4] = ["math-101", "chem-lab", "history-7b", "cs-intro"];

pub struct DemoOptions {
    pub data_dir: Option<PathBuf>,
    pub listen: SocketAddr,
    /// How often the simulated classes change.
    pub tick: Duration,
}

/// Run the demo until `shutdown` resolves.
pub async fn run(
    opts: DemoOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let org = "demo-org";

    let upstream = MockUpstream::new(Some(org.into()));
    let up_listener = TcpListener::bind("127.0.0.1:0").await?;
    let up_url = format!("http://{}", up_listener.local_addr()?);
    tokio::spawn(
        upstream
            .clone()
            .serve(up_listener, stop.clone().cancelled_owned()),
    );

    let secret: Arc<OnceLock<Secret>> = Arc::default();
    let rx_listener = TcpListener::bind("127.0.0.1:0").await?;
    let rx_url = format!("http://{}/webhooks", rx_listener.local_addr()?);
    let receiver = Router::new().fallback(receive).with_state(secret.clone());
    let rx_stop = stop.clone();
    tokio::spawn(async move {
        axum::serve(rx_listener, receiver)
            .with_graceful_shutdown(rx_stop.cancelled_owned())
            .await
    });

    let (data_dir, _temp) = match opts.data_dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::TempDir::new().context("creating a temporary data dir")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let token: String = {
        use rand::Rng;
        let random: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        format!("demo-{random}")
    };
    let mut sources = Sources::default();
    sources.set("VERRIFLO_ORG_ID", org);
    sources.set("VERRIFLO_API_URL", up_url.clone());
    sources.set("RELAY_ADMIN_TOKEN", token.clone());
    sources.set("RELAY_DATA_DIR", data_dir.to_string_lossy().to_string());
    sources.set("RELAY_POLL_INTERVAL", "500ms");
    sources.set("RELAY_ROOMS", ROOMS.join(","));
    sources.set("RELAY_ALLOW_PRIVATE_TARGETS", "true");
    sources.set("RELAY_RETRY_SCHEDULE", "1s,5s,30s");
    let config = Config::from_sources(&sources)?;
    // The usual admin port when free, any port otherwise.
    let listener = match TcpListener::bind(opts.listen).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind("127.0.0.1:0").await?,
    };
    let admin = format!("http://{}", listener.local_addr()?);
    let relay_stop = stop.clone();
    let relay = tokio::spawn(crate::app::run(
        config,
        listener,
        relay_stop.cancelled_owned(),
    ));

    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{admin}/v1/subscriptions"))
        .bearer_auth(&token)
        .json(&json!({"url": rx_url, "description": "demo receiver"}))
        .send()
        .await
        .context("subscribing the demo receiver")?
        .json()
        .await?;
    let text = created["data"]["secret"]
        .as_str()
        .context("no secret in the subscription")?;
    let _ = secret.set(Secret::parse(text)?);

    let link: Value = http
        .post(format!("{admin}/v1/dashboard/login-link"))
        .bearer_auth(&token)
        .send()
        .await
        .context("asking for a dashboard login link")?
        .json()
        .await?;
    let link = link["data"]["path"].as_str().context("no dashboard link")?;

    println!("verriflo-relay demo: simulated Verriflo classes -> relay -> verifying receiver");
    println!("  dashboard   {admin}{link}   (one click logs you in; works once, for 10 minutes)");
    println!("  admin API   {admin}   (token: {token})");
    println!("  try         curl -H 'Authorization: Bearer {token}' {admin}/v1/rooms");
    println!(
        "  upstream    {up_url}   (simulated; rooms: {})",
        ROOMS.join(", ")
    );
    println!("  receiver    {rx_url}");
    println!("  data dir    {}", data_dir.display());
    println!("Ctrl-C stops everything.\n");

    tokio::spawn(
        Scenario {
            rooms: ROOMS.iter().map(|s| s.to_string()).collect(),
            tick: opts.tick,
        }
        .run(upstream, stop.clone()),
    );
    shutdown.await;
    println!("\nstopping: relay drains and flushes its store");
    stop.cancel();
    relay.await.context("the relay task")??;
    Ok(())
}

/// The demo receiver: verify the signature, then print one line.
async fn receive(
    State(secret): State<Arc<OnceLock<Secret>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(secret) = secret.get() else {
        return StatusCode::SERVICE_UNAVAILABLE; // not subscribed yet: the relay retries
    };
    let now = chrono::Utc::now().timestamp();
    if let Err(e) = verify(secret, &headers, &body, now, DEFAULT_TOLERANCE) {
        println!("REJECTED  {e}");
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    println!("{}", describe(&event));
    StatusCode::NO_CONTENT
}

/// `verified 14:02:11  math-101    teacher.joined        hasTeacher false → true`
pub fn describe(event: &Value) -> String {
    let time = event["timestamp"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_default();
    let data = &event["data"];
    // Only the fields this event is about: one poll's events share `changes`.
    let fields: &[&str] = match event["type"].as_str().unwrap_or("") {
        "participants.changed" => &["participantCount"],
        "room.updated" | "room.created" => &["title"],
        "teacher.joined" | "teacher.left" => &["hasTeacher"],
        "recording.started" | "recording.stopped" => &["isRecording"],
        "room.started" | "room.ended" => &["isActive"],
        "room.deleted" => &["exists"],
        _ => &[],
    };
    let mut changes: Vec<String> = fields
        .iter()
        .filter_map(|k| {
            let v = data["changes"].get(*k)?;
            Some(format!(
                "{k} {} → {}",
                short(&v["previous"]),
                short(&v["current"])
            ))
        })
        .collect();
    if data["inferred"] == true {
        changes.push("(inferred)".into());
    }
    format!(
        "verified {time}  {:<11} {:<21} {}",
        data["roomId"].as_str().unwrap_or("-"),
        event["type"].as_str().unwrap_or("?"),
        changes.join(", ")
    )
}

fn short(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_an_event_in_one_line() {
        let e = json!({"type": "teacher.joined", "timestamp": "2024-01-15T09:02:30Z", "data": {
            "roomId": "math-101", "changes": {"hasTeacher": {"previous": false, "current": true}}}});
        let line = describe(&e);
        assert!(line.starts_with("verified 09:02:30  math-101"), "{line}");
        assert!(
            line.contains("teacher.joined") && line.contains("hasTeacher false → true"),
            "{line}"
        );
    }
}
