//! A webhook receiver: verifies each request with the library's Standard
//! Webhooks verifier and prints it.
//!
//! Run: `WEBHOOK_SECRET=whsec_... cargo run --example receiver -- 127.0.0.1:9000`

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use std::sync::Arc;
use verriflo_relay::signing::{verify, Secret, DEFAULT_TOLERANCE};

async fn receive(State(secret): State<Arc<Secret>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let now = chrono::Utc::now().timestamp();
    if let Err(e) = verify(&secret, &headers, &body, now, DEFAULT_TOLERANCE) {
        eprintln!("rejected: {e}");
        return StatusCode::UNAUTHORIZED;
    }
    let event: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    println!(
        "verified {id} {} room={} seq={}",
        event["type"].as_str().unwrap_or("?"),
        event["data"]["roomId"].as_str().unwrap_or("-"),
        event["data"]["sequence"]
    );
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let secret = std::env::var("WEBHOOK_SECRET")
        .map_err(|_| anyhow::anyhow!("set WEBHOOK_SECRET to the subscription's whsec_ secret"))?;
    let secret = Secret::parse(&secret).map_err(|e| anyhow::anyhow!("WEBHOOK_SECRET: {e}"))?;
    let app = Router::new()
        .route("/", post(receive))
        .route("/hook", post(receive))
        .with_state(Arc::new(secret));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "receiving webhooks on http://{}/hook",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(verriflo_relay::shutdown::signal())
        .await?;
    Ok(())
}
