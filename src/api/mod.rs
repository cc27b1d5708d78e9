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
use tower_http::timeout::TimeoutLayer;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

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
}

/// Caps on what the API accepts.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_subscriptions: usize,
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
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
