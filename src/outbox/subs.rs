//! Subscriptions, owned by the outbox: each change and what it does to the
//! subscription's deliveries is one atomic write.

use super::history;
use super::model::DeliveryStatus;
use super::{keys, Delivery, Outbox};
use crate::db::{encode, Result};
use crate::subscription::Subscription;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// At most this many deliveries are read for one filtered page or one stats.
pub const FILTER_SCAN: usize = 10_000;
/// Stats judge the success rate on this many finished deliveries.
pub const RECENT: u64 = 100;

/// A subscription's backlog and recent success, as the dashboard shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStats {
    /// Deliveries queued and not yet finished.
    pub pending: u64,
    /// When the oldest of them was queued.
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// Of the last (up to) 100 finished deliveries, how many succeeded...
    pub recent_succeeded: u64,
    /// ...and how many failed for good.
    pub recent_failed: u64,
    /// `recentSucceeded / (recentSucceeded + recentFailed)`; null before any finished.
    pub success_rate: Option<f64>,
}

/// A create refused because the cap on subscriptions is reached.
#[derive(Debug, PartialEq, Eq)]
pub struct CapReached;

impl Outbox {
    /// Store a new subscription unless `max` already exist (checked and
    /// written under one lock, so concurrent creates cannot pass the cap).
    pub fn create_subscription(
        &self,
        sub: Subscription,
        max: usize,
    ) -> Result<Result<(), CapReached>> {
        let mut state = self.lock();
        if state.subs.len() >= max {
            return Ok(Err(CapReached));
        }
        self.inner
            .tree
            .insert(keys::sub_key(&sub.id), encode(&sub))?;
        let id = sub.id.clone();
        self.put_target(&mut state, sub, &id);
        Ok(Ok(()))
    }

    pub fn subscription(&self, id: &str) -> Option<Subscription> {
        self.lock().subs.get(id).map(|t| t.sub.clone())
    }

    /// All subscriptions, oldest first (ids are ULIDs).
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.lock().subs.values().map(|t| t.sub.clone()).collect()
    }

    pub fn subscription_count(&self) -> usize {
        self.lock().subs.len()
    }

    /// Change a subscription. Disabling holds its lanes; enabling makes
    /// their heads due again.
    pub fn update_subscription(
        &self,
        id: &str,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut Subscription),
    ) -> Result<Option<Subscription>> {
        let mut state = self.lock();
        let Some(mut sub) = state.subs.get(id).map(|t| t.sub.clone()) else {
            return Ok(None);
        };
        let was_enabled = sub.enabled;
        change(&mut sub);
        sub.note_enabled(was_enabled, now);
        if state.subs.get(id).is_some_and(|t| t.sub != sub) {
            self.inner.tree.insert(keys::sub_key(id), encode(&sub))?;
            self.put_target(&mut state, sub.clone(), id);
        }
        Ok(Some(sub))
    }

    /// Delete a subscription: its record and every pending delivery go in
    /// one write; its history follows in batches (a crash between is
    /// finished at the next open).
    pub fn delete_subscription(&self, id: &str) -> Result<bool> {
        let mut state = self.lock();
        if !state.subs.contains_key(id) {
            return Ok(false);
        }
        let mut batch = sled::Batch::default();
        batch.remove(keys::sub_key(id));
        let mut dropped = Vec::new();
        for item in self.inner.tree.scan_prefix(keys::sub_lanes_prefix(id)) {
            let (k, v) = item?;
            if let Some((lane, run)) = keys::split_run(&k, &v) {
                let pending = run
                    .into_iter()
                    .filter(|e| !state.index.is_done(&lane, e.order));
                dropped.extend(pending.map(|e| (lane.clone(), e)));
            }
            batch.remove(k);
        }
        self.inner.tree.apply_batch(batch)?;
        state.subs.remove(id);
        let key: Arc<str> = id.into();
        state.index.drop_sub(&key, &dropped);
        drop(state);
        self.delete_history(id)?;
        Ok(true)
    }

    /// Remove a deleted subscription's delivery records, a batch at a time.
    pub(super) fn delete_history(&self, id: &str) -> Result<()> {
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for item in self
                .inner
                .tree
                .scan_prefix(keys::deliveries_prefix(id))
                .take(512)
            {
                batch.remove(item?.0);
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            self.inner.tree.apply_batch(batch)?;
        }
    }

    /// A subscription's deliveries, newest first, before the cursor: the
    /// records of attempted ones and the queued ones not attempted yet.
    pub fn list_deliveries(
        &self,
        sub: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<String>)> {
        self.list_deliveries_where(sub, before, limit, None)
    }

    /// [`Self::list_deliveries`] with only those in `status`. A filtered page
    /// reads at most [`FILTER_SCAN`] deliveries; its cursor then says where
    /// to go on, so a long history never makes one slow request.
    pub fn list_deliveries_where(
        &self,
        sub: &str,
        before: Option<&str>,
        limit: usize,
        status: Option<DeliveryStatus>,
    ) -> Result<(Vec<Delivery>, Option<String>)> {
        let before = before
            .and_then(crate::ids::delivery_key)
            .unwrap_or(u128::MAX);
        let mut queued: Vec<Delivery> = Vec::new();
        let want_queued = matches!(status, None | Some(DeliveryStatus::Pending));
        for item in self.inner.tree.scan_prefix(keys::sub_lanes_prefix(sub)) {
            if !want_queued {
                break;
            }
            let (k, v) = item?;
            let Some((lane, run)) = keys::split_run(&k, &v) else {
                continue;
            };
            for entry in run {
                // An entry with a record (attempted, or finished and
                // left in its run) is read with the records below.
                if entry.delivery < before
                    && history::find(&self.inner.tree, sub, entry.delivery)?.is_none()
                {
                    queued.push(super::pending_delivery(&lane, &entry));
                }
            }
        }
        queued.sort_by(|a, b| b.id.cmp(&a.id));
        let mut queued = queued.into_iter().peekable();
        let mut out = Vec::new();
        let mut stored = history::Newest::new(&self.inner.tree, sub, before);
        let mut scanned = 0usize;
        let mut last_seen: Option<String> = None;
        while out.len() < limit {
            if status.is_some() && scanned >= FILTER_SCAN {
                return Ok((out, last_seen));
            }
            let next_stored = stored.peek()?;
            let from_store = match (next_stored, queued.peek()) {
                (None, None) => return Ok((out, None)),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((dk, _)), Some(q)) => crate::ids::delivery_id(dk) > q.id,
            };
            scanned += 1;
            let d = match next_stored {
                // Another status: passed over without reading its record.
                Some((dk, s)) if from_store && status.is_some_and(|want| want != s) => {
                    stored.next_status()?;
                    last_seen = Some(crate::ids::delivery_id(dk));
                    continue;
                }
                _ if from_store => stored.next_record()?.expect("peeked"),
                _ => queued.next().expect("checked"),
            };
            last_seen = Some(d.id.clone());
            if status.is_none_or(|s| d.status == s) {
                out.push(d);
            }
        }
        let more = stored.peek()?.is_some() || queued.peek().is_some();
        let next = more.then(|| out.last().map(|d| d.id.clone())).flatten();
        Ok((out, next))
    }

    /// A subscription's figures for the dashboard: its backlog now, and how
    /// the last [`RECENT`] finished deliveries went.
    pub fn stats(&self, sub: &str) -> Result<SubscriptionStats> {
        let (pending, oldest) = {
            let state = self.lock();
            (state.index.pending_of(sub), state.index.oldest_of(sub))
        };
        let (mut succeeded, mut failed) = (0u64, 0u64);
        let mut newest = history::Newest::new(&self.inner.tree, sub, u128::MAX);
        for _ in 0..FILTER_SCAN {
            match newest.next_status()? {
                Some((_, DeliveryStatus::Succeeded)) => succeeded += 1,
                Some((_, DeliveryStatus::Failed)) => failed += 1,
                Some((_, DeliveryStatus::Pending)) => continue,
                None => break,
            }
            if succeeded + failed >= RECENT {
                break;
            }
        }
        let finished = succeeded + failed;
        Ok(SubscriptionStats {
            pending,
            oldest_pending_at: oldest.and_then(|ms| DateTime::from_timestamp_millis(ms as i64)),
            recent_succeeded: succeeded,
            recent_failed: failed,
            success_rate: (finished > 0).then(|| succeeded as f64 / finished as f64),
        })
    }
}
