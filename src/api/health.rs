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

/// Ready when the store answers and the upstream did not reject our org id.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut reasons = Vec::new();
    if !state.store.is_open() {
        reasons.push("store is not readable");
    }
    let auth = state.poller.auth();
    if auth == Auth::Rejected {
        reasons.push("upstream rejects the organization id (401): check VERRIFLO_ORG_ID");
    }
    let upstream = match auth {
        Auth::Unknown => "unknown",
        Auth::Accepted => "accepted",
        Auth::Rejected => "rejected",
    };
    if reasons.is_empty() {
        let body = json!({"success": true, "message": "ready", "data": {"store": "ok", "upstream": upstream}});
        return Json(body).into_response();
    }
    let body = json!({
        "success": false,
        "message": reasons.join("; "),
        "error": {"code": "not_ready", "details": {"upstream": upstream}},
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}
