//! The admin HTTP API: routes, auth, and the envelope.

mod auth;
mod deliveries;
pub mod error;
mod events;
mod health;
mod rooms;
mod subscriptions;

use crate::poller::Poller;
use crate::secret::{AdminToken, OrgId};
use crate::store::Store;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post, put};
use axum::Router;
use error::ApiError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub poller: Poller,
    pub admin_token: AdminToken,
    pub org_id: OrgId,
    pub allow_private_targets: bool,
    /// Wakes the delivery engine after the API queued something.
    pub wake: Arc<Notify>,
    pub limits: Limits,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Caps on what the API accepts.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_subscriptions: usize,
    pub max_rooms: usize,
    pub max_body: usize,
    pub request_timeout: Duration,
    pub ready_max_backlog: u64,
}

pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .route("/v1/rooms", get(rooms::list_rooms))
        .route(
            "/v1/rooms/{room_id}",
            put(rooms::put_room)
                .get(rooms::get_room)
                .delete(rooms::delete_room),
        )
        .route("/v1/events", get(events::list_events))
        .route("/v1/events/{id}", get(events::get_event))
        .route(
            "/v1/subscriptions",
            post(subscriptions::create).get(subscriptions::list),
        )
        .route(
            "/v1/subscriptions/{id}",
            get(subscriptions::get_one)
                .patch(subscriptions::patch)
                .delete(subscriptions::delete),
        )
        .route("/v1/subscriptions/{id}/secret", get(subscriptions::secret))
        .route(
            "/v1/subscriptions/{id}/rotate-secret",
            post(subscriptions::rotate),
        )
        .route("/v1/subscriptions/{id}/test", post(subscriptions::test))
        .route("/v1/subscriptions/{id}/deliveries", get(deliveries::list))
        .route(
            "/v1/subscriptions/{id}/deliveries/{delivery_id}/retry",
            post(deliveries::retry),
        )
        .route("/v1/subscriptions/{id}/replay", post(deliveries::replay))
        .route_layer(from_fn_with_state(state.clone(), auth::require_bearer));
    Router::new()
        .merge(admin)
        .route("/v1/room/{room_id}/status", get(rooms::drop_in_status))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits.max_body))
        .layer(axum::middleware::from_fn({
            let limit = state.limits.request_timeout;
            move |req, next| request_timeout(limit, req, next)
        }))
        .with_state(state)
}

/// Answer 408 in the envelope when a request takes longer than `limit`.
async fn request_timeout(
    limit: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test(start_paused = true)]
    async fn slow_requests_get_408_in_the_envelope() {
        let limit = Duration::from_secs(1);
        let app: Router = Router::new()
            .route(
                "/slow",
                get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }),
            )
            .route("/fast", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(move |req, next| {
                request_timeout(limit, req, next)
            }));
        let slow = app
            .clone()
            .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(slow.status(), StatusCode::REQUEST_TIMEOUT);
        let body = axum::body::to_bytes(slow.into_body(), 1024).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "request_timeout");
        let fast = app
            .oneshot(Request::get("/fast").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(fast.status(), StatusCode::OK);
    }
}
