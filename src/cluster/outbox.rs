//! The outbox in PostgreSQL: subscriptions, deliveries and lanes (one
//! subscription, one room), claimed across the cluster so each lane has one
//! head in flight at a time: FIFO per room per subscriber, as on sled. A
//! claim is held until a deadline; a dead holder's claim expires and its
//! head is claimed again (at least once). A lane's head is its pending
//! delivery with the smallest sequence, so a retried or replayed older
//! event simply becomes the head: no lane state can go stale. Rows are
//! locked in one order, subscription, lane, delivery, so no two
//! transactions deadlock (a deadlock's victim would lose its work).

use super::store::{event_of, insert_events, notify_events, storable, PgStore, OUTBOX_CHANNEL};
use crate::db::{Result, StoreError};
use crate::event::Event;
use crate::ids::{delivery_id, Ids};
use crate::outbox::{
    keep_health, lane_of, Claim, Completion, Delivery, DeliveryStatus, Retried, SubscriptionStats,
    Verdict,
};
use crate::subscription::{Subscription, Target};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use std::sync::Arc;
use std::time::Duration;

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

impl PgStore {
    // ---- subscriptions ----

    /// Store a new subscription unless `max` exist already (counted and
    /// written under one lock across the cluster).
    pub async fn create_subscription(&self, sub: &Subscription, max: usize) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            &tx.prepare_cached("SELECT pg_advisory_xact_lock($1)")
                .await?,
            &[&SUBS_LOCK],
        )
        .await?;
        let count: i64 = tx
            .query_one(
                &tx.prepare_cached("SELECT count(*) FROM relay_subscriptions")
                    .await?,
                &[],
            )
            .await?
            .get(0);
        if count as usize >= max {
            return Ok(false);
        }
        let body = serde_json::to_value(sub).expect("subscriptions serialize");
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO relay_subscriptions (id, body, enabled) VALUES ($1, $2, $3)",
            )
            .await?,
            &[&sub.id, &body, &sub.enabled],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn subscription(&self, id: &str) -> Result<Option<Subscription>> {
        if !storable(id) {
            return Ok(None);
        }
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached("SELECT body FROM relay_subscriptions WHERE id = $1")
                    .await?,
                &[&id],
            )
            .await?;
        row.map(|r| decode_sub(r.get(0))).transpose()
    }

    /// All subscriptions, oldest first (ids are ULIDs).
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &c.prepare_cached("SELECT body FROM relay_subscriptions ORDER BY id")
                    .await?,
                &[],
            )
            .await?;
        rows.into_iter().map(|r| decode_sub(r.get(0))).collect()
    }

    pub async fn subscription_count(&self) -> Result<usize> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(
                &c.prepare_cached("SELECT count(*) FROM relay_subscriptions")
                    .await?,
                &[],
            )
            .await?
            .get(0);
        Ok(n as usize)
    }

    /// Change a subscription under a row lock. Enabling makes its lanes'
    /// heads due again (disabled lanes are skipped by claims meanwhile).
    pub async fn update_subscription(
        &self,
        id: &str,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut Subscription),
    ) -> Result<Option<Subscription>> {
        if !storable(id) {
            return Ok(None);
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let Some(row) = tx
            .query_opt(
                &tx.prepare_cached(
                    "SELECT body FROM relay_subscriptions WHERE id = $1 FOR NO KEY UPDATE",
                )
                .await?,
                &[&id],
            )
            .await?
        else {
            return Ok(None);
        };
        let before = decode_sub(row.get(0))?;
        let mut sub = before.clone();
        change(&mut sub);
        sub.note_enabled(before.enabled, now);
        if sub != before {
            save_sub(&tx, &sub).await?;
            if sub.enabled && !before.enabled {
                tx.execute(
                    &tx.prepare_cached(
                        "UPDATE relay_lanes SET due_at = $2 WHERE subscription_id = $1",
                    )
                    .await?,
                    &[&id, &now],
                )
                .await?;
                tx.execute(&format!("NOTIFY {OUTBOX_CHANNEL}"), &[]).await?;
            }
        }
        tx.commit().await?;
        Ok(Some(sub))
    }

    /// Delete a subscription with its deliveries and lanes. Its lanes are
    /// locked before the cascade reaches its deliveries: the lock order of
    /// a completion (lanes, then deliveries), so the two never deadlock.
    pub async fn delete_subscription(&self, id: &str) -> Result<bool> {
        if !storable(id) {
            return Ok(false);
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if tx
            .query_opt(
                &tx.prepare_cached("SELECT 1 FROM relay_subscriptions WHERE id = $1 FOR UPDATE")
                    .await?,
                &[&id],
            )
            .await?
            .is_none()
        {
            return Ok(false);
        }
        tx.execute(
            &tx.prepare_cached(
                "SELECT 1 FROM relay_lanes WHERE subscription_id = $1 ORDER BY lane FOR UPDATE",
            )
            .await?,
            &[&id],
        )
        .await?;
        let n = tx
            .execute(
                &tx.prepare_cached("DELETE FROM relay_subscriptions WHERE id = $1")
                    .await?,
                &[&id],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    // ---- the engine's side ----

    /// Take up to `limit` lane heads due at `now`, held for `hold` (then
    /// another instance may take them). Lanes of disabled subscriptions wait.
    /// Due times are the instances' clocks (kept by NTP); leases, which
    /// fence, are the database's.
    pub async fn claim(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<Claim>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let me = self.instance();
        let hold = hold.as_secs_f64();
        let lanes = tx
            .query(
                &tx.prepare_cached(
                    "WITH picked AS (
                   SELECT l.subscription_id, l.lane FROM relay_lanes l
                   JOIN relay_subscriptions s ON s.id = l.subscription_id AND s.enabled
                   WHERE l.due_at <= $4 AND (l.claim_until IS NULL OR l.claim_until < $4)
                   ORDER BY l.due_at LIMIT $2 FOR UPDATE OF l SKIP LOCKED)
                 UPDATE relay_lanes l
                 SET claimed_by = $1, claim_until = $4 + make_interval(secs => $3)
                 FROM picked
                 WHERE l.subscription_id = picked.subscription_id AND l.lane = picked.lane
                 RETURNING l.subscription_id, l.lane",
                )
                .await?,
                &[&me, &(limit as i64), &hold, &now],
            )
            .await?;
        if lanes.is_empty() {
            return Ok(Vec::new());
        }
        let subs: Vec<String> = lanes.iter().map(|r| r.get(0)).collect();
        let names: Vec<String> = lanes.iter().map(|r| r.get(1)).collect();
        let heads = tx
            .query(
                &tx.prepare_cached(
                    "SELECT DISTINCT ON (d.subscription_id, d.lane)
                        d.subscription_id, d.lane, d.record, e.body, s.body
                 FROM unnest($1::TEXT[], $2::TEXT[]) AS l(sub, lane)
                 JOIN relay_deliveries d ON d.subscription_id = l.sub AND d.lane = l.lane
                      AND d.status = 'pending'
                 JOIN relay_subscriptions s ON s.id = d.subscription_id
                 LEFT JOIN relay_events e ON e.id = d.event_id
                 ORDER BY d.subscription_id, d.lane, d.sequence, d.id",
                )
                .await?,
                &[&subs, &names],
            )
            .await?;
        let mut claims = Vec::with_capacity(heads.len());
        let mut empty: std::collections::HashSet<(String, String)> =
            subs.into_iter().zip(names).collect();
        let mut targets: std::collections::HashMap<String, Arc<Target>> = Default::default();
        for row in &heads {
            let (sub, lane): (String, String) = (row.get(0), row.get(1));
            empty.remove(&(sub.clone(), lane));
            let delivery = decode_delivery(row.get(2))?;
            let target = match targets.get(&sub) {
                Some(t) => t.clone(),
                None => {
                    let t = Arc::new(Target::new(decode_sub(row.get(4))?));
                    targets.insert(sub, t.clone());
                    t
                }
            };
            let body: Option<Vec<u8>> = row.get(3);
            claims.push(Claim::new(delivery, target, body));
        }
        // A lane with nothing pending rests until the next enqueue.
        for (sub, lane) in empty {
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE relay_lanes SET due_at = NULL, claimed_by = NULL, claim_until = NULL
                 WHERE subscription_id = $1 AND lane = $2 AND NOT EXISTS (
                   SELECT 1 FROM relay_deliveries WHERE subscription_id = $1 AND lane = $2
                   AND status = 'pending')",
                )
                .await?,
                &[&sub, &lane],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(claims)
    }

    /// Record attempts and what follows from each, in one transaction of a
    /// few statements for the whole batch: the deliveries, their lanes'
    /// next due times, and (when it changes) a subscription's health. A
    /// claim this instance no longer holds (it expired and another took it)
    /// records nothing: the other holder sends again (at least once).
    /// Returns how many were recorded.
    pub async fn complete(&self, done: Vec<Completion>, now: DateTime<Utc>) -> Result<usize> {
        if done.is_empty() {
            return Ok(0);
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Rows are locked in one order everywhere (subscriptions, lanes,
        // deliveries), so no two transactions deadlock: a subscription whose
        // health changes is locked first. FOR NO KEY UPDATE, as only its
        // body changes: a queueing commit holding its key share (the
        // deliveries' foreign key) and waiting for one of these lanes does
        // not block it.
        let mut done: Vec<(Completion, bool)> = done
            .into_iter()
            .map(|c| {
                let changes = changes_health(&c, now);
                (c, changes)
            })
            .collect();
        done.sort_by(|a, b| a.0.claim.lane.cmp(&b.0.claim.lane));
        let mut changing: Vec<&str> = done
            .iter()
            .filter(|(_, changes)| *changes)
            .map(|(c, _)| &*c.claim.lane.sub)
            .collect();
        changing.sort_unstable();
        changing.dedup();
        if !changing.is_empty() {
            tx.execute(
                &tx.prepare_cached(
                    "SELECT 1 FROM relay_subscriptions WHERE id = ANY($1)
                     ORDER BY id FOR NO KEY UPDATE",
                )
                .await?,
                &[&changing],
            )
            .await?;
        }
        let subs: Vec<&str> = done.iter().map(|(c, _)| &*c.claim.lane.sub).collect();
        let lanes: Vec<&str> = done.iter().map(|(c, _)| &*c.claim.lane.room).collect();
        let held: std::collections::HashSet<(String, String)> = tx
            .query(
                &tx.prepare_cached(
                    "SELECT l.subscription_id, l.lane FROM relay_lanes l
                     JOIN unnest($1::TEXT[], $2::TEXT[]) AS u(sub, lane)
                       ON l.subscription_id = u.sub AND l.lane = u.lane
                     WHERE l.claimed_by = $3
                     ORDER BY l.subscription_id, l.lane FOR UPDATE OF l",
                )
                .await?,
                &[&subs, &lanes, &self.instance()],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let done: Vec<(Completion, bool)> = done
            .into_iter()
            .filter(|(c, _)| {
                held.contains(&(c.claim.lane.sub.to_string(), c.claim.lane.room.to_string()))
            })
            .collect();
        let mut recorded = Vec::with_capacity(done.len());
        let mut health = Vec::new();
        for (c, changes) in done {
            if changes {
                health.push((c.claim.lane.sub.clone(), c.health));
            }
            let (verdict, lane) = (c.verdict, c.claim.lane);
            let mut d = c.claim.delivery;
            d.attempts.push(c.attempt);
            let due = match verdict {
                Verdict::Succeeded | Verdict::Failed => {
                    d.status = if verdict == Verdict::Succeeded {
                        DeliveryStatus::Succeeded
                    } else {
                        DeliveryStatus::Failed
                    };
                    d.next_attempt_at = None;
                    now
                }
                Verdict::RetryAt(t) => {
                    d.next_attempt_at = Some(t);
                    t
                }
                Verdict::Hold => {
                    d.next_attempt_at = None;
                    now
                }
            };
            recorded.push((d, lane, due));
        }
        let ids: Vec<&str> = recorded.iter().map(|(d, _, _)| d.id.as_str()).collect();
        let statuses: Vec<&str> = recorded
            .iter()
            .map(|(d, _, _)| status_str(d.status))
            .collect();
        let records: Vec<serde_json::Value> = recorded
            .iter()
            .map(|(d, _, _)| serde_json::to_value(d).expect("deliveries serialize"))
            .collect();
        tx.execute(
            &tx.prepare_cached(
                "UPDATE relay_deliveries d SET status = u.status, record = u.record
                 FROM unnest($1::TEXT[], $2::TEXT[], $3::JSONB[]) AS u(id, status, record)
                 WHERE d.id = u.id",
            )
            .await?,
            &[&ids, &statuses, &records],
        )
        .await?;
        let subs: Vec<&str> = recorded.iter().map(|(_, l, _)| &*l.sub).collect();
        let lanes: Vec<&str> = recorded.iter().map(|(_, l, _)| &*l.room).collect();
        let dues: Vec<DateTime<Utc>> = recorded.iter().map(|(_, _, due)| *due).collect();
        // Released; due again when work is left, else at rest.
        tx.execute(
            &tx.prepare_cached(
                "UPDATE relay_lanes l SET claimed_by = NULL, claim_until = NULL,
                   due_at = CASE WHEN EXISTS (SELECT 1 FROM relay_deliveries d
                     WHERE d.subscription_id = l.subscription_id AND d.lane = l.lane
                     AND d.status = 'pending') THEN u.due ELSE NULL END
                 FROM unnest($1::TEXT[], $2::TEXT[], $3::TIMESTAMPTZ[]) AS u(sub, lane, due)
                 WHERE l.subscription_id = u.sub AND l.lane = u.lane",
            )
            .await?,
            &[&subs, &lanes, &dues],
        )
        .await?;
        for (sub_id, h) in health {
            let row = tx
                .query_opt(
                    &tx.prepare_cached(
                        "SELECT body FROM relay_subscriptions WHERE id = $1 FOR NO KEY UPDATE",
                    )
                    .await?,
                    &[&&*sub_id],
                )
                .await?;
            if let Some(row) = row {
                let before = decode_sub(row.get(0))?;
                let mut sub = before.clone();
                keep_health(&mut sub, h, now);
                if sub != before {
                    save_sub(&tx, &sub).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(recorded.len())
    }

    /// When the next lane head is due, across the cluster.
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        let c = self.client().await?;
        let row = c
            .query_one(
&c.prepare_cached("SELECT min(GREATEST(l.due_at, COALESCE(l.claim_until, l.due_at)))
                 FROM relay_lanes l JOIN relay_subscriptions s ON s.id = l.subscription_id AND s.enabled
                 WHERE l.due_at IS NOT NULL").await?,
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    // ---- an operator's hands ----

    pub async fn delivery(&self, sub: &str, id: &str) -> Result<Option<Delivery>> {
        if !storable(sub) || !storable(id) {
            return Ok(None);
        }
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached(
                    "SELECT record FROM relay_deliveries WHERE subscription_id = $1 AND id = $2",
                )
                .await?,
                &[&sub, &id],
            )
            .await?;
        row.map(|r| decode_delivery(r.get(0))).transpose()
    }

    /// A subscription's deliveries, newest first, before the cursor.
    pub async fn list_deliveries_where(
        &self,
        sub: &str,
        before: Option<&str>,
        limit: usize,
        status: Option<DeliveryStatus>,
    ) -> Result<(Vec<Delivery>, Option<String>)> {
        if !storable(sub) || before.is_some_and(|b| !storable(b)) {
            return Ok((Vec::new(), None));
        }
        let c = self.client().await?;
        let limit = limit.clamp(1, 10_000) as i64;
        let status = status.map(status_str);
        let rows = c
            .query(
                &c.prepare_cached(
                    "SELECT record FROM relay_deliveries WHERE subscription_id = $1
                   AND ($2::TEXT IS NULL OR id < $2) AND ($3::TEXT IS NULL OR status = $3)
                 ORDER BY id DESC LIMIT $4",
                )
                .await?,
                &[&sub, &before, &status, &(limit + 1)],
            )
            .await?;
        let mut out = rows
            .into_iter()
            .map(|r| decode_delivery(r.get(0)))
            .collect::<Result<Vec<_>>>()?;
        let more = out.len() as i64 > limit;
        out.truncate(limit as usize);
        let next = more.then(|| out.last().map(|d| d.id.clone())).flatten();
        Ok((out, next))
    }

    /// A subscription's backlog and recent success, read in one statement
    /// so the figures come from one snapshot.
    pub async fn stats(&self, sub: &str) -> Result<SubscriptionStats> {
        let sub = if storable(sub) { sub } else { "" };
        let c = self.client().await?;
        let row = c
            .query_one(
                &c.prepare_cached(
                    "SELECT p.n, p.oldest, r.succeeded, r.failed
                     FROM (SELECT count(*) AS n, min(created_at) AS oldest FROM relay_deliveries
                           WHERE subscription_id = $1 AND status = 'pending') p,
                          (SELECT count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                                  count(*) FILTER (WHERE status = 'failed') AS failed
                           FROM (SELECT status FROM relay_deliveries
                                 WHERE subscription_id = $1 AND status <> 'pending'
                                 ORDER BY id DESC LIMIT $2) recent) r",
                )
                .await?,
                &[&sub, &RECENT],
            )
            .await?;
        let (pending, oldest): (i64, Option<DateTime<Utc>>) = (row.get(0), row.get(1));
        let (succeeded, failed): (i64, i64) = (row.get(2), row.get(3));
        let finished = succeeded + failed;
        Ok(SubscriptionStats {
            pending: pending as u64,
            oldest_pending_at: oldest,
            recent_succeeded: succeeded as u64,
            recent_failed: failed as u64,
            success_rate: (finished > 0).then(|| succeeded as f64 / finished as f64),
        })
    }

    /// Send a failed delivery again: pending at its event's place in its
    /// lane, due now (after a delivery in flight in that lane).
    pub async fn retry(&self, sub: &str, id: &str) -> Result<Retried> {
        if !storable(sub) || !storable(id) {
            return Ok(Retried::NotFound);
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // The subscription's key first, as a queueing commit takes it: a
        // deletion (subscription, lanes, deliveries) then waits for this
        // one (delivery, lane) rather than crossing it.
        tx.execute(
            &tx.prepare_cached("SELECT 1 FROM relay_subscriptions WHERE id = $1 FOR KEY SHARE")
                .await?,
            &[&sub],
        )
        .await?;
        let Some(row) = tx
            .query_opt(
&tx.prepare_cached("SELECT record FROM relay_deliveries WHERE subscription_id = $1 AND id = $2 FOR UPDATE").await?,
                &[&sub, &id],
            )
            .await?
        else {
            return Ok(Retried::NotFound);
        };
        let mut d = decode_delivery(row.get(0))?;
        if d.status != DeliveryStatus::Failed {
            return Ok(Retried::NotFailed(d));
        }
        let queued = tx
            .query_opt(
                &tx.prepare_cached(
                    "SELECT id FROM relay_deliveries WHERE subscription_id = $1 AND event_id = $2
                 AND status = 'pending'",
                )
                .await?,
                &[&sub, &d.event_id],
            )
            .await?;
        if let Some(other) = queued {
            return Ok(Retried::AlreadyQueued(other.get(0)));
        }
        let now = Utc::now();
        d.status = DeliveryStatus::Pending;
        d.schedule_start = d.attempts.len();
        d.next_attempt_at = Some(now);
        save_delivery(&tx, &d).await?;
        let lane = lane_of(&d).room.to_string();
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO relay_lanes (subscription_id, lane, due_at) VALUES ($1, $2, $3)
             ON CONFLICT (subscription_id, lane)
             DO UPDATE SET due_at = LEAST(COALESCE(relay_lanes.due_at, $3), $3)",
            )
            .await?,
            &[&sub, &lane, &now],
        )
        .await?;
        tx.execute(&format!("NOTIFY {OUTBOX_CHANNEL}"), &[]).await?;
        tx.commit().await?;
        Ok(Retried::Queued(d))
    }

    /// Queue again every stored event since `since` that `sub` wants and
    /// whose lane does not hold it already, a few hundred per transaction.
    pub async fn replay(
        &self,
        sub: &Subscription,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        const CHUNK: i64 = 256;
        let mut from = crate::ids::event_id(crate::ids::floor_of_ms(crate::outbox::ms(since)));
        let mut queued = 0;
        let mut first = true;
        loop {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            let op = if first { ">=" } else { ">" };
            let rows = tx
                .query(
                    &format!(
                        "SELECT id, body FROM relay_events WHERE id {op} $1 ORDER BY id LIMIT $2"
                    ),
                    &[&from, &CHUNK],
                )
                .await?;
            first = false;
            let Some(last) = rows.last() else {
                return Ok(queued);
            };
            from = last.get(0);
            let exists = tx
                .query_opt(
                    &tx.prepare_cached("SELECT 1 FROM relay_subscriptions WHERE id = $1")
                        .await?,
                    &[&sub.id],
                )
                .await?;
            if exists.is_none() {
                return Ok(queued);
            }
            let mut batch = Vec::new();
            for row in &rows {
                let event = event_of(row)?;
                if event.timestamp >= since && sub.wants(&event) {
                    let id = delivery_id(self.inner.ids.next_at(crate::outbox::ms(now)));
                    batch.push(self::queued(sub, &event, id, now));
                }
            }
            queued += queue(&tx, &batch, now).await?;
            tx.execute(&format!("NOTIFY {OUTBOX_CHANNEL}"), &[]).await?;
            tx.commit().await?;
        }
    }

    /// Store a `webhook.test` event and queue it for one subscription, in
    /// one transaction. None when there is no such subscription.
    pub async fn enqueue_test(
        &self,
        sub: &str,
        mut event: Event,
        now: DateTime<Utc>,
    ) -> Result<Option<Event>> {
        if !storable(sub) {
            return Ok(None);
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let Some(row) = tx
            .query_opt(
                &tx.prepare_cached("SELECT body FROM relay_subscriptions WHERE id = $1")
                    .await?,
                &[&sub],
            )
            .await?
        else {
            return Ok(None);
        };
        let sub = decode_sub(row.get(0))?;
        self.order_events(&tx).await?;
        let key = self.inner.ids.next_at(crate::outbox::ms(now));
        event.id = crate::ids::event_id(key);
        insert_events(&tx, std::slice::from_ref(&event)).await?;
        let id = delivery_id(self.inner.ids.next_at(crate::outbox::ms(now)));
        queue(&tx, &[queued(&sub, &event, id, now)], now).await?;
        tx.execute(&format!("NOTIFY {OUTBOX_CHANNEL}"), &[]).await?;
        notify_events(&tx, key).await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    /// Deliveries pending across the cluster, and when the oldest was queued.
    pub async fn pending(&self) -> Result<(u64, Option<DateTime<Utc>>)> {
        let c = self.client().await?;
        let row = c
            .query_one(
&c.prepare_cached("SELECT count(*), min(created_at) FROM relay_deliveries WHERE status = 'pending'").await?,
                &[],
            )
            .await?;
        Ok((row.get::<_, i64>(0) as u64, row.get(1)))
    }

    /// Pending deliveries of enabled subscriptions: work the cluster can do.
    pub async fn deliverable(&self) -> Result<u64> {
        let c = self.client().await?;
        let row = c
            .query_one(
                &c.prepare_cached(
                    "SELECT count(*) FROM relay_deliveries d JOIN relay_subscriptions s
                 ON s.id = d.subscription_id AND s.enabled WHERE d.status = 'pending'",
                )
                .await?,
                &[],
            )
            .await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Remove up to `batch` finished deliveries queued before `cutoff`.
    pub async fn prune_deliveries(&self, cutoff: DateTime<Utc>, batch: i64) -> Result<u64> {
        let c = self.client().await?;
        Ok(c.execute(
            &c.prepare_cached(
                "DELETE FROM relay_deliveries WHERE id IN (
               SELECT id FROM relay_deliveries WHERE status <> 'pending' AND created_at < $1
               LIMIT $2)",
            )
            .await?,
            &[&cutoff, &batch],
        )
        .await?)
    }
}

/// Does this attempt change its subscription's health as the claim saw it?
/// Rarely (a first failure, a recovery, a 410): health is written only
/// then, so instances completing one subscription's deliveries do not
/// queue on its row.
fn changes_health(c: &Completion, now: DateTime<Utc>) -> bool {
    let mut seen = c.claim.target.sub.clone();
    keep_health(&mut seen, c.health, now);
    seen != c.claim.target.sub
}

/// The lock a capped create takes: one count-and-insert at a time.
const SUBS_LOCK: i64 = 0x7265_6c61_7903;

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
impl PgStore {
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
