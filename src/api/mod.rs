//! The admin HTTP API: routes, auth, and the envelope.

pub mod auth;
mod deliveries;
pub mod error;
mod events;
mod health;
pub mod openapi;
mod rooms;
pub mod schema;
mod stream;
mod subscriptions;

use crate::backend::Backend;
use crate::poller::Poller;
use crate::secret::{AdminToken, OrgId};
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::Router;
use error::ApiError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(Clone)]
pub struct AppState {
    pub store: Backend,
    pub poller: Poller,
    pub admin_token: AdminToken,
    pub org_id: OrgId,
    pub allow_private_targets: bool,
    /// Wakes the delivery engine after the API queued something.
    pub wake: Arc<Notify>,
    pub limits: Limits,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Cancelled at shutdown: long-lived event streams end with it.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Dashboard sessions and one-time login links.
    pub ui: Arc<crate::ui::Sessions>,
}

/// Caps on what the API accepts.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_subscriptions: usize,
    pub max_rooms: usize,
    pub max_body: usize,
    pub request_timeout: Duration,
    pub ready_max_backlog: u64,
    /// Admin requests in flight at once; more get 429 at once.
    pub max_requests: usize,
    /// Browser origins allowed to call the drop-in route (CORS); none by default.
    pub cors_origins: Vec<axum::http::HeaderValue>,
}

pub fn router(state: AppState) -> Router {
    let (admin, mut doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(rooms::list_rooms))
        .routes(routes!(
            rooms::put_room,
            rooms::get_room,
            rooms::delete_room
        ))
        .routes(routes!(events::list_events))
        .routes(routes!(stream::stream))
        .routes(routes!(events::get_event))
        .routes(routes!(subscriptions::create, subscriptions::list))
        .routes(routes!(
            subscriptions::get_one,
            subscriptions::patch,
            subscriptions::delete
        ))
        .routes(routes!(subscriptions::secret))
        .routes(routes!(subscriptions::rotate))
        .routes(routes!(subscriptions::test))
        .routes(routes!(deliveries::list))
        .routes(routes!(deliveries::retry))
        .routes(routes!(deliveries::replay))
        .routes(routes!(deliveries::stats))
        .routes(routes!(crate::ui::login_link))
        .route_layer(from_fn_with_state(state.clone(), durable_writes))
        .route_layer(from_fn_with_state(state.clone(), auth::require_auth))
        .route_layer(axum::middleware::from_fn({
            let slots = Arc::new(tokio::sync::Semaphore::new(
                state.limits.max_requests.max(1),
            ));
            move |req, next| in_flight_cap(slots.clone(), req, next)
        }))
        .split_for_parts();
    let (drop_in, drop_in_doc) = drop_in_router(&state);
    doc.merge(drop_in_doc);
    let doc = Arc::new(openapi::finish(doc));
    Router::new()
        .merge(admin)
        .merge(drop_in)
        .merge(crate::ui::router())
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(move || openapi::serve(doc.clone())))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // gzip when asked: the rooms list at 10,000 rooms is 3.6 MB, and the
        // dashboard reloads it. Event streams are never compressed (the
        // default predicate skips them), so they stay live.
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(DefaultBodyLimit::max(state.limits.max_body))
        .layer(axum::middleware::from_fn({
            let limit = state.limits.request_timeout;
            move |req, next| request_timeout(limit, req, next)
        }))
        .with_state(state)
}

/// The drop-in status route: it authenticates itself (VF-ORG-ID or the
/// bearer token) and is the only route that answers browsers (CORS).
fn drop_in_router(state: &AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, doc) = OpenApiRouter::new()
        .routes(routes!(rooms::drop_in_status))
        .split_for_parts();
    if state.limits.cors_origins.is_empty() {
        return (router, doc);
    }
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(state.limits.cors_origins.clone()))
        .allow_methods([axum::http::Method::GET])
        .allow_headers([
            axum::http::HeaderName::from_static("vf-org-id"),
            axum::http::header::AUTHORIZATION,
        ])
        .max_age(Duration::from_secs(600));
    // OPTIONS gets a route of its own: the 405 fallback set on the whole
    // router later would otherwise answer the preflight unlayered.
    let router = router.route(
        "/v1/room/{room_id}/status",
        axum::routing::options(|| async { axum::http::StatusCode::NO_CONTENT }),
    );
    (router.layer(cors), doc)
}

/// The public listener (`RELAY_PUBLIC_LISTEN`): only the drop-in status
/// route and the health checks, so the admin API can stay on loopback.
pub fn public_router(state: AppState) -> Router {
    let (drop_in, _) = drop_in_router(&state);
    Router::new()
        .merge(drop_in)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn({
            let limit = state.limits.request_timeout;
            move |req, next| request_timeout(limit, req, next)
        }))
        .with_state(state)
}

/// An admin write is on disk before it is acknowledged: a created
/// subscription's secret or a rotation survives a crash right after the
/// 2xx. Concurrent writes share one flush (group commit).
async fn durable_writes(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let writes = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let response = next.run(request).await;
    if writes && response.status().is_success() {
        if let Err(e) = state.store.make_writes_durable().await {
            return ApiError::from(e).into_response();
        }
    }
    response
}

/// Refuse an admin request at once when `RELAY_MAX_REQUESTS` are in
/// flight, rather than queue without bound (health routes are not capped).
async fn in_flight_cap(
    slots: Arc<tokio::sync::Semaphore>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match slots.try_acquire() {
        Ok(_slot) => next.run(request).await,
        Err(_) => ApiError::Busy.into_response(),
    }
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
