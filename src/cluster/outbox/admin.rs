//! An operator's hands on the cluster outbox: deliveries read, retried,
//! replayed, tested; the backlog's figures; pruning.

use super::{decode_delivery, decode_sub, queue, queued, save_delivery, status_str, RECENT};
use crate::cluster::events::{event_of, insert_events, notify_events};
use crate::cluster::store::{storable, PgStore, OUTBOX_CHANNEL};
use crate::db::Result;
use crate::event::Event;
use crate::ids::delivery_id;
use crate::outbox::{lane_of, Delivery, DeliveryStatus, Retried, SubscriptionStats};
use crate::subscription::Subscription;
use chrono::{DateTime, Utc};

impl PgStore {
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
