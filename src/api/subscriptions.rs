//! Subscriptions: create, read, change, delete, secrets, and the test event.

use super::error::{ok, ok_value, ApiError, ApiJson, ApiPath};
use super::schema::{
    CreatedSubscription, Envelope, ErrorEnvelope, RotatedSecret, SecretView, SubscriptionRef,
};
use super::AppState;
use crate::event::{Event, EventData, EventType};
use crate::subscription::{validate_pattern, validate_url, Subscription, SubscriptionView};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

const MAX_DESCRIPTION: usize = 500;
const MAX_FILTERS: usize = 1000;

/// A new subscription.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    url: String,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    /// Bring your own `whsec_` secret (e.g. from a deployment's secret
    /// store); one is generated when absent.
    #[serde(default)]
    secret: Option<String>,
}

/// Any of these fields; absent ones stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    url: Option<String>,
    events: Option<Vec<String>>,
    rooms: Option<Vec<String>>,
    description: Option<String>,
    enabled: Option<bool>,
}

/// Check a target: its form, then where it resolves (the SSRF rule).
async fn check_url(state: &AppState, text: &str) -> Result<String, ApiError> {
    let url = validate_url(text).map_err(|message| ApiError::Unprocessable {
        code: "invalid_url",
        message,
    })?;
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    crate::ssrf::resolve_allowed(host, port, state.allow_private_targets)
        .await
        .map_err(|e| ApiError::Unprocessable {
            code: "target_refused",
            message: e.to_string(),
        })?;
    Ok(url.to_string())
}

fn check_events(events: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let events = events.unwrap_or_default();
    if events.len() > MAX_FILTERS {
        return Err(ApiError::Validation(format!(
            "at most {MAX_FILTERS} event filters"
        )));
    }
    for e in &events {
        validate_pattern(e).map_err(ApiError::Validation)?;
    }
    Ok(events)
}

fn check_rooms(rooms: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let rooms = rooms.unwrap_or_default();
    if rooms.len() > MAX_FILTERS {
        return Err(ApiError::Validation(format!("at most {MAX_FILTERS} rooms")));
    }
    for r in &rooms {
        super::rooms::parse_room(r.clone())?;
    }
    Ok(rooms)
}

fn check_description(d: Option<String>) -> Result<Option<String>, ApiError> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(ApiError::Validation(format!(
            "description is longer than {MAX_DESCRIPTION} characters"
        ))),
        d => Ok(d),
    }
}

/// Rooms named by a subscription are watched (within the room limit, checked
/// for all of them before any is watched).
async fn watch_rooms(state: &AppState, rooms: &[String]) -> Result<(), ApiError> {
    let ids = rooms
        .iter()
        .map(|r| super::rooms::parse_room(r.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    super::rooms::watch_within_limit(state, &ids).await?;
    Ok(())
}

async fn find(state: &AppState, id: &str) -> Result<Subscription, ApiError> {
    state
        .store
        .subscription(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no subscription {id:?}")))
}

#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions",
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created; the secret is shown here", body = Envelope<CreatedSubscription>),
        (status = 409, description = "RELAY_MAX_SUBSCRIPTIONS or RELAY_MAX_ROOMS reached", body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope), (status = 415, body = ErrorEnvelope),
        (status = 422, description = "URL refused (form, or a private address)", body = ErrorEnvelope)))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let events = check_events(body.events)?;
    let rooms = check_rooms(body.rooms)?;
    let description = check_description(body.description)?;
    let own_secret = body
        .secret
        .map(|s| {
            crate::signing::Secret::parse(&s)
                .map(|parsed| parsed.expose())
                .map_err(|e| ApiError::Validation(format!("secret: {e}")))
        })
        .transpose()?;
    let url = check_url(&state, &body.url).await?;
    let id = format!("sub_{}", state.store.next_ulid());
    let mut sub = Subscription::new(id, url, events, rooms, description, Utc::now());
    if let Some(secret) = own_secret {
        sub.secrets[0].secret = secret;
    }
    let cap_reached = || {
        ApiError::LimitReached(format!(
            "at most {} subscriptions (RELAY_MAX_SUBSCRIPTIONS)",
            state.limits.max_subscriptions
        ))
    };
    // Checked first for a clear answer, and again atomically with the write.
    if state.store.subscription_count().await? >= state.limits.max_subscriptions {
        return Err(cap_reached());
    }
    watch_rooms(&state, &sub.rooms).await?;
    let created = state
        .store
        .create_subscription(sub.clone(), state.limits.max_subscriptions)
        .await?;
    if !created {
        return Err(cap_reached());
    }
    let data = CreatedSubscription {
        subscription: sub.view(),
        secret: sub.current_secret().to_string(),
    };
    Ok(ok(StatusCode::CREATED, "Subscription created", data))
}

#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions",
    responses((status = 200, body = Envelope<Vec<SubscriptionView>>)))]
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let all: Vec<SubscriptionView> = state
        .store
        .subscriptions()
        .await?
        .iter()
        .map(Subscription::view)
        .collect();
    Ok(ok_value("Subscriptions", all))
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions", params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, body = Envelope<SubscriptionView>), (status = 404, body = ErrorEnvelope)))]
pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(ok_value("Subscription", find(&state, &id).await?.view()))
}

#[utoipa::path(patch, path = "/v1/subscriptions/{id}", tag = "subscriptions", params(("id" = String, Path, description = "Subscription id")),
    request_body = PatchBody,
    responses((status = 200, body = Envelope<SubscriptionView>), (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope), (status = 413, body = ErrorEnvelope), (status = 415, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope)))]
pub async fn patch(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Response, ApiError> {
    find(&state, &id).await?;
    // Everything is checked before anything changes.
    let events = body.events.map(|e| check_events(Some(e))).transpose()?;
    let rooms = body.rooms.map(|r| check_rooms(Some(r))).transpose()?;
    let description = check_description(body.description)?;
    let url = match &body.url {
        Some(u) => Some(check_url(&state, u).await?),
        None => None,
    };
    if let Some(rooms) = &rooms {
        watch_rooms(&state, rooms).await?;
    }
    let now = Utc::now();
    let mut enabled_now = false;
    let updated = state
        .store
        .update_subscription(&id, now, |s| {
            if let Some(u) = url.clone() {
                s.url = u;
            }
            if let Some(e) = events.clone() {
                s.events = e;
            }
            if let Some(r) = rooms.clone() {
                s.rooms = r;
            }
            if description.is_some() {
                s.description = description.clone();
            }
            match body.enabled {
                Some(true) if !s.enabled => {
                    s.enabled = true;
                    s.disabled_reason = None;
                    s.failing_since = None;
                    enabled_now = true;
                }
                Some(false) if s.enabled => {
                    s.enabled = false;
                    s.disabled_reason = Some("disabled through the API".into());
                }
                _ => {}
            }
            s.updated_at = now;
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no subscription {id:?}")))?;
    if enabled_now {
        // Deliveries that waited while it was disabled go out again, in order.
        state.wake.notify_one();
    }
    Ok(ok_value("Subscription updated", updated.view()))
}

#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "subscriptions", params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, description = "Deleted with its pending deliveries", body = Envelope<SubscriptionRef>),
        (status = 404, body = ErrorEnvelope)))]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    if !state.store.delete_subscription(&id).await? {
        return Err(ApiError::NotFound(format!("no subscription {id:?}")));
    }
    Ok(ok_value(
        "Subscription deleted with its pending deliveries",
        SubscriptionRef { id },
    ))
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}/secret", tag = "subscriptions", params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, body = Envelope<SecretView>), (status = 404, body = ErrorEnvelope)))]
pub async fn secret(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let sub = find(&state, &id).await?;
    Ok(ok_value(
        "Subscription secret",
        SecretView {
            secret: sub.current_secret().to_string(),
        },
    ))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/rotate-secret", tag = "subscriptions", params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, body = Envelope<RotatedSecret>), (status = 404, body = ErrorEnvelope)))]
pub async fn rotate(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let sub = state
        .store
        .update_subscription(&id, now, |s| s.rotate(now))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no subscription {id:?}")))?;
    let data = RotatedSecret {
        secret: sub.current_secret().to_string(),
        previous_secret_expires_at: sub.secrets.get(1).and_then(|s| s.expires_at),
    };
    Ok(ok_value(
        "Secret rotated; the previous one signs beside it for 24 hours",
        data,
    ))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/test", tag = "subscriptions", params(("id" = String, Path, description = "Subscription id")),
    responses((status = 202, description = "A webhook.test event is queued", body = Envelope<Event>),
        (status = 404, body = ErrorEnvelope)))]
pub async fn test(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let sub = find(&state, &id).await?;
    let now = Utc::now();
    let event = Event {
        id: String::new(),
        kind: EventType::WebhookTest,
        timestamp: now,
        data: EventData::Other(
            json!({"subscriptionId": sub.id, "message": "A test event from verriflo-relay"}),
        ),
    };
    let Some(event) = state.store.enqueue_test(&sub.id, event, now).await? else {
        return Err(ApiError::NotFound(format!("no subscription {id:?}")));
    };
    state.wake.notify_one();
    Ok(ok(StatusCode::ACCEPTED, "Test event queued", event))
}
