//! `GET /v1/events/stream`: the stored events as Server-Sent Events,
//! resumed from the store by id and then followed live, never past what a
//! flush made durable, through a bounded buffer per consumer.

use super::error::{ApiError, ApiQuery};
use super::schema::ErrorEnvelope;
use super::AppState;
use crate::backend::Backend;
use crate::event::{Event, EventType};
use crate::ids::event_key;
use crate::store::EventFilter;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
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
    /// Resume after this event id (the `Last-Event-ID` header wins), or
    /// `latest`: only events emitted from now on.
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
    let kind = super::events::check_filters(q.kind, q.room_id.as_deref())?;
    let header = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| ApiError::Validation("Last-Event-ID is not text".into()))
        })
        .transpose()?
        .filter(|v| !v.is_empty());
    let after = match (header, q.after) {
        (Some(id), _) => Some(id.to_string()),
        (None, Some(a)) if a == LATEST => latest(&state),
        (None, a) => a,
    };
    if let Some(id) = &after {
        event_key(id).ok_or_else(|| ApiError::Validation(format!("{id:?} is not an event id")))?;
    }
    let tail = Tail {
        store: state.store.clone(),
        room: q.room_id,
        kind,
        cursor: after,
        shutdown: state.shutdown.clone(),
    };
    Ok(Sse::new(tail.spawn(BUFFER))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response())
}

/// `?after=latest`: start at the newest durable event, so a dashboard
/// opening its live tail is not sent the whole history first.
const LATEST: &str = "latest";

fn latest(state: &AppState) -> Option<String> {
    let newest = *state.store.durable_events().borrow();
    (newest > 0).then(|| crate::ids::event_id(newest))
}

impl Tail {
    /// Read on a task of its own into a buffer of `buffer` messages; the
    /// messages, then the reader's last word if it had one.
    fn spawn(
        self,
        buffer: usize,
    ) -> impl futures_util::Stream<Item = Result<SseEvent, Infallible>> {
        let (tx, rx) = mpsc::channel(buffer);
        let (last_tx, last_rx) = oneshot::channel::<String>();
        tokio::spawn(async move {
            if let Some(word) = self.run(tx).await {
                let _ = last_tx.send(word);
            }
        });
        futures_util::stream::unfold((rx, Some(last_rx)), |(mut rx, last)| async move {
            if let Some(m) = rx.recv().await {
                return Some((Ok(m), (rx, last)));
            }
            let word = last?.await.ok()?;
            Some((Ok(comment(&word)), (rx, None)))
        })
    }
}

/// One consumer's reader: pages of durable events after its cursor.
struct Tail {
    store: Backend,
    room: Option<String>,
    kind: Option<EventType>,
    /// The last event read (sent or filtered out).
    cursor: Option<String>,
    shutdown: CancellationToken,
}

impl Tail {
    /// Send events until the consumer goes, or return the last word: why
    /// the stream ends (too slow, stopping, a store error).
    async fn run(mut self, tx: mpsc::Sender<SseEvent>) -> Option<String> {
        let mut durable = self.store.durable_events();
        loop {
            let limit = *durable.borrow_and_update();
            let page = match self.read(limit).await {
                Ok(page) => page,
                Err(e) => return Some(format!("store error: {e}; reconnect with Last-Event-ID")),
            };
            let read_to_end = page.len() < PAGE;
            for event in page {
                self.cursor = Some(event.id.clone());
                if !self.wants(&event) {
                    continue;
                }
                match tx.send_timeout(message(&event), STALL).await {
                    Ok(()) => {}
                    Err(mpsc::error::SendTimeoutError::Closed(_)) => return None,
                    Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                        // Too slow: the buffer stayed full. The last word
                        // goes after what it holds; the consumer resumes.
                        return Some("too slow: disconnected; reconnect with Last-Event-ID".into());
                    }
                }
            }
            if !read_to_end {
                continue;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    return Some("the relay is stopping; reconnect with Last-Event-ID".into());
                }
                _ = tx.closed() => return None,
                changed = durable.changed() => if changed.is_err() { return None },
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
        let filter = EventFilter {
            room: None,
            kind: None,
            after: self.cursor.clone(),
            limit: PAGE,
        };
        let page = match &self.store {
            // A sled scan is blocking work: off the async workers.
            crate::backend::Backend::Sled(s) => {
                let s = s.clone();
                tokio::task::spawn_blocking(move || s.list_events(&filter))
                    .await
                    .map_err(|e| crate::store::StoreError::Interrupted(e.to_string()))??
            }
            crate::backend::Backend::Postgres(p) => p.list_events(&filter).await?,
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::{RoomId, RoomStatus};
    use futures_util::StreamExt;

    fn status(n: u64) -> RoomStatus {
        RoomStatus::live_for_tests("r", n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_consumer_that_stops_reading_is_cut_off_with_a_last_word() {
        let store = crate::store::Store::temporary().unwrap();
        let room = RoomId::parse("r").unwrap();
        let now = chrono::Utc::now();
        store.watch(&room, now).unwrap();
        for n in 0..6 {
            store.record_poll(&room, &status(n), now, false).unwrap();
            store.make_writes_durable().await.unwrap();
        }
        let tail = || Tail {
            store: store.clone().into(),
            room: None,
            kind: None,
            cursor: None,
            shutdown: CancellationToken::new(),
        };
        // A buffer of two that nobody reads until the stall has passed,
        // beside a consumer that keeps up.
        let mut stream = Box::pin(tail().spawn(2));
        let mut brisk = Box::pin(tail().spawn(2));
        // The first poll is the baseline: five events.
        for _ in 0..5 {
            assert!(matches!(brisk.next().await, Some(Ok(_))));
        }
        tokio::time::sleep(STALL * 2).await;
        let mut got = Vec::new();
        while let Some(Ok(m)) = stream.next().await {
            got.push(format!("{m:?}"));
        }
        assert!(
            got.len() == 3,
            "two buffered events and the last word: {got:?}"
        );
        assert!(got[2].contains("too slow"), "{got:?}");
        // The other consumer is still served, live.
        store.record_poll(&room, &status(9), now, false).unwrap();
        store.make_writes_durable().await.unwrap();
        let next = format!("{:?}", brisk.next().await);
        assert!(next.contains("participants.changed"), "{next}");
    }
}
