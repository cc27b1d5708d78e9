//! An operator's hands on the outbox: retry by hand, replay, test events.

use super::history;
use super::index::Entry;
use super::model::{Delivery, DeliveryStatus};
use super::runs::Runs;
use super::{keys, lane_of, ms, Outbox, Plan};
use crate::db::{Result, StoreError};
use crate::event::Event;
use crate::ids::floor_of_ms;
use crate::subscription::Subscription;
use chrono::{DateTime, Utc};
use sled::Transactional;
use std::sync::atomic::Ordering;

/// What a retry by hand came to.
#[derive(Debug)]
pub enum Retried {
    NotFound,
    /// Only a failed delivery can be retried; this is where it stands.
    NotFailed(Delivery),
    /// Its event already waits in the lane (a replay queued it): this one.
    AlreadyQueued(String),
    Queued(Delivery),
}

impl Outbox {
    /// Send a failed delivery again: back into its lane at its event's
    /// place, due now (after a delivery in flight in that lane).
    pub fn retry(&self, sub: &str, id: &str) -> Result<Retried> {
        let Some(dk) = crate::ids::delivery_key(id) else {
            return Ok(Retried::NotFound);
        };
        let mut state = self.lock();
        let page = history::find(&self.inner.tree, sub, dk)?;
        let Some(mut d) = page.as_ref().map(|p| p.get(dk)).transpose()?.flatten() else {
            // Never attempted (so not failed), or not there at all.
            return Ok(match self.delivery(sub, id)? {
                Some(d) => Retried::NotFailed(d),
                None => Retried::NotFound,
            });
        };
        if d.status != DeliveryStatus::Failed {
            return Ok(Retried::NotFailed(d));
        }
        let lane = lane_of(&d);
        let order = d.lane_order();
        let mut runs = Runs::new(&self.inner.tree, &state.index);
        if let Some(other) = runs.get(&lane, order)? {
            return Ok(Retried::AlreadyQueued(crate::ids::delivery_id(
                other.delivery,
            )));
        }
        d.status = DeliveryStatus::Pending;
        d.schedule_start = d.attempts.len();
        d.next_attempt_at = None;
        let entry = Entry {
            order,
            delivery: dk,
            event: crate::ids::event_key(&d.event_id).unwrap_or(0),
            not_before: 0,
            kind: crate::event::EventType::parse(&d.event_type)
                .unwrap_or(crate::event::EventType::WebhookTest),
            attempted: true,
        };
        let mut batch = sled::Batch::default();
        // Pending again, so a page of its own (see `history`).
        if let Some(page) = &page {
            history::rewrite(&mut batch, sub, page, page.keep(|id, _| id == dk));
        }
        history::put_single(&mut batch, sub, history::Record::of(dk, &d));
        runs.put(&lane, entry)?;
        let written = runs.write(&mut batch);
        self.inner.tree.apply_batch(batch)?;
        Self::note_runs(&mut state, written);
        self.inner.queued.fetch_add(1, Ordering::SeqCst);
        state.index.add(&lane, entry);
        Ok(Retried::Queued(d))
    }

    /// Queue again every stored event since `since` that `sub` wants and
    /// whose lane does not hold it already, a few hundred per write.
    pub fn replay(
        &self,
        sub: &Subscription,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        const CHUNK: usize = 256;
        let mut queued = 0;
        let mut from = floor_of_ms(ms(since));
        loop {
            let mut chunk = Vec::with_capacity(CHUNK);
            let mut last = None;
            for item in self.inner.events.range(from.to_be_bytes()..).take(CHUNK) {
                let (k, v) = item?;
                let key = u128::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 16]));
                last = Some(key);
                let event = Event::from_body(crate::ids::event_id(key), &v).map_err(|e| {
                    StoreError::Corrupt {
                        tree: "events",
                        detail: e.to_string(),
                    }
                })?;
                if event.timestamp >= since && sub.wants(&event) {
                    chunk.push(event);
                }
            }
            queued += self.replay_chunk(&sub.id, &chunk, now)?;
            match last {
                Some(k) => from = k + 1,
                None => return Ok(queued),
            }
        }
    }

    fn replay_chunk(&self, sub: &str, events: &[Event], now: DateTime<Utc>) -> Result<usize> {
        let mut state = self.lock();
        if !state.subs.contains_key(sub) {
            return Ok(0);
        }
        let mut plan = Plan::default();
        let mut runs = Runs::new(&self.inner.tree, &state.index);
        for event in events {
            let lane = super::event_lane(sub, event);
            if runs.get(&lane, super::lane_order(event))?.is_some() {
                continue;
            }
            let entry = self.entry(event, now);
            runs.put(&lane, entry)?;
            plan.added.push((lane, entry));
        }
        let n = plan.added.len();
        let written = runs.write(&mut plan.batch);
        self.inner
            .tree
            .apply_batch(std::mem::take(&mut plan.batch))?;
        Self::note_runs(&mut state, written);
        self.applied(&mut state, plan);
        Ok(n)
    }

    /// Store a `webhook.test` event and queue it for one subscription, in
    /// one transaction: the event is never missing for its delivery.
    /// Queue a test event to `sub`; it gets its id here, under the lock
    /// that poll commits take too, so ids are committed in order (the event
    /// stream's cursor relies on it). None when there is no such subscription.
    pub fn enqueue_test(
        &self,
        sub: &str,
        mut event: Event,
        now: DateTime<Utc>,
    ) -> Result<Option<Event>> {
        let mut state = self.lock();
        if !state.subs.contains_key(sub) {
            return Ok(None);
        }
        event.id = crate::ids::event_id(self.inner.ids.next_at(ms(now)));
        // A lane of its own: one run of one entry.
        let (lane, entry) = (super::event_lane(sub, &event), self.entry(&event, now));
        let mut plan = Plan::default();
        plan.batch.insert(
            keys::lane_key(&lane, entry.order),
            keys::encode_run(&[entry]),
        );
        plan.added.push((lane, entry));
        let event = &event;
        let ek = crate::ids::event_key(&event.id).unwrap_or(0).to_be_bytes();
        let body = crate::event::webhook_body(event);
        (&self.inner.events, &self.inner.tree)
            .transaction(|(events, outbox)| {
                events.insert(&ek, body.as_slice())?;
                outbox.apply_batch(&plan.batch)?;
                Ok::<_, sled::transaction::ConflictableTransactionError<StoreError>>(())
            })
            .map_err(StoreError::from)?;
        self.applied(&mut state, plan);
        Ok(Some(event.clone()))
    }
}
