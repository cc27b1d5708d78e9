//! The outbox in PostgreSQL: subscriptions, deliveries and lanes (one
//! subscription, one room), claimed across the cluster so each lane has one
//! head in flight at a time: FIFO per room per subscriber, as on sled. A
//! claim is held until a deadline; a dead holder's claim expires and its
//! head is claimed again (at least once). A lane's head is its pending
//! delivery with the smallest sequence, so a retried or replayed older
//! event simply becomes the head: no lane state can go stale. Rows are
//! locked in one order, subscription, lane, delivery, so no two
//! transactions deadlock (a deadlock's victim would lose its work).

use crate::db::{Result, StoreError};
use crate::event::Event;
use crate::ids::{delivery_id, Ids};
use crate::outbox::{lane_of, Delivery, DeliveryStatus};
use crate::subscription::Subscription;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

mod admin;
mod claim;
mod subs;

/// Stats judge the success rate on this many finished deliveries.
const RECENT: i64 = 100;

fn decode_sub(v: serde_json::Value) -> Result<Subscription> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt {
        tree: "relay_subscriptions",
        detail: e.to_string(),
    })
}

fn decode_delivery(v: serde_json::Value) -> Result<Delivery> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt {
        tree: "relay_deliveries",
        detail: e.to_string(),
    })
}

fn status_str(s: DeliveryStatus) -> &'static str {
    match s {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Succeeded => "succeeded",
        DeliveryStatus::Failed => "failed",
    }
}

pub(super) async fn enabled_subscriptions(c: &impl GenericClient) -> Result<Vec<Subscription>> {
    let rows = c
        .query(
            &c.prepare_cached("SELECT body FROM relay_subscriptions WHERE enabled ORDER BY id")
                .await?,
            &[],
        )
        .await?;
    rows.into_iter().map(|r| decode_sub(r.get(0))).collect()
}

/// Queue `events` for every subscription in `subs` that wants them, inside
/// the caller's transaction; true when anything was queued.
pub(super) async fn enqueue(
    tx: &impl GenericClient,
    ids: &Ids,
    subs: &[Subscription],
    events: &[Event],
    now: DateTime<Utc>,
) -> Result<bool> {
    let mut batch = Vec::new();
    for event in events {
        for sub in subs.iter().filter(|s| s.enabled && s.wants(event)) {
            let id = delivery_id(ids.next_at(crate::outbox::ms(now)));
            batch.push(queued(sub, event, id, now));
        }
    }
    Ok(queue(tx, &batch, now).await? > 0)
}

/// A new delivery of `event` to `sub`, pending.
fn queued(sub: &Subscription, event: &Event, id: String, now: DateTime<Utc>) -> Delivery {
    Delivery {
        id,
        subscription_id: sub.id.clone(),
        event_id: event.id.clone(),
        event_type: event.kind.as_str().to_string(),
        room_id: event.room_id().map(str::to_string),
        sequence: event.sequence(),
        status: DeliveryStatus::Pending,
        attempts: Vec::new(),
        schedule_start: 0,
        created_at: now,
        next_attempt_at: None,
    }
}

/// Deliveries into their lanes, two statements for any number, skipping
/// each whose lane holds its event already; returns how many went in.
async fn queue(tx: &impl GenericClient, batch: &[Delivery], now: DateTime<Utc>) -> Result<usize> {
    if batch.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = batch.iter().map(|d| d.id.as_str()).collect();
    let subs: Vec<&str> = batch.iter().map(|d| d.subscription_id.as_str()).collect();
    let events: Vec<&str> = batch.iter().map(|d| d.event_id.as_str()).collect();
    let lanes: Vec<String> = batch.iter().map(|d| lane_of(d).room.to_string()).collect();
    let seqs: Vec<i64> = batch
        .iter()
        .map(|d| d.sequence.unwrap_or(0) as i64)
        .collect();
    let records: Vec<serde_json::Value> = batch
        .iter()
        .map(|d| serde_json::to_value(d).expect("deliveries serialize"))
        .collect();
    let added = tx
        .query(
            &tx.prepare_cached(
                "INSERT INTO relay_deliveries
                   (id, subscription_id, event_id, lane, sequence, status, created_at, record)
                 SELECT u.id, u.sub, u.event, u.lane, u.seq, 'pending', $7, u.record
                 FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::JSONB[])
                   AS u(id, sub, event, lane, seq, record)
                 ON CONFLICT (subscription_id, event_id) WHERE status = 'pending' DO NOTHING
                 RETURNING subscription_id, lane",
            )
            .await?,
            &[&ids, &subs, &events, &lanes, &seqs, &records, &now],
        )
        .await?;
    let mut touched: Vec<(String, String)> = added.iter().map(|r| (r.get(0), r.get(1))).collect();
    touched.sort();
    touched.dedup();
    let (subs, lanes): (Vec<String>, Vec<String>) = touched.into_iter().unzip();
    // An idle lane is due now; a busy or waiting one keeps its head's time.
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO relay_lanes (subscription_id, lane, due_at)
             SELECT u.sub, u.lane, $3 FROM unnest($1::TEXT[], $2::TEXT[]) AS u(sub, lane)
             ON CONFLICT (subscription_id, lane)
             DO UPDATE SET due_at = COALESCE(relay_lanes.due_at, $3)",
        )
        .await?,
        &[&subs, &lanes, &now],
    )
    .await?;
    Ok(added.len())
}

async fn save_sub(tx: &impl GenericClient, sub: &Subscription) -> Result<()> {
    let body = serde_json::to_value(sub).expect("subscriptions serialize");
    tx.execute(
        &tx.prepare_cached("UPDATE relay_subscriptions SET body = $2, enabled = $3 WHERE id = $1")
            .await?,
        &[&sub.id, &body, &sub.enabled],
    )
    .await?;
    Ok(())
}

async fn save_delivery(tx: &impl GenericClient, d: &Delivery) -> Result<()> {
    let record = serde_json::to_value(d).expect("deliveries serialize");
    tx.execute(
        &tx.prepare_cached("UPDATE relay_deliveries SET status = $2, record = $3 WHERE id = $1")
            .await?,
        &[&d.id, &status_str(d.status), &record],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
impl super::store::PgStore {
    /// The outbox's invariants, read from scratch (the conformance model).
    pub(crate) async fn check_outbox(&self) -> std::result::Result<(), String> {
        let c = self.client().await.map_err(|e| e.to_string())?;
        let count = |sql: &'static str| {
            let c = &c;
            async move {
                c.query_one(sql, &[])
                    .await
                    .map(|r| r.get::<_, i64>(0))
                    .map_err(|e| e.to_string())
            }
        };
        let laneless = count(
            "SELECT count(*) FROM relay_deliveries d WHERE d.status = 'pending' AND NOT EXISTS (
               SELECT 1 FROM relay_lanes l WHERE l.subscription_id = d.subscription_id AND l.lane = d.lane)",
        )
        .await?;
        if laneless > 0 {
            return Err(format!("{laneless} pending deliveries in no lane"));
        }
        // Reachable: every lane holding work is due at some time (in
        // flight, waiting for a retry, or held for a disabled subscription).
        let stuck = count(
            "SELECT count(*) FROM relay_lanes l WHERE l.due_at IS NULL AND EXISTS (
               SELECT 1 FROM relay_deliveries d WHERE d.subscription_id = l.subscription_id
               AND d.lane = l.lane AND d.status = 'pending')",
        )
        .await?;
        if stuck > 0 {
            return Err(format!("{stuck} lanes with work that nothing will wake"));
        }
        let twice = count(
            "SELECT count(*) FROM (SELECT 1 FROM relay_deliveries WHERE status = 'pending'
               GROUP BY subscription_id, event_id HAVING count(*) > 1) x",
        )
        .await?;
        if twice > 0 {
            return Err("an event queued twice in one lane".into());
        }
        let mismatched =
            count("SELECT count(*) FROM relay_deliveries WHERE status <> record->>'status'")
                .await?;
        if mismatched > 0 {
            return Err("a delivery's status column and record disagree".into());
        }
        Ok(())
    }
}
