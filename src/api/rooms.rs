//! Rooms: watch, unwatch, list, and the drop-in upstream status route.

use super::auth::bearer_ok;
use super::error::{ok, ok_list, ok_value, ApiError, ApiPath};
use super::schema::{Envelope, ErrorEnvelope, PutRoomBody, RoomRef, RoomView, UpstreamAnswer};
use super::AppState;
use crate::backend::Backend;
use crate::room::RoomId;
use crate::store::RoomRecord;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub fn parse_room(raw: String) -> Result<RoomId, ApiError> {
    RoomId::parse(raw).map_err(|e| ApiError::Validation(format!("invalid room id: {e}")))
}

/// Watch all of `rooms` or, past `RELAY_MAX_ROOMS`, none (checked and done
/// atomically); for each, whether it is new.
pub async fn watch_within_limit(state: &AppState, rooms: &[RoomId]) -> Result<Vec<bool>, ApiError> {
    let max = state.limits.max_rooms;
    state.poller.watch_within(rooms, max).await?.map_err(|_| {
        ApiError::LimitReached(format!("at most {max} watched rooms (RELAY_MAX_ROOMS)"))
    })
}

/// Who polls `room`, in a cluster.
async fn owner_of(state: &AppState, room: &str) -> Result<Option<String>, ApiError> {
    Ok(match &state.store {
        Backend::Postgres(p) => p.owner(room).await?,
        Backend::Sled(_) => None,
    })
}

/// Windows a schedule may hold, and the longest class it may announce.
const MAX_WINDOWS: usize = 1000;
const MAX_CLASS: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// A room as the API shows it. In a cluster, `owner` is the instance that
/// polls it; the poll figures are this instance's (blank unless it owns it).
fn view(state: &AppState, r: &RoomRecord, owner: Option<String>) -> RoomView {
    let rt = state.poller.runtime(&r.room_id);
    let next = state.poller.next_poll(&r.room_id);
    RoomView {
        room_id: r.room_id.clone(),
        watched_since: r.watched_since,
        last_polled_at: rt.last_polled_at,
        last_changed_at: r.last_changed_at,
        health: rt.health,
        last_error: rt.last_error,
        consecutive_failures: rt.failures,
        sequence: r.sequence,
        status: r.snapshot.clone(),
        schedule: r.schedule.clone(),
        next_poll_at: next.map(|n| n.0),
        next_poll_reason: next.map(|n| n.1),
        owner,
    }
}

/// The optional body of a PUT: empty, or a checked schedule.
fn parse_put_body(body: &[u8]) -> Result<Option<Vec<crate::store::ClassWindow>>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let parsed: PutRoomBody = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::Validation(e.to_string())
        } else {
            ApiError::InvalidJson(e.to_string())
        }
    })?;
    let Some(schedule) = parsed.schedule else {
        return Ok(None);
    };
    if schedule.len() > MAX_WINDOWS {
        return Err(ApiError::Validation(format!(
            "schedule: at most {MAX_WINDOWS} classes"
        )));
    }
    for w in &schedule {
        if w.end <= w.start || w.end - w.start > MAX_CLASS {
            return Err(ApiError::Validation(format!(
                "schedule: each class ends after it starts, within 24 hours ({} to {})",
                w.start, w.end
            )));
        }
    }
    Ok(Some(schedule))
}

async fn watched(state: &AppState, room: &RoomId) -> Result<RoomRecord, ApiError> {
    state
        .store
        .room(room.as_str())
        .await?
        .filter(|r| r.watched_since.is_some())
        .ok_or_else(|| ApiError::NotFound(format!("room {:?} is not watched", room.as_str())))
}

#[utoipa::path(put, path = "/v1/rooms/{room_id}", tag = "rooms", params(("room_id" = String, Path, description = "Room id, percent-encoded as one segment")),
    request_body(content = Option<PutRoomBody>, description = "Optional: the classes expected in this room (schedule hints for RELAY_POLL_BUDGET)"),
    responses((status = 201, description = "Now watched", body = Envelope<RoomView>),
        (status = 200, description = "Already watched", body = Envelope<RoomView>),
        (status = 409, description = "RELAY_MAX_ROOMS reached", body = ErrorEnvelope)))]
pub async fn put_room(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let room = parse_room(raw)?;
    let schedule = parse_put_body(&body)?;
    let created = watch_within_limit(&state, std::slice::from_ref(&room)).await?[0];
    if let Some(schedule) = schedule {
        state.poller.set_schedule(&room, &schedule).await?;
    }
    let record = watched(&state, &room).await?;
    let (status, message) = if created {
        (StatusCode::CREATED, "Room watched")
    } else {
        (StatusCode::OK, "Room already watched")
    };
    let owner = owner_of(&state, &record.room_id).await?;
    Ok(ok(status, message, view(&state, &record, owner)))
}

#[utoipa::path(delete, path = "/v1/rooms/{room_id}", tag = "rooms", params(("room_id" = String, Path, description = "Room id, percent-encoded as one segment")),
    responses((status = 200, description = "No longer watched; its events stay", body = Envelope<RoomRef>),
        (status = 404, body = ErrorEnvelope)))]
pub async fn delete_room(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let room = parse_room(raw)?;
    let record = watched(&state, &room).await?;
    state.poller.unwatch(&room).await?;
    Ok(ok_value(
        "Room no longer watched; its events stay",
        RoomRef {
            room_id: record.room_id,
        },
    ))
}

#[utoipa::path(get, path = "/v1/rooms", tag = "rooms",
    responses((status = 200, body = Envelope<Vec<RoomView>>)))]
pub async fn list_rooms(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut owners = match &state.store {
        Backend::Postgres(p) => p.owners().await?,
        Backend::Sled(_) => Default::default(),
    };
    let rooms = state.store.watched_rooms().await?;
    Ok(ok_list("Watched rooms", rooms, move |r: RoomRecord| {
        let owner = owners.remove(&r.room_id);
        view(&state, &r, owner)
    }))
}

#[utoipa::path(get, path = "/v1/rooms/{room_id}", tag = "rooms", params(("room_id" = String, Path, description = "Room id, percent-encoded as one segment")),
    responses((status = 200, body = Envelope<RoomView>), (status = 404, body = ErrorEnvelope)))]
pub async fn get_room(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let room = parse_room(raw)?;
    let record = watched(&state, &room).await?;
    let owner = owner_of(&state, &record.room_id).await?;
    Ok(ok_value("Room", view(&state, &record, owner)))
}

/// The upstream's own error shape, for the drop-in route's clients.
fn upstream_error(status: StatusCode, message: &str, code: &str) -> Response {
    let body = json!({"success": false, "message": message, "error": {"code": code}});
    (status, Json(body)).into_response()
}

/// `GET /v1/room/{roomId}/status`: the upstream's answer, from the last snapshot.
#[utoipa::path(get, path = "/v1/room/{room_id}/status", tag = "rooms", params(("room_id" = String, Path, description = "Room id, percent-encoded as one segment")),
    description = "Drop-in for the upstream endpoint, served from the last snapshot. Authenticated by `VF-ORG-ID` (or the bearer token).",
    responses((status = 200, description = "The upstream's own answer", body = UpstreamAnswer),
        (status = 404, description = "Not watched by this relay (`not_watched`), or no status known yet (`not_polled_yet`, with Retry-After)", body = ErrorEnvelope)),
    security(("org_id" = []), ("bearer" = [])))]
pub async fn drop_in_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let org_ok = headers
        .get("vf-org-id")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| state.org_id.matches(v));
    if !org_ok && !bearer_ok(&state, &headers) {
        return Ok(upstream_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "unauthorized",
        ));
    }
    if raw.trim().is_empty() {
        return Ok(upstream_error(
            StatusCode::BAD_REQUEST,
            "Missing roomId",
            "validation_failed",
        ));
    }
    let room = parse_room(raw)?;
    let record = state
        .store
        .room(room.as_str())
        .await?
        .filter(|r| r.watched_since.is_some());
    let Some(record) = record else {
        return Ok(upstream_error(
            StatusCode::NOT_FOUND,
            "Room is not watched by this relay: PUT /v1/rooms/{roomId} first",
            "not_watched",
        ));
    };
    // No snapshot yet: the status resource does not exist yet, so 404 with
    // a hint of when to ask again (a 5xx would blame the relay).
    let Some(snapshot) = record.snapshot else {
        let mut r = upstream_error(
            StatusCode::NOT_FOUND,
            "Room status not known yet: the first poll has not succeeded",
            "not_polled_yet",
        );
        let secs = state.poller.settings().interval.as_secs().max(1);
        r.headers_mut().insert("retry-after", secs.into());
        return Ok(r);
    };
    let body = json!({"success": true, "message": snapshot.upstream_message(), "data": snapshot});
    Ok(Json(body).into_response())
}
