//! The engine's side of the outbox: claim what is due, complete it with its
//! attempt. Each claim is read once; each batch of completions is one write.

use super::history::{self, Record};
use super::index::{Entry, LaneId};
use super::model::{Attempt, Delivery, DeliveryStatus, Verdict};
use super::runs::{Runs, Written};
use super::{keys, ms, Outbox, State};
use crate::db::{encode, Result};
use crate::subscription::{should_disable, Subscription, Target};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tracing::warn;

/// A lane's head, taken to be sent: everything the attempt needs.
#[derive(Debug)]
pub struct Claim {
    pub lane: LaneId,
    /// The sled index's entry; None for a claim from the cluster's outbox.
    entry: Option<Entry>,
    pub delivery: Delivery,
    pub target: Arc<Target>,
    /// The webhook body as stored; None when retention removed the event.
    pub body: Option<Vec<u8>>,
}

impl Claim {
    /// A claim made elsewhere (the cluster's outbox): its lane follows
    /// from the delivery.
    pub fn new(delivery: Delivery, target: Arc<Target>, body: Option<Vec<u8>>) -> Self {
        Self {
            lane: super::lane_of(&delivery),
            entry: None,
            delivery,
            target,
            body,
        }
    }
}

/// What the receiver's answer says of the subscription's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Success,
    /// 410: the endpoint is gone; the subscription is disabled.
    Gone,
    Failure,
}

/// A claim with its attempt and what follows from it.
#[derive(Debug)]
pub struct Completion {
    pub claim: Claim,
    pub attempt: Attempt,
    pub verdict: Verdict,
    pub health: Health,
}

/// What [`Outbox::claim`] hands out.
#[derive(Debug, Default)]
pub struct Claims {
    pub claims: Vec<Claim>,
    /// Send only once this many queueing commits are durable.
    pub queued: u64,
}

impl Outbox {
    /// Take up to `limit` lane heads due at `now`.
    pub fn claim(&self, now: DateTime<Utc>, limit: usize) -> Result<Claims> {
        let mut state = self.lock();
        let taken = state.index.claim(ms(now), limit);
        let mut claims = Vec::with_capacity(taken.len());
        for (lane, entry) in taken {
            let Some(target) = state.subs.get(&*lane.sub).cloned() else {
                // Cannot happen while the lock keeps disk and index in step;
                // drop the entry rather than stall the lane.
                warn!(lane = ?lane, "lane entry without its subscription; dropped");
                let written = self.write_completed(
                    &state.index,
                    sled::Batch::default(),
                    &[(lane.clone(), entry, true)],
                )?;
                Self::note_runs(&mut state, written);
                state.index.remove(&lane, &entry);
                state.index.release(&lane);
                self.refresh_head(&mut state, &lane)?;
                continue;
            };
            let delivery = self.delivery_of(&lane, &entry)?;
            let body = self.inner.events.get(entry.event.to_be_bytes())?;
            claims.push(Claim {
                lane,
                entry: Some(entry),
                delivery,
                target,
                body: body.map(|b| b.to_vec()),
            });
        }
        Ok(Claims {
            claims,
            queued: self.queued_commits(),
        })
    }

    /// Give back claims that were not attempted (the store could not be
    /// flushed): their heads are due again.
    pub fn unclaim(&self, claims: Vec<Claim>) {
        let mut state = self.lock();
        for c in claims {
            state.index.release(&c.lane);
            if let Err(e) = self.refresh_head(&mut state, &c.lane) {
                warn!(error = %e, "could not read a lane back");
            }
        }
    }

    /// Record attempts and what follows from each in one write: the
    /// delivery, its lane, and its subscription's health. Each lane's next
    /// head is due at once; a retry waits for its time.
    pub fn complete(&self, done: Vec<Completion>, now: DateTime<Utc>) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let mut state = self.lock();
        let mut batch = sled::Batch::default();
        let mut subs: BTreeMap<String, Subscription> = BTreeMap::new();
        let mut changes = Vec::with_capacity(done.len());
        let mut fresh_pages: BTreeMap<Arc<str>, Vec<Record>> = BTreeMap::new();
        for c in done {
            let lane = c.claim.lane;
            let Some(target) = state.subs.get(&*lane.sub) else {
                // Deleted while in flight: nothing of it may come back.
                state.index.release(&lane);
                continue;
            };
            let mut d = c.claim.delivery;
            let Some(mut entry) = c.claim.entry else {
                // Not a claim of this outbox: nothing here to record.
                state.index.release(&lane);
                continue;
            };
            d.attempts.push(c.attempt);
            let fresh = !entry.attempted;
            entry.attempted = true;
            let left = match c.verdict {
                Verdict::Succeeded | Verdict::Failed => {
                    d.status = if c.verdict == Verdict::Succeeded {
                        DeliveryStatus::Succeeded
                    } else {
                        DeliveryStatus::Failed
                    };
                    d.next_attempt_at = None;
                    true
                }
                Verdict::RetryAt(t) => {
                    d.next_attempt_at = Some(t);
                    entry.not_before = ms(t);
                    false
                }
                Verdict::Hold => {
                    d.next_attempt_at = None;
                    entry.not_before = 0;
                    false
                }
            };
            let record = Record::of(entry.delivery, &d);
            if fresh && left {
                // Finished at its first attempt: into this batch's page.
                fresh_pages
                    .entry(lane.sub.clone())
                    .or_default()
                    .push(record);
            } else {
                history::put_single(&mut batch, &lane.sub, record);
            }
            let sub = subs
                .entry(lane.sub.to_string())
                .or_insert_with(|| target.sub.clone());
            keep_health(sub, c.health, now);
            changes.push((lane, entry, left));
        }
        for (sub, records) in fresh_pages {
            history::put_new(&mut batch, &sub, records);
        }
        for (id, sub) in &subs {
            if state.subs.get(id).is_some_and(|t| &t.sub != sub) {
                batch.insert(keys::sub_key(id), encode(sub));
            }
        }
        let mut heads = HashMap::new();
        let written = match self.write_completed(&state.index, batch, &changes) {
            Ok(mut runs) => {
                for (lane, first, n) in std::mem::take(&mut runs.pending) {
                    heads.insert(lane, (first, n));
                }
                Self::note_runs(&mut state, runs);
                Ok(())
            }
            Err(e) => Err(e),
        };
        for (lane, entry, left) in &changes {
            if written.is_ok() && *left {
                state.index.remove(lane, entry);
            }
            state.index.release(lane);
        }
        if written.is_ok() {
            for (id, sub) in subs {
                self.put_target(&mut state, sub, &id);
            }
        }
        for (lane, _, _) in &changes {
            // The run just written holds the lane's next head when it
            // holds every pending entry of the lane: no read.
            match heads.get(lane) {
                Some((first, n)) if state.index.len(lane) == *n => {
                    state.index.set_head(lane, Some(*first))
                }
                _ => self.refresh_head(&mut state, lane)?,
            }
        }
        written?;
        Ok(())
    }

    /// Write `batch` with each lane's entry edited in its run: finished
    /// (`left`), or kept as it now stands (a retry, a hold).
    fn write_completed(
        &self,
        index: &super::index::Index,
        mut batch: sled::Batch,
        changes: &[(LaneId, Entry, bool)],
    ) -> Result<Written> {
        let mut runs = Runs::new(&self.inner.tree, index);
        for (lane, entry, left) in changes {
            match left {
                true => runs.finish(lane, entry.order)?,
                false => runs.put(lane, *entry)?,
            }
        }
        let written = runs.write(&mut batch);
        self.inner.tree.apply_batch(batch)?;
        Ok(written)
    }

    /// Replace a subscription in memory, holding or freeing its lanes.
    pub(super) fn put_target(&self, state: &mut State, sub: Subscription, id: &str) {
        let was = state.subs.get(id).map(|t| t.sub.enabled);
        let key: Arc<str> = id.into();
        match (was, sub.enabled) {
            (Some(true) | None, false) => {
                warn!(subscription = %id, reason = ?sub.disabled_reason, "subscription disabled");
                state.index.hold(&key)
            }
            (Some(false), true) => state.index.unhold(&key),
            _ => {}
        }
        if state.subs.get(id).is_none_or(|t| t.sub != sub) {
            state
                .subs
                .insert(id.to_string(), Arc::new(Target::new(sub)));
        }
    }
}

/// A success clears the failing streak; 410, or five days without a
/// success, disables the subscription.
pub(crate) fn keep_health(sub: &mut Subscription, health: Health, now: DateTime<Utc>) {
    match health {
        Health::Success => sub.failing_since = None,
        Health::Gone => {
            if sub.enabled {
                sub.enabled = false;
                sub.disabled_reason = Some("receiver answered 410 Gone".into());
                sub.disabled_at = Some(now);
                sub.updated_at = now;
            }
        }
        Health::Failure => {
            let since = *sub.failing_since.get_or_insert(now);
            if sub.enabled && should_disable(Some(since), now) {
                sub.enabled = false;
                sub.disabled_reason = Some("failing without a success for 5 days".into());
                sub.disabled_at = Some(now);
                sub.updated_at = now;
            }
        }
    }
}
