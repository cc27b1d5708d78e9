//! Rooms in PostgreSQL: watching, the base a poll diffs against, and the
//! fenced commit that writes a poll's snapshot and events only while the
//! room's version and the poller's lease epoch both still hold.

use crate::event::{webhook_body, Event};
use crate::room::{RoomId, RoomStatus};
use crate::store::Base;
use tokio_postgres::Client;

/// Why a fenced commit wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The room's version moved, or this instance no longer holds the
    /// lease under that epoch: a stale owner. Nothing was written.
    #[error("fenced: the room moved or its lease passed to another instance")]
    Fenced,
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// Start watching (a lease row with no owner, for the next claim); true
/// when the room was not watched before.
pub async fn watch(client: &Client, room: &RoomId) -> Result<bool, tokio_postgres::Error> {
    let id = room.as_str();
    let row = client
        .query_one(
            "INSERT INTO relay_rooms (room_id, watched_since) VALUES ($1, now())
             ON CONFLICT (room_id) DO UPDATE
               SET watched_since = COALESCE(relay_rooms.watched_since, now())
             RETURNING relay_rooms.watched_since = now()",
            &[&id],
        )
        .await?;
    client
        .execute(
            "INSERT INTO relay_leases (room_id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&id],
        )
        .await?;
    Ok(row.get(0))
}

/// Stop watching: the lease goes, the snapshot is dropped and the version
/// moves, so a poll from before cannot write it back.
pub async fn unwatch(client: &Client, room: &RoomId) -> Result<bool, tokio_postgres::Error> {
    let id = room.as_str();
    client
        .execute("DELETE FROM relay_leases WHERE room_id = $1", &[&id])
        .await?;
    let n = client
        .execute(
            "UPDATE relay_rooms SET watched_since = NULL, snapshot = NULL, version = version + 1
             WHERE room_id = $1 AND watched_since IS NOT NULL",
            &[&id],
        )
        .await?;
    Ok(n == 1)
}

/// What a watched room's next answer is diffed against.
pub async fn base(client: &Client, room: &RoomId) -> Result<Option<Base>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT snapshot, sequence, version FROM relay_rooms
             WHERE room_id = $1 AND watched_since IS NOT NULL",
            &[&room.as_str()],
        )
        .await?;
    Ok(row.map(|r| {
        let snapshot: Option<serde_json::Value> = r.get(0);
        Base {
            snapshot: snapshot.and_then(|v| serde_json::from_value::<RoomStatus>(v).ok()),
            sequence: r.get::<_, i64>(1) as u64,
            version: r.get::<_, i64>(2) as u64,
        }
    }))
}

/// One poll's result, diffed against `base_version` by the owner of the
/// lease under `epoch`.
pub struct Fenced<'a> {
    pub owner: &'a str,
    pub epoch: i64,
    pub room: &'a RoomId,
    pub base_version: u64,
    pub status: &'a RoomStatus,
    /// Numbered from the base's sequence, with their ids.
    pub events: &'a [Event],
}

/// Commit snapshot and events in one transaction, or nothing at all if the
/// version or the lease moved. Returns the room's new version.
pub async fn commit(client: &mut Client, c: &Fenced<'_>) -> Result<u64, CommitError> {
    let id = c.room.as_str();
    let snapshot = serde_json::to_value(c.status).expect("statuses serialize");
    let sequence = c.events.last().and_then(|e| e.sequence()).map(|s| s as i64);
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "UPDATE relay_rooms r
             SET snapshot = $2, version = r.version + 1,
                 sequence = COALESCE($3, r.sequence),
                 last_changed_at = CASE WHEN $3 IS NULL THEN r.last_changed_at ELSE now() END
             WHERE r.room_id = $1 AND r.version = $4 AND r.watched_since IS NOT NULL
               AND EXISTS (SELECT 1 FROM relay_leases l WHERE l.room_id = $1
                           AND l.owner = $5 AND l.epoch = $6 AND l.expires_at > now())
             RETURNING r.version",
            &[
                &id,
                &snapshot,
                &sequence,
                &(c.base_version as i64),
                &c.owner,
                &c.epoch,
            ],
        )
        .await?;
    let Some(row) = row else {
        return Err(CommitError::Fenced);
    };
    for e in c.events {
        let body: serde_json::Value =
            serde_json::from_slice(&webhook_body(e)).expect("webhook bodies are JSON");
        tx.execute(
            "INSERT INTO relay_events (id, room_id, sequence, type, body) VALUES ($1, $2, $3, $4, $5)",
            &[
                &e.id,
                &id,
                &(e.sequence().unwrap_or(0) as i64),
                &e.kind.as_str(),
                &body,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(row.get::<_, i64>(0) as u64)
}
