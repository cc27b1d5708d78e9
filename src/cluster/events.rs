//! Events in PostgreSQL: read, listed, pruned, and inserted and announced
//! by a poll's commit.

use super::store::{corrupt, storable, PgStore, EVENTS_CHANNEL};
use crate::db::Result;
use crate::event::{webhook_body, Event, EventType};
use crate::ids::{event_id, event_key};
use crate::store::{EventFilter, EventPage};
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

impl PgStore {
    pub async fn event(&self, id: &str) -> Result<Option<Event>> {
        if event_key(id).is_none() {
            return Ok(None);
        }
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached("SELECT id, body FROM relay_events WHERE id = $1")
                    .await?,
                &[&id],
            )
            .await?;
        row.map(|r| event_of(&r)).transpose()
    }

    /// A page of events in the order they were emitted.
    pub async fn list_events(&self, filter: &EventFilter) -> Result<EventPage> {
        // A cursor that is no event id has no place in the log (as on sled).
        if filter
            .after
            .as_deref()
            .is_some_and(|a| event_key(a).is_none())
            || filter.room.as_deref().is_some_and(|r| !storable(r))
        {
            return Ok(EventPage::default());
        }
        let c = self.client().await?;
        let limit = filter.limit.max(1) as i64;
        let kind = filter.kind.map(EventType::as_str);
        let rows = c
            .query(
                &c.prepare_cached(
                    "SELECT id, body FROM relay_events
                 WHERE ($1::TEXT IS NULL OR room_id = $1)
                   AND ($2::TEXT IS NULL OR type = $2)
                   AND ($3::TEXT IS NULL OR id > $3)
                 ORDER BY id LIMIT $4",
                )
                .await?,
                &[&filter.room, &kind, &filter.after, &(limit + 1)],
            )
            .await?;
        let mut events = rows.iter().map(event_of).collect::<Result<Vec<_>>>()?;
        let more = events.len() as i64 > limit;
        events.truncate(limit as usize);
        let next = more.then(|| events.last().map(|e| e.id.clone())).flatten();
        Ok(EventPage { events, next })
    }

    /// Remove events stored before `cutoff`, a batch at a time, keeping
    /// each that a pending delivery needs; returns how many went.
    pub async fn prune_events(&self, cutoff: DateTime<Utc>, batch: i64) -> Result<u64> {
        let c = self.client().await?;
        let floor = event_id(crate::ids::floor_of_ms(crate::outbox::ms(cutoff)));
        let n = c
            .execute(
                &c.prepare_cached(
                    "DELETE FROM relay_events WHERE id IN (
                   SELECT e.id FROM relay_events e WHERE e.id < $1
                   AND NOT EXISTS (SELECT 1 FROM relay_deliveries d
                                   WHERE d.event_id = e.id AND d.status = 'pending')
                   ORDER BY e.id LIMIT $2)",
                )
                .await?,
                &[&floor, &batch],
            )
            .await?;
        Ok(n)
    }
}

pub(super) fn event_of(r: &Row) -> Result<Event> {
    let id: String = r.get(0);
    let body: Vec<u8> = r.get(1);
    Event::from_body(id, &body).map_err(|e| corrupt("relay_events", e))
}

/// Many events in one statement.
pub(super) async fn insert_events(
    tx: &impl deadpool_postgres::GenericClient,
    events: &[Event],
) -> Result<()> {
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let rooms: Vec<Option<&str>> = events.iter().map(|e| e.room_id()).collect();
    let seqs: Vec<Option<i64>> = events
        .iter()
        .map(|e| e.sequence().map(|s| s as i64))
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let bodies: Vec<Vec<u8>> = events.iter().map(webhook_body).collect();
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO relay_events (id, room_id, sequence, type, body)
             SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::BYTEA[])",
        )
        .await?,
        &[&ids, &rooms, &seqs, &kinds, &bodies],
    )
    .await?;
    Ok(())
}

pub(super) async fn notify_events(
    tx: &impl deadpool_postgres::GenericClient,
    largest: u128,
) -> Result<()> {
    tx.execute(
        &tx.prepare_cached("SELECT pg_notify($1, $2)").await?,
        &[&EVENTS_CHANNEL, &largest.to_string()],
    )
    .await?;
    Ok(())
}
