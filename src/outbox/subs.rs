//! Subscriptions, owned by the outbox: each change and what it does to the
//! subscription's deliveries is one atomic write.

use super::claim::decode_delivery;
use super::{keys, Delivery, Outbox};
use crate::db::{encode, Result};
use crate::subscription::Subscription;
use chrono::{DateTime, Utc};
use std::sync::Arc;

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
        match (was_enabled, sub.enabled) {
            (true, false) => sub.disabled_at = Some(now),
            (false, true) => {
                sub.disabled_at = None;
                sub.disabled_reason = None;
                sub.failing_since = None;
            }
            _ => {}
        }
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
            if let Some((lane, entry)) = keys::split_lane_key(&k)
                .and_then(|(lane, order)| Some((lane, keys::decode_entry(order, &v)?)))
            {
                dropped.push((lane, entry));
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
        let before = before
            .and_then(crate::ids::delivery_key)
            .unwrap_or(u128::MAX);
        let mut queued: Vec<Delivery> = Vec::new();
        for item in self.inner.tree.scan_prefix(keys::sub_lanes_prefix(sub)) {
            let (k, v) = item?;
            let Some((lane, entry)) = keys::split_lane_key(&k)
                .and_then(|(lane, order)| Some((lane, keys::decode_entry(order, &v)?)))
            else {
                continue;
            };
            if entry.delivery < before
                && !self
                    .inner
                    .tree
                    .contains_key(keys::delivery_key(sub, entry.delivery))?
            {
                queued.push(super::pending_delivery(&lane, &entry));
            }
        }
        queued.sort_by(|a, b| b.id.cmp(&a.id));
        let mut queued = queued.into_iter().peekable();
        let mut out = Vec::new();
        let range = keys::deliveries_prefix(sub)..keys::delivery_key(sub, before);
        let mut stored = self.inner.tree.range(range).rev();
        let mut next_stored = stored.next().transpose()?;
        while out.len() < limit {
            let from_store = match (&next_stored, queued.peek()) {
                (None, None) => return Ok((out, None)),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((k, _)), Some(q)) => {
                    let dk = keys::split_delivery_key(k).map_or(0, |(_, d)| d);
                    crate::ids::delivery_id(dk) > q.id
                }
            };
            if from_store {
                let (_, v) = next_stored.take().expect("checked");
                out.push(decode_delivery(&v)?);
                next_stored = stored.next().transpose()?;
            } else {
                out.push(queued.next().expect("checked"));
            }
        }
        let more = next_stored.is_some() || queued.peek().is_some();
        let next = more.then(|| out.last().map(|d| d.id.clone())).flatten();
        Ok((out, next))
    }
}
