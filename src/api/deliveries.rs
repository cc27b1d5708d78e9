//! A subscription's deliveries: history, retry by hand, and replay.

use super::error::{ok, ok_value, ApiError, ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::delivery::DeliveryStatus;
use crate::store::delivery_key_of;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    before: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    if state.store.subscription(&id).is_none() {
        return Err(ApiError::NotFound(format!("no subscription {id:?}")));
    }
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > super::events::MAX_PAGE {
        return Err(ApiError::Validation(format!(
            "limit must be 1 to {}",
            super::events::MAX_PAGE
        )));
    }
    let (deliveries, next) = state
        .store
        .list_deliveries(&id, q.before.as_deref(), limit)?;
    Ok(ok_value(
        "Deliveries, newest first",
        json!({"deliveries": deliveries, "next": next}),
    ))
}

pub async fn retry(
    State(state): State<AppState>,
    ApiPath((id, delivery_id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::NotFound(format!(
            "no delivery {delivery_id:?} for subscription {id:?}"
        ))
    };
    let key = delivery_key_of(&delivery_id).ok_or_else(not_found)?;
    let current = state
        .store
        .delivery_at(&key)?
        .filter(|d| d.subscription_id == id)
        .ok_or_else(not_found)?;
    if current.status != DeliveryStatus::Failed {
        return Err(ApiError::Conflict(format!(
            "delivery is {:?}, only a failed one can be retried",
            current.status
        )));
    }
    let d = state
        .store
        .retry_delivery(&key, Utc::now())?
        .ok_or_else(not_found)?;
    state.wake.notify_one();
    Ok(ok(StatusCode::ACCEPTED, "Delivery queued again", d))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    since: DateTime<Utc>,
}

pub async fn replay(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReplayBody>,
) -> Result<Response, ApiError> {
    let sub = state
        .store
        .subscription(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no subscription {id:?}")))?;
    let queued = state.store.replay(&sub, body.since, Utc::now())?;
    state.wake.notify_one();
    Ok(ok(
        StatusCode::ACCEPTED,
        "Events queued again",
        json!({"queued": queued}),
    ))
}
