//! `GET /v1/events/stream`: the stored events as Server-Sent Events,
//! resumed from the store by id and then followed live, never past what a
//! flush made durable, through a bounded buffer per consumer.

use super::error::{ApiError, ApiQuery};
use super::schema::ErrorEnvelope;
use super::AppState;
use crate::event::{Event, EventType};
use crate::ids::event_key;
use crate::store::{EventFilter, Store};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;

/// Messages buffered per consumer: the bound on what a slow one holds.
const BUFFER: usize = 256;
/// How long a consumer may leave a full buffer untouched before it is
/// disconnected (it resumes by id).
const STALL: Duration = Duration::from_secs(30);
/// Comments that keep proxies from closing an idle stream.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events read from the store at a time.
const PAGE: usize = 256;

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Only this room's events.
    room_id: Option<String>,
    /// Only events of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<String>,
    /// Resume after this event id (the `Last-Event-ID` header wins).
    after: Option<String>,
}

#[utoipa::path(get, path = "/v1/events/stream", tag = "events", params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    description = "Server-Sent Events: every stored event after the cursor, in order, then live. `id:` the event id, `event:` its type, `data:` the event as `GET /v1/events/{id}` returns it.",
    responses((status = 200, description = "text/event-stream", content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorEnvelope)))]
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
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
    let header = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| ApiError::Validation("Last-Event-ID is not text".into()))
        })
        .transpose()?
        .filter(|v| !v.is_empty());
    let after = header.map(str::to_string).or(q.after);
    if let Some(id) = &after {
        event_key(id).ok_or_else(|| ApiError::Validation(format!("{id:?} is not an event id")))?;
    }
    let (tx, rx) = mpsc::channel(BUFFER);
    let tail = Tail {
        store: state.store.clone(),
        room: q.room_id,
        kind,
        cursor: after,
        shutdown: state.shutdown.clone(),
    };
    tokio::spawn(tail.run(tx));
    let messages = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|m| (Ok::<_, Infallible>(m), rx))
    });
    Ok(Sse::new(messages)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response())
}

/// One consumer's reader: pages of durable events after its cursor.
struct Tail {
    store: Store,
    room: Option<String>,
    kind: Option<EventType>,
    /// The last event read (sent or filtered out).
    cursor: Option<String>,
    shutdown: CancellationToken,
}

impl Tail {
    async fn run(mut self, tx: mpsc::Sender<SseEvent>) {
        let mut durable = self.store.durable_events();
        loop {
            let limit = *durable.borrow_and_update();
            let page = match self.read(limit).await {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(comment(&format!("store error: {e}"))).await;
                    return;
                }
            };
            let read_to_end = page.len() < PAGE;
            for event in page {
                self.cursor = Some(event.id.clone());
                if !self.wants(&event) {
                    continue;
                }
                match tx.send_timeout(message(&event), STALL).await {
                    Ok(()) => {}
                    Err(mpsc::error::SendTimeoutError::Closed(_)) => return,
                    Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                        // Too slow: the buffer is full. The last word goes
                        // after what it still holds; the consumer resumes.
                        let _ = tx.try_send(comment(&format!(
                            "too slow: disconnected after {}; reconnect with Last-Event-ID",
                            self.cursor.as_deref().unwrap_or("")
                        )));
                        return;
                    }
                }
            }
            if !read_to_end {
                continue;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    let _ = tx.try_send(comment("the relay is stopping; reconnect with Last-Event-ID"));
                    return;
                }
                _ = tx.closed() => return,
                changed = durable.changed() => if changed.is_err() { return },
            }
        }
    }

    fn wants(&self, e: &Event) -> bool {
        self.room.as_deref().is_none_or(|r| e.room_id() == Some(r))
            && self.kind.is_none_or(|k| k == e.kind)
    }

    /// Up to a page of events after the cursor, none past `limit`. The
    /// whole log is read in key order: a cursor whose event retention has
    /// pruned still has a place in it.
    async fn read(&self, limit: u128) -> crate::store::Result<Vec<Event>> {
        let store = self.store.clone();
        let after = self.cursor.clone();
        let page = tokio::task::spawn_blocking(move || {
            store.list_events(&EventFilter {
                room: None,
                kind: None,
                after,
                limit: PAGE,
            })
        })
        .await
        .map_err(|e| crate::store::StoreError::Interrupted(e.to_string()))??;
        Ok(page
            .events
            .into_iter()
            .take_while(|e| event_key(&e.id).is_some_and(|k| k <= limit))
            .collect())
    }
}

fn message(event: &Event) -> SseEvent {
    let data = serde_json::to_string(event).expect("events serialize");
    SseEvent::default()
        .id(event.id.clone())
        .event(event.kind.as_str())
        .data(data)
}

fn comment(text: &str) -> SseEvent {
    SseEvent::default().comment(text)
}
