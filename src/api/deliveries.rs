//! A subscription's deliveries: history, retry by hand, and replay.

use super::error::{ok, ok_value, ApiError, ApiJson, ApiPath, ApiQuery};
use super::schema::{DeliveryPage, Envelope, ErrorEnvelope, Queued};
use super::AppState;
use crate::outbox::{Delivery, DeliveryStatus, Retried, SubscriptionStats};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The cursor: deliveries older than this delivery id.
    before: Option<String>,
    /// 1 to 1000 (default 100).
    limit: Option<usize>,
    /// Only deliveries in this status. A filtered page reads at most 10,000
    /// deliveries; follow `next` for more.
    status: Option<DeliveryStatus>,
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}/deliveries", tag = "deliveries",
    params(("id" = String, Path, description = "Subscription id"), ListQuery),
    responses((status = 200, description = "Newest first", body = Envelope<DeliveryPage>), (status = 404, body = ErrorEnvelope)))]
pub async fn list(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    if state.store.subscription(&id).await?.is_none() {
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
        .list_deliveries_where(&id, q.before.as_deref(), limit, q.status)
        .await?;
    Ok(ok_value(
        "Deliveries, newest first",
        DeliveryPage { deliveries, next },
    ))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/deliveries/{delivery_id}/retry", tag = "deliveries",
    params(("id" = String, Path, description = "Subscription id"), ("delivery_id" = String, Path, description = "Delivery id")),
    responses((status = 202, body = Envelope<Delivery>), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "Only a failed delivery can be retried", body = ErrorEnvelope)))]
pub async fn retry(
    State(state): State<AppState>,
    ApiPath((id, delivery_id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::NotFound(format!(
            "no delivery {delivery_id:?} for subscription {id:?}"
        ))
    };
    match state.store.retry(&id, &delivery_id).await? {
        Retried::NotFound => Err(not_found()),
        Retried::NotFailed(d) => Err(ApiError::Conflict(format!(
            "delivery is {:?}, only a failed one can be retried",
            d.status
        ))),
        Retried::AlreadyQueued(other) => Err(ApiError::Conflict(format!(
            "its event is already queued again as delivery {other}"
        ))),
        Retried::Queued(d) => {
            state.wake.notify_one();
            Ok(ok(StatusCode::ACCEPTED, "Delivery queued again", d))
        }
    }
}

/// Queue again every stored event since this time that the subscription wants.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    since: DateTime<Utc>,
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/replay", tag = "deliveries",
    params(("id" = String, Path, description = "Subscription id")), request_body = ReplayBody,
    responses((status = 202, body = Envelope<Queued>), (status = 404, body = ErrorEnvelope)))]
pub async fn replay(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReplayBody>,
) -> Result<Response, ApiError> {
    let sub = state
        .store
        .subscription(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no subscription {id:?}")))?;
    let queued = state.store.replay(&sub, body.since, Utc::now()).await?;
    state.wake.notify_one();
    Ok(ok(
        StatusCode::ACCEPTED,
        "Events queued again",
        Queued { queued },
    ))
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}/stats", tag = "deliveries",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, description = "Backlog and recent success", body = Envelope<SubscriptionStats>), (status = 404, body = ErrorEnvelope)))]
pub async fn stats(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    if state.store.subscription(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no subscription {id:?}")));
    }
    let stats = state.store.stats(&id).await?;
    Ok(ok_value("Subscription figures", stats))
}
