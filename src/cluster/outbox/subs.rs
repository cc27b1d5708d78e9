//! The cluster outbox's subscriptions: created under a cap, updated and
//! deleted in the lock order (subscription, lane, delivery).

use super::{decode_sub, save_sub};
use crate::cluster::store::{storable, PgStore, OUTBOX_CHANNEL};
use crate::db::Result;
use crate::subscription::Subscription;
use chrono::{DateTime, Utc};

impl PgStore {
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
}

/// The lock a capped create takes: one count-and-insert at a time.
const SUBS_LOCK: i64 = 0x7265_6c61_7903;
