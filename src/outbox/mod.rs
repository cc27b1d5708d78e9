//! The delivery outbox: the one owner of subscriptions, deliveries and their
//! per-(subscription, room) lanes, on disk and in memory.
//!
//! Every change happens under one lock, writes its records in one atomic
//! batch (or inside the poll's transaction), and only then updates the
//! in-memory [`index::Index`]. So the disk and the index never disagree, a
//! delivery is visible to the engine only once its commit is done, and the
//! running figures (pending, oldest, events needed) are never scans.
//!
//! Guarantees kept here, and checked against a model in `tests`:
//! one entry per event per lane; lanes in the room's `sequence` order; an
//! event stored before or with any delivery of it; every pending delivery
//! due, in flight, behind a due head, or held with its disabled
//! subscription; nothing left of a deleted subscription.

mod admin;
#[cfg(test)]
pub(crate) mod check;
mod claim;
mod history;
mod index;
mod keys;
mod model;
mod open;
mod prune;
mod runs;
mod subs;

pub use admin::Retried;
pub(crate) use claim::keep_health;
pub use claim::{Claim, Completion, Health};
pub use index::LaneId;
pub use model::{Attempt, Delivery, DeliveryStatus, Verdict};
pub use subs::SubscriptionStats;

use crate::db::Result;
use crate::event::Event;
use crate::ids::Ids;
use crate::subscription::Target;
use chrono::{DateTime, Utc};
use index::{Entry, Index};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    tree: sled::Tree,
    /// The store's events (webhook bodies by event key): read for claims and
    /// replays, written with a test event's delivery.
    events: sled::Tree,
    ids: Arc<Ids>,
    /// Commits that queued work; the engine makes them durable before sending.
    queued: Arc<AtomicU64>,
    state: Mutex<State>,
}

pub(crate) struct State {
    subs: BTreeMap<String, Arc<Target>>,
    index: Index,
}

/// Deliveries planned inside a poll's transaction, applied to memory after it.
#[derive(Default)]
pub(crate) struct Plan {
    batch: sled::Batch,
    added: Vec<(LaneId, Entry)>,
}

impl Plan {
    pub(crate) fn batch(&self) -> &sled::Batch {
        &self.batch
    }
}

pub fn ms(t: DateTime<Utc>) -> u64 {
    t.timestamp_millis().max(0) as u64
}

impl Outbox {
    /// The outbox's tree, for the poll's transaction.
    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.inner.tree
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().expect("outbox lock")
    }

    /// Queue `events` (one commit of one room, about to be stored) for
    /// every enabled subscription that wants them. Runs under the caller's
    /// lock, inside the poll's transaction; [`Outbox::applied`] follows the
    /// commit.
    pub(crate) fn plan(&self, state: &State, events: &[Event], now: DateTime<Utc>) -> Plan {
        let mut plan = Plan::default();
        for event in events {
            for target in state.subs.values() {
                if target.sub.enabled && target.sub.wants(event) {
                    plan.added
                        .push((event_lane(&target.sub.id, event), self.entry(event, now)));
                }
            }
        }
        // A commit's events come after every entry of their lanes, so each
        // lane's entries start a run of their own: one write, no read.
        let mut runs: BTreeMap<&LaneId, Vec<Entry>> = BTreeMap::new();
        for (lane, e) in &plan.added {
            runs.entry(lane).or_default().push(*e);
        }
        for (lane, run) in runs {
            plan.batch
                .insert(keys::lane_key(lane, run[0].order), keys::encode_run(&run));
        }
        plan
    }

    /// A new lane entry for `event`: a delivery queued now.
    fn entry(&self, event: &Event, now: DateTime<Utc>) -> Entry {
        Entry {
            order: lane_order(event),
            delivery: self.inner.ids.next_at(ms(now)),
            event: crate::ids::event_key(&event.id).unwrap_or(0),
            not_before: 0,
            kind: event.kind,
            attempted: false,
        }
    }

    /// A planned batch is committed: make its deliveries visible.
    pub(crate) fn applied(&self, state: &mut State, plan: Plan) {
        if plan.added.is_empty() {
            return;
        }
        self.inner.queued.fetch_add(1, Ordering::SeqCst);
        for (lane, entry) in plan.added {
            state.index.add(&lane, entry);
        }
    }

    /// Run `f` with the outbox locked: the poll's commit plans and applies
    /// under it, so no subscription changes in between.
    pub(crate) fn locked<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.lock())
    }

    /// Pending deliveries, and when the oldest of them was queued.
    pub fn pending(&self) -> (u64, Option<DateTime<Utc>>) {
        let state = self.lock();
        let oldest = state
            .index
            .oldest_ms()
            .and_then(|ms| DateTime::from_timestamp_millis(ms as i64));
        (state.index.pending(), oldest)
    }

    /// Pending deliveries of enabled subscriptions: the backlog that can move.
    pub fn deliverable(&self) -> u64 {
        let state = self.lock();
        state
            .subs
            .values()
            .filter(|t| t.sub.enabled)
            .map(|t| state.index.pending_of(&t.sub.id))
            .sum()
    }

    /// When the next waiting head falls due.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        let next = self.lock().index.next_due()?;
        DateTime::from_timestamp_millis(next.min(i64::MAX as u64) as i64)
    }

    /// Commits that queued work so far: [`Claims::queued`] is one of these.
    pub fn queued_commits(&self) -> u64 {
        self.inner.queued.load(Ordering::SeqCst)
    }

    /// One of a subscription's deliveries, by id.
    pub fn delivery(&self, sub: &str, id: &str) -> Result<Option<Delivery>> {
        let Some(dk) = crate::ids::delivery_key(id) else {
            return Ok(None);
        };
        if let Some(d) = self.stored_delivery(sub, dk)? {
            return Ok(Some(d));
        }
        // Not attempted yet: only its lane entry exists.
        for item in self.inner.tree.scan_prefix(keys::sub_lanes_prefix(sub)) {
            let (k, v) = item?;
            let Some((lane, run)) = keys::split_run(&k, &v) else {
                continue;
            };
            if let Some(entry) = run.iter().find(|e| e.delivery == dk) {
                return Ok(Some(pending_delivery(&lane, entry)));
            }
        }
        Ok(None)
    }

    fn stored_delivery(&self, sub: &str, dk: u128) -> Result<Option<Delivery>> {
        history::record(&self.inner.tree, sub, dk)
    }

    /// A lane entry's delivery: its record once attempted, else made from
    /// the entry (a first attempt reads nothing: its record cannot exist).
    fn delivery_of(&self, lane: &LaneId, entry: &Entry) -> Result<Delivery> {
        if !entry.attempted {
            return Ok(pending_delivery(lane, entry));
        }
        Ok(match self.stored_delivery(&lane.sub, entry.delivery)? {
            Some(d) => d,
            None => pending_delivery(lane, entry),
        })
    }

    /// The first pending entry of a lane on disk: its head. Finished
    /// entries wait in their run until it is written.
    fn first_in_lane(&self, index: &Index, lane: &LaneId) -> Result<Option<Entry>> {
        for item in self.inner.tree.scan_prefix(keys::lane_prefix(lane)) {
            let (k, v) = item?;
            let Some((_, run)) = keys::split_run(&k, &v) else {
                continue;
            };
            if let Some(e) = run.into_iter().find(|e| !index.is_done(lane, e.order)) {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// After a write of runs: the index learns which finished entries
    /// stay on disk and which went.
    fn note_runs(state: &mut State, written: runs::Written) {
        for (lane, order) in written.finished {
            state.index.mark_done(&lane, order);
        }
        for (lane, order) in written.gone {
            state.index.forget_done(&lane, order);
        }
    }

    /// Set a lane's head from disk; a lane the index counts empty reads
    /// nothing (under the lock the index counts every entry on disk).
    fn refresh_head(&self, state: &mut State, lane: &LaneId) -> Result<()> {
        let head = match state.index.len(lane) {
            0 => None,
            _ => self.first_in_lane(&state.index, lane)?,
        };
        state.index.set_head(lane, head);
        Ok(())
    }
}

/// Test events open no room, so nothing orders them: each gets a lane of
/// its own (named after its id, behind a control character no room id may
/// hold), and a test parked on a failing endpoint never holds up the next.
const TEST_LANE: char = '\u{1}';

fn lane_room(room_id: Option<&str>, event_id: &str) -> Arc<str> {
    match room_id {
        Some(room) => room.into(),
        None => format!("{TEST_LANE}{event_id}").into(),
    }
}

/// The lane an event's delivery to `sub` queues in.
pub(crate) fn event_lane(sub: &str, event: &Event) -> LaneId {
    LaneId {
        sub: sub.into(),
        room: lane_room(event.room_id(), &event.id),
    }
}

fn is_room_lane(lane: &LaneId) -> bool {
    !lane.room.is_empty() && !lane.room.starts_with(TEST_LANE)
}

/// A delivery's place in its lane: the room's `sequence`; for test events
/// (one to a lane), the event id.
pub fn lane_order(event: &Event) -> u128 {
    order_of(event.sequence(), &event.id)
}

/// The room's `sequence`; for test events (one to a lane) the event id.
pub(crate) fn order_of(sequence: Option<u64>, event_id: &str) -> u128 {
    match sequence {
        Some(seq) => seq as u128,
        None => crate::ids::event_key(event_id).unwrap_or(0),
    }
}

/// A queued delivery that has no record yet, as the API shows it.
fn pending_delivery(lane: &LaneId, e: &Entry) -> Delivery {
    let is_room = is_room_lane(lane);
    Delivery {
        id: crate::ids::delivery_id(e.delivery),
        subscription_id: lane.sub.to_string(),
        event_id: crate::ids::event_id(e.event),
        event_type: e.kind.as_str().to_string(),
        room_id: is_room.then(|| lane.room.to_string()),
        sequence: is_room.then_some(e.order as u64),
        status: DeliveryStatus::Pending,
        attempts: Vec::new(),
        schedule_start: 0,
        created_at: DateTime::from_timestamp_millis(e.created_ms() as i64).unwrap_or_default(),
        next_attempt_at: None,
    }
}

pub fn lane_of(d: &Delivery) -> LaneId {
    LaneId {
        sub: d.subscription_id.as_str().into(),
        room: lane_room(d.room_id.as_deref(), &d.event_id),
    }
}
