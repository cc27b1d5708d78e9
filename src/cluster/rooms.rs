//! Rooms in PostgreSQL: watched under a cap, their records and schedules,
//! and the poll commits fenced by version and lease epoch.

use super::events::{insert_events, notify_events};
use super::store::{corrupt, storable, PgStore, OUTBOX_CHANNEL};
use crate::db::Result;
use crate::event::Event;
use crate::ids::{event_id, event_key};
use crate::poller::history::History;
use crate::room::{RoomId, RoomStatus};
use crate::store::{Base, ClassWindow, PollAnswer, PollCommit, RoomRecord};
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

impl PgStore {
    /// Start watching (with a lease row for the next claim); true when the
    /// room was not watched before.
    pub async fn watch(&self, room: &RoomId) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let created = watch_in(&tx, room.as_str()).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Watch rooms unless that would watch more than `max` in all (then
    /// none): counted and written in one transaction under a lock, so
    /// instances watching at once cannot pass the cap.
    pub async fn watch_within(&self, rooms: &[RoomId], max: usize) -> Result<Option<Vec<bool>>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            &tx.prepare_cached("SELECT pg_advisory_xact_lock($1)")
                .await?,
            &[&WATCH_LOCK],
        )
        .await?;
        let ids: Vec<&str> = rooms.iter().map(|r| r.as_str()).collect();
        let row = tx
            .query_one(
                &tx.prepare_cached(
                    "SELECT (SELECT count(*) FROM relay_rooms WHERE watched_since IS NOT NULL),
                        (SELECT count(*) FROM relay_rooms WHERE watched_since IS NOT NULL
                           AND room_id = ANY($1))",
                )
                .await?,
                &[&ids],
            )
            .await?;
        let (watched, already): (i64, i64) = (row.get(0), row.get(1));
        let new = ids.len() as i64 - already;
        if new > 0 && (watched + new) as usize > max {
            return Ok(None);
        }
        let mut created = Vec::with_capacity(ids.len());
        for id in &ids {
            created.push(watch_in(&tx, id).await?);
        }
        tx.commit().await?;
        Ok(Some(created))
    }

    /// Stop watching: the lease goes, the snapshot is dropped and the
    /// version moves, so a poll from before cannot write it back.
    pub async fn unwatch(&self, room: &RoomId) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let id = room.as_str();
        tx.execute(
            &tx.prepare_cached("DELETE FROM relay_leases WHERE room_id = $1")
                .await?,
            &[&id],
        )
        .await?;
        let n = tx
            .execute(
&tx.prepare_cached("UPDATE relay_rooms SET watched_since = NULL, snapshot = NULL, version = version + 1
                 WHERE room_id = $1 AND watched_since IS NOT NULL").await?,
                &[&id],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    pub async fn room(&self, room: &str) -> Result<Option<RoomRecord>> {
        if !storable(room) {
            return Ok(None);
        }
        let c = self.client().await?;
        let row = c
            .query_opt(&format!("{ROOM_SELECT} WHERE r.room_id = $1"), &[&room])
            .await?;
        row.map(|r| room_record(&r)).transpose()
    }

    /// Watched rooms in room-id order, each with its owner.
    pub async fn watched_rooms(&self) -> Result<Vec<RoomRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("{ROOM_SELECT} WHERE r.watched_since IS NOT NULL ORDER BY r.room_id"),
                &[],
            )
            .await?;
        rows.iter().map(room_record).collect()
    }

    /// Who polls each watched room, for `GET /v1/rooms`.
    pub async fn owners(&self) -> Result<std::collections::HashMap<String, String>> {
        let c = self.client().await?;
        let rows = c
            .query(
&c.prepare_cached("SELECT room_id, owner FROM relay_leases WHERE owner IS NOT NULL AND expires_at > now()").await?,
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn owner(&self, room: &str) -> Result<Option<String>> {
        if !storable(room) {
            return Ok(None);
        }
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached(
                    "SELECT owner FROM relay_leases WHERE room_id = $1 AND expires_at > now()",
                )
                .await?,
                &[&room],
            )
            .await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    pub async fn base(&self, room: &RoomId) -> Result<Option<Base>> {
        Ok(self
            .room(room.as_str())
            .await?
            .filter(|r| r.watched_since.is_some())
            .map(|r| r.base()))
    }

    pub async fn set_schedule(&self, room: &RoomId, schedule: &[ClassWindow]) -> Result<bool> {
        let c = self.client().await?;
        let value = serde_json::to_value(schedule).expect("windows serialize");
        let n = c
            .execute(
&c.prepare_cached("UPDATE relay_rooms SET schedule = $2 WHERE room_id = $1 AND watched_since IS NOT NULL").await?,
                &[&room.as_str(), &value],
            )
            .await?;
        Ok(n == 1)
    }

    pub async fn poll_history(&self, room: &str) -> Result<History> {
        if !storable(room) {
            return Ok(History::default());
        }
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached("SELECT poll_history FROM relay_rooms WHERE room_id = $1")
                    .await?,
                &[&room],
            )
            .await?;
        match row.and_then(|r| r.get::<_, Option<serde_json::Value>>(0)) {
            Some(v) => serde_json::from_value(v).map_err(|e| corrupt("relay_rooms", e)),
            None => Ok(History::default()),
        }
    }

    pub async fn save_poll_history(&self, room: &str, history: &History) -> Result<()> {
        let c = self.client().await?;
        let value = serde_json::to_value(history).expect("history serializes");
        c.execute(
            &c.prepare_cached("UPDATE relay_rooms SET poll_history = $2 WHERE room_id = $1")
                .await?,
            &[&room, &value],
        )
        .await?;
        Ok(())
    }

    /// The epoch this instance holds `room`'s lease under, if it does.
    pub async fn lease_epoch(&self, room: &RoomId) -> Result<Option<i64>> {
        let c = self.client().await?;
        let held = c
            .query_opt(
&c.prepare_cached("SELECT epoch FROM relay_leases WHERE room_id = $1 AND owner = $2 AND expires_at > now()").await?,
                &[&room.as_str(), &self.instance()],
            )
            .await?;
        Ok(held.map(|r| r.get(0)))
    }

    /// Diff one answer against the stored snapshot and commit it under
    /// this instance's lease (for tools and tests): Stale when this
    /// instance does not hold the room.
    pub async fn record_poll(
        &self,
        room: &RoomId,
        current: &RoomStatus,
        seen_at: DateTime<Utc>,
        initial_events: bool,
    ) -> Result<PollCommit> {
        let Some(base) = self.base(room).await? else {
            return Ok(PollCommit::NotWatched);
        };
        let Some(answer) = PollAnswer::diffed(room, &base, current, seen_at, initial_events) else {
            return Ok(PollCommit::Unchanged);
        };
        let Some(epoch) = self.lease_epoch(room).await? else {
            return Ok(PollCommit::Stale);
        };
        let mut outcomes = self.commit_polls(&[(answer, epoch)]).await?;
        Ok(outcomes.pop().expect("one outcome per answer"))
    }

    /// Commit many rooms' diffed answers in one transaction: each room's
    /// snapshot with its events and their deliveries, each only if the
    /// room's version is the one diffed against and `epochs` (the lease
    /// this instance polls it under) still holds. A fenced answer writes
    /// nothing and comes back [`PollCommit::Stale`].
    pub async fn commit_polls(&self, answers: &[(PollAnswer, i64)]) -> Result<Vec<PollCommit>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if answers.iter().any(|(a, _)| !a.changes.is_empty()) {
            self.order_events(&tx).await?;
        }
        let me = self.instance();
        let mut outcomes = Vec::with_capacity(answers.len());
        let mut new_events: Vec<Event> = Vec::new();
        let mut latest = DateTime::<Utc>::MIN_UTC;
        for (a, epoch) in answers {
            let id = a.room.as_str();
            let snapshot = serde_json::to_value(&a.status).expect("statuses serialize");
            let new_id = || event_id(self.inner.ids.next_at(crate::outbox::ms(a.seen_at)));
            let stored = match a.changes.is_empty() {
                true => Vec::new(),
                false => a.events(new_id),
            };
            let sequence = stored.last().and_then(|e| e.sequence()).map(|s| s as i64);
            let row = tx
                .query_opt(
&tx.prepare_cached("UPDATE relay_rooms r
                     SET snapshot = $2, version = r.version + 1,
                         sequence = COALESCE($3, r.sequence),
                         last_changed_at = CASE WHEN $3::BIGINT IS NULL THEN r.last_changed_at ELSE $7 END
                     WHERE r.room_id = $1 AND r.version = $4 AND r.watched_since IS NOT NULL
                       AND EXISTS (SELECT 1 FROM relay_leases l WHERE l.room_id = $1
                                   AND l.owner = $5 AND l.epoch = $6 AND l.expires_at > now())
                     RETURNING r.version").await?,
                    &[
                        &id,
                        &snapshot,
                        &sequence,
                        &(a.base_version as i64),
                        &me,
                        epoch,
                        &a.seen_at,
                    ],
                )
                .await?;
            if row.is_none() {
                outcomes.push(PollCommit::Stale);
                continue;
            }
            if stored.is_empty() {
                // The version held, so the stored snapshot is the one diffed against.
                outcomes.push(match a.previous.is_none() {
                    true => PollCommit::Baseline,
                    false => PollCommit::Changed(Vec::new()),
                });
                continue;
            }
            latest = latest.max(a.seen_at);
            new_events.extend(stored.iter().cloned());
            outcomes.push(PollCommit::Changed(stored));
        }
        // The batch's events and their deliveries, a statement each.
        let mut queued = false;
        if !new_events.is_empty() {
            insert_events(&tx, &new_events).await?;
            let largest = new_events.iter().filter_map(|e| event_key(&e.id)).max();
            let subs = super::outbox::enabled_subscriptions(&tx).await?;
            queued =
                super::outbox::enqueue(&tx, &self.inner.ids, &subs, &new_events, latest).await?;
            notify_events(&tx, largest.unwrap_or(0)).await?;
        }
        if queued {
            tx.execute(&format!("NOTIFY {OUTBOX_CHANNEL}"), &[]).await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Make the events this transaction is about to store sort after every
    /// event stored by any relay, and before any stored after it: event
    /// ids are taken under a lock held to the commit, above the largest id
    /// stored. Ids then follow commit order across the cluster, whatever
    /// the relays' clocks say, so the event stream and `?after=` cursors
    /// never pass an event that commits later.
    pub(super) async fn order_events(
        &self,
        tx: &impl deadpool_postgres::GenericClient,
    ) -> Result<()> {
        tx.execute(
            &tx.prepare_cached("SELECT pg_advisory_xact_lock($1)")
                .await?,
            &[&EVENTS_LOCK],
        )
        .await?;
        // A statement of its own: its snapshot is taken once the lock is held,
        // so it sees every event committed before.
        let row = tx
            .query_one(
                &tx.prepare_cached("SELECT max(id) FROM relay_events")
                    .await?,
                &[],
            )
            .await?;
        let largest: Option<String> = row.get(0);
        if let Some(k) = largest.and_then(|id| event_key(&id)) {
            self.inner.ids.observe(k);
        }
        Ok(())
    }
}

/// Watch one room in the caller's transaction, with a lease row for the
/// next claim; true when it was not watched before.
async fn watch_in(tx: &impl deadpool_postgres::GenericClient, id: &str) -> Result<bool> {
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "INSERT INTO relay_rooms (room_id, watched_since) VALUES ($1, now())
                 ON CONFLICT (room_id) DO UPDATE
                   SET watched_since = COALESCE(relay_rooms.watched_since, now())
                 RETURNING relay_rooms.watched_since = now()",
            )
            .await?,
            &[&id],
        )
        .await?;
    tx.execute(
        &tx.prepare_cached("INSERT INTO relay_leases (room_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .await?,
        &[&id],
    )
    .await?;
    Ok(row.get(0))
}

/// The lock event-storing transactions take, so ids follow commit order.
const EVENTS_LOCK: i64 = 0x7265_6c61_7904;

/// The lock a capped watch takes: one count-and-insert at a time.
const WATCH_LOCK: i64 = 0x7265_6c61_7902;

const ROOM_SELECT: &str = "SELECT r.room_id, r.watched_since, r.snapshot, r.sequence, r.version,
        r.last_changed_at, r.schedule FROM relay_rooms r";

fn room_record(r: &Row) -> Result<RoomRecord> {
    let snapshot: Option<serde_json::Value> = r.get(2);
    let schedule: serde_json::Value = r.get(6);
    Ok(RoomRecord {
        room_id: r.get(0),
        watched_since: r.get(1),
        snapshot: snapshot
            .map(serde_json::from_value::<RoomStatus>)
            .transpose()
            .map_err(|e| corrupt("relay_rooms", e))?,
        sequence: r.get::<_, i64>(3) as u64,
        version: r.get::<_, i64>(4) as u64,
        last_changed_at: r.get(5),
        schedule: serde_json::from_value(schedule).map_err(|e| corrupt("relay_rooms", e))?,
    })
}
