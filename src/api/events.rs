//! Stored events, paged by cursor.

use super::error::{ok_value, ApiError, ApiPath, ApiQuery};
use super::AppState;
use crate::event::EventType;
use crate::store::EventFilter;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

pub const MAX_PAGE: usize = 1000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventQuery {
    room_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

pub async fn list_events(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Response, ApiError> {
    let kind = q
        .kind
        .map(|k| {
            EventType::parse(&k)
                .ok_or_else(|| ApiError::Validation(format!("unknown event type {k:?}")))
        })
        .transpose()?;
    if let Some(room) = &q.room_id {
        super::rooms::parse_room(room.clone())?;
    }
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
    let page = state.store.list_events(&filter)?;
    Ok(ok_value(
        "Events",
        json!({"events": page.events, "next": page.next}),
    ))
}

pub async fn get_event(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let event = state
        .store
        .event(&id)?
        .ok_or_else(|| ApiError::NotFound(format!("no event {id:?}")))?;
    Ok(ok_value(
        "Event",
        serde_json::to_value(event).map_err(anyhow::Error::from)?,
    ))
}
