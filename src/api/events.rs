//! Stored events, paged by cursor.

use super::error::{ok_value, ApiError, ApiPath, ApiQuery};
use super::schema::{Envelope, ErrorEnvelope, EventPage};
use super::AppState;
use crate::event::Event;
use crate::event::EventType;
use crate::store::EventFilter;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

pub const MAX_PAGE: usize = 1000;

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only this room's events.
    room_id: Option<String>,
    /// Only events of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<String>,
    /// The cursor: events after this event id.
    after: Option<String>,
    /// 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// The `type` and `roomId` filters, checked: the type parsed.
pub(super) fn check_filters(
    kind: Option<String>,
    room: Option<&str>,
) -> Result<Option<EventType>, ApiError> {
    if let Some(room) = room {
        super::rooms::parse_room(room.to_string())?;
    }
    kind.map(|k| {
        EventType::parse(&k)
            .ok_or_else(|| ApiError::Validation(format!("unknown event type {k:?}")))
    })
    .transpose()
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, description = "Oldest first", body = Envelope<EventPage>)))]
pub async fn list_events(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Response, ApiError> {
    let kind = check_filters(q.kind, q.room_id.as_deref())?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::Validation(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    let filter = EventFilter {
        room: q.room_id,
        kind,
        after: q.after,
        limit,
    };
    let page = state.store.list_events(&filter).await?;
    Ok(ok_value(
        "Events",
        EventPage {
            events: page.events,
            next: page.next,
        },
    ))
}

#[utoipa::path(get, path = "/v1/events/{id}", tag = "events",
    params(("id" = String, Path, description = "Event id (the webhook-id)")),
    responses((status = 200, body = Envelope<Event>), (status = 404, body = ErrorEnvelope)))]
pub async fn get_event(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let event = state
        .store
        .event(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no event {id:?}")))?;
    Ok(ok_value("Event", event))
}
