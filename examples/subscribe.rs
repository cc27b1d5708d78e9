//! Register a webhook subscription through the admin API and print its secret.
//!
//! Run: `RELAY_URL=http://127.0.0.1:8080 RELAY_ADMIN_TOKEN=... \
//!       cargo run --example subscribe -- https://lms.example.com/hooks 'room.*,teacher.*'`

use serde_json::{json, Value};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: subscribe URL [EVENTS]"))?;
    let events: Vec<String> = args
        .next()
        .map(|e| e.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let relay = std::env::var("RELAY_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let token =
        std::env::var("RELAY_ADMIN_TOKEN").map_err(|_| anyhow::anyhow!("set RELAY_ADMIN_TOKEN"))?;

    let answer: Value = reqwest::Client::new()
        .post(format!("{relay}/v1/subscriptions"))
        .bearer_auth(token)
        .json(&json!({"url": url, "events": events, "description": "registered by examples/subscribe.rs"}))
        .send()
        .await?
        .json()
        .await?;
    if answer["success"] != true {
        anyhow::bail!("the relay refused: {}", answer["message"]);
    }
    let sub = &answer["data"];
    println!("subscription {}", sub["id"].as_str().unwrap_or("?"));
    println!(
        "secret       {}  (verify webhooks with it; keep it safe)",
        sub["secret"].as_str().unwrap_or("?")
    );
    Ok(())
}
