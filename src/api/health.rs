//! `/healthz` and `/readyz`.

use super::AppState;
use crate::poller::Auth;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub async fn healthz() -> Response {
    Json(json!({"success": true, "message": "up", "data": {"status": "up"}})).into_response()
}

/// Ready when the store answers, the upstream did not reject our org id, and
/// the delivery backlog is under its threshold.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut reasons: Vec<String> = Vec::new();
    let cluster = state.store.instance().map(str::to_string);
    if !state.store.is_open().await {
        reasons.push(match cluster {
            Some(_) => "the database (RELAY_DATABASE_URL) does not answer".into(),
            None => "store is not readable".into(),
        });
    }
    let auth = state.poller.auth();
    if auth == Auth::Rejected {
        reasons.push("upstream rejects the organization id (401): check VERRIFLO_ORG_ID".into());
    }
    // Deliveries held for disabled subscriptions wait on the operator, not
    // on this relay: only the backlog that can move counts.
    let pending = state.store.deliverable().await.unwrap_or(0);
    if pending > state.limits.ready_max_backlog {
        reasons.push(format!(
            "delivery backlog of {pending} is past RELAY_READY_MAX_BACKLOG ({})",
            state.limits.ready_max_backlog
        ));
    }
    let upstream = match auth {
        Auth::Unknown => "unknown",
        Auth::Accepted => "accepted",
        Auth::Rejected => "rejected",
    };
    if reasons.is_empty() {
        let mut data = json!({"store": "ok", "upstream": upstream, "pendingDeliveries": pending});
        if let Some(instance) = cluster {
            // Which relay answered, and that the shared database did.
            data["database"] = json!("ok");
            data["instance"] = json!(instance);
        }
        let body = json!({"success": true, "message": "ready", "data": data});
        return Json(body).into_response();
    }
    let body = json!({
        "success": false,
        "message": reasons.join("; "),
        "error": {"code": "not_ready", "details": {"upstream": upstream, "pendingDeliveries": pending}},
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text, with the gauges read at scrape time.
pub async fn metrics(State(state): State<AppState>) -> Response {
    use crate::metrics::State as Label;
    use crate::poller::Health;
    let m = &state.metrics;
    let counts = state.poller.health_counts();
    for h in [
        Health::Ok,
        Health::Failing,
        Health::Unauthorized,
        Health::Invalid,
    ] {
        let n = counts.get(&h).copied().unwrap_or(0);
        m.rooms
            .get_or_create(&Label { state: h.as_str() })
            .set(n as i64);
    }
    let subs = state.store.subscriptions().await.unwrap_or_default();
    let enabled = subs.iter().filter(|s| s.enabled).count() as i64;
    m.subscriptions
        .get_or_create(&Label { state: "enabled" })
        .set(enabled);
    m.subscriptions
        .get_or_create(&Label { state: "disabled" })
        .set(subs.len() as i64 - enabled);
    let (pending, oldest) = state.store.pending().await.unwrap_or_default();
    m.pending.set(pending as i64);
    let age = oldest.map_or(0, |t| (chrono::Utc::now() - t).num_seconds().max(0));
    m.oldest_pending_seconds.set(age);
    m.poll_budget_spent
        .set(state.poller.spent_last_second() as i64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}
