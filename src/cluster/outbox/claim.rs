//! The engine's side of the cluster outbox: claim lane heads across the
//! cluster, complete them with their attempts.

use super::{decode_delivery, decode_sub, save_sub, status_str};
use crate::cluster::store::PgStore;
use crate::db::Result;
use crate::outbox::{keep_health, Claim, Completion, DeliveryStatus, Verdict};
use crate::subscription::Target;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

impl PgStore {
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
