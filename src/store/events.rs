//! Stored events: by id, and paged in emission order, optionally by room and type.

use super::keys::{indexed_events, room_key, room_seq_key};
use super::{Result, Store, StoreError};
use crate::event::{Event, EventType};
use crate::ids::{event_id, event_key};

/// An event from its stored form: the webhook body under its key.
pub(super) fn decode_event(key: &[u8], body: &[u8]) -> Result<Event> {
    let key = <[u8; 16]>::try_from(key).map_err(|_| StoreError::Corrupt {
        tree: "events",
        detail: "a key that is not an event id".into(),
    })?;
    Event::from_body(event_id(u128::from_be_bytes(key)), body).map_err(|e| StoreError::Corrupt {
        tree: "events",
        detail: e.to_string(),
    })
}

/// At most this many entries are read for one page, so a filter that matches
/// little never makes one request scan the whole store.
const SCAN_BUDGET: usize = 10_000;

#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub room: Option<String>,
    pub kind: Option<EventType>,
    /// Only events after this event id (exclusive).
    pub after: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Default)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Pass as `after` for the next page; None when the end was reached.
    pub next: Option<String>,
}

impl Store {
    pub fn event(&self, id: &str) -> Result<Option<Event>> {
        let Some(key) = event_key(id) else {
            return Ok(None);
        };
        let key = key.to_be_bytes();
        self.events
            .get(key)?
            .map(|b| decode_event(&key, &b))
            .transpose()
    }

    /// A page of events in the order they were emitted.
    pub fn list_events(&self, filter: &EventFilter) -> Result<EventPage> {
        let limit = filter.limit.max(1);
        let mut page = EventPage::default();
        let mut scanned = 0;
        let mut last_key: Option<String> = None;
        let mut accept = |event: Event, page: &mut EventPage| -> bool {
            last_key = Some(event.id.clone());
            if filter.kind.is_none_or(|k| k == event.kind) {
                page.events.push(event);
            }
            page.events.len() >= limit
        };
        let mut full = false;
        match &filter.room {
            None => {
                let start = match &filter.after {
                    Some(after) => match event_key(after) {
                        Some(k) => k.saturating_add(1).to_be_bytes().to_vec(),
                        None => return Ok(page),
                    },
                    None => Vec::new(),
                };
                for item in self.events.range(start..) {
                    let (k, v) = item?;
                    scanned += 1;
                    full = accept(decode_event(&k, &v)?, &mut page);
                    if full || scanned >= SCAN_BUDGET {
                        break;
                    }
                }
            }
            Some(room) => {
                let after_seq = match &filter.after {
                    Some(after) => match self.event(after)? {
                        Some(e) if e.room_id() == Some(room.as_str()) => e.sequence().unwrap_or(0),
                        _ => return Ok(page),
                    },
                    None => 0,
                };
                let prefix = room_key(room);
                let first = after_seq.saturating_add(1);
                // The entry that may hold `first`: the last at or before it.
                let from = match self
                    .room_events
                    .range(prefix.clone()..=room_seq_key(room, first))
                    .next_back()
                {
                    Some(item) => item?.0.to_vec(),
                    None => room_seq_key(room, first),
                };
                'entries: for item in self.room_events.range(from..) {
                    let (k, v) = item?;
                    if !k.starts_with(&prefix) {
                        break;
                    }
                    for (seq, ek) in indexed_events(&k, &v) {
                        if seq < first {
                            continue;
                        }
                        scanned += 1;
                        let Some(body) = self.events.get(ek)? else {
                            continue;
                        };
                        full = accept(decode_event(&ek, &body)?, &mut page);
                        if full || scanned >= SCAN_BUDGET {
                            break 'entries;
                        }
                    }
                }
            }
        }
        if full || scanned >= SCAN_BUDGET {
            page.next = last_key;
        }
        Ok(page)
    }
}
