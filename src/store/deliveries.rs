//! The delivery outbox: deliveries, their per-(subscription, room) lanes,
//! and the due index that the engine scans by time.

use super::keys::*;
use super::{decode, encode, Result, Store, StoreError};
use crate::delivery::{Attempt, Delivery, DeliveryStatus, Verdict};
use crate::event::Event;
use chrono::{DateTime, Utc};
use sled::transaction::{
    ConflictableTransactionError as Abort, TransactionalTree, UnabortableTransactionError,
};
use sled::Transactional;

fn be_u64(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

pub fn ms(t: DateTime<Utc>) -> u64 {
    t.timestamp_millis().max(0) as u64
}

/// The trees a new delivery touches, inside a transaction.
pub(super) struct Outbox<'a> {
    pub deliveries: &'a TransactionalTree,
    pub sub_deliveries: &'a TransactionalTree,
    pub lanes: &'a TransactionalTree,
    pub lane_sizes: &'a TransactionalTree,
    pub due: &'a TransactionalTree,
}

impl Outbox<'_> {
    /// Add one delivery to a lane; true when the lane was empty, so the
    /// delivery is its head and due at once (followers wait for their turn).
    pub(super) fn join_lane(
        &self,
        prefix: &[u8],
        lk: Vec<u8>,
        dk: &[u8; 16],
    ) -> Result<bool, UnabortableTransactionError> {
        let size = self
            .lane_sizes
            .get(prefix)?
            .map(|v| be_u64(&v))
            .unwrap_or(0);
        self.lane_sizes.insert(prefix, &(size + 1).to_be_bytes())?;
        self.lanes.insert(lk, dk)?;
        Ok(size == 0)
    }

    fn leave_lane(&self, prefix: &[u8], lk: Vec<u8>) -> Result<(), UnabortableTransactionError> {
        if self.lanes.remove(lk)?.is_none() {
            return Ok(());
        }
        match self
            .lane_sizes
            .get(prefix)?
            .map(|v| be_u64(&v))
            .unwrap_or(0)
        {
            0 | 1 => self.lane_sizes.remove(prefix)?,
            n => self.lane_sizes.insert(prefix, &(n - 1).to_be_bytes())?,
        };
        Ok(())
    }

    /// Queue `event` for `sub_id`. Skipped (None) when the same event is
    /// already waiting in that subscription's lane.
    pub fn enqueue(
        &self,
        store: &Store,
        event: &Event,
        sub_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, UnabortableTransactionError> {
        let ek = event_key_of(&event.id).expect("stored events have our ids");
        let lane = event.room_id().unwrap_or("");
        let lk = lane_key(sub_id, lane, &ek);
        if self.lanes.get(&lk)?.is_some() {
            return Ok(None);
        }
        let dk = u128::from(store.next_ulid()).to_be_bytes();
        let head = self.join_lane(&lane_prefix(sub_id, lane), lk, &dk)?;
        let mut delivery = Delivery {
            id: delivery_id(dk),
            subscription_id: sub_id.to_string(),
            event_id: event.id.clone(),
            event_type: event.kind.as_str().to_string(),
            room_id: event.room_id().map(str::to_string),
            status: DeliveryStatus::Pending,
            attempts: Vec::new(),
            schedule_start: 0,
            created_at: now,
            next_attempt_at: None,
        };
        // Only a lane's head is due; the others wait for their turn.
        if head {
            delivery.next_attempt_at = Some(now);
            self.due.insert(&due_key(ms(now), &dk), &[])?;
        }
        self.deliveries.insert(&dk, encode(&delivery))?;
        self.sub_deliveries
            .insert(sub_delivery_key(sub_id, &dk), &[])?;
        Ok(Some(delivery.id))
    }
}

impl Store {
    /// Run `f` in one transaction over the outbox's trees.
    pub(super) fn in_outbox<T>(
        &self,
        f: impl Fn(&Outbox) -> std::result::Result<T, Abort<StoreError>>,
    ) -> Result<T> {
        let r = (
            &self.deliveries,
            &self.sub_deliveries,
            &self.lanes,
            &self.lane_sizes,
            &self.due,
        )
            .transaction(|(deliveries, sub_deliveries, lanes, lane_sizes, due)| {
                f(&Outbox {
                    deliveries,
                    sub_deliveries,
                    lanes,
                    lane_sizes,
                    due,
                })
            });
        r.map_err(Into::into)
    }

    /// Up to `limit` entries of the due index at or before `now_ms`, oldest first.
    pub fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<(u64, [u8; 16])>> {
        let end = due_key(now_ms, &[0xff; 16]);
        let mut out = Vec::new();
        for item in self.due.range(..=end.as_slice()).take(limit) {
            let (k, _) = item?;
            if let Some(entry) = split_due_key(&k) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// When the earliest entry of the due index falls due.
    pub fn next_due_ms(&self) -> Result<Option<u64>> {
        Ok(self
            .due
            .first()?
            .and_then(|(k, _)| split_due_key(&k))
            .map(|(t, _)| t))
    }

    pub fn delivery_at(&self, key: &[u8; 16]) -> Result<Option<Delivery>> {
        self.deliveries
            .get(key)?
            .map(|v| decode("deliveries", &v))
            .transpose()
    }

    pub fn delivery(&self, id: &str) -> Result<Option<Delivery>> {
        match delivery_key_of(id) {
            Some(k) => self.delivery_at(&k),
            None => Ok(None),
        }
    }

    /// The delivery at the front of a lane: the only one that may be sent.
    pub fn lane_head(&self, sub_id: &str, lane: &str) -> Result<Option<[u8; 16]>> {
        Ok(self
            .lanes
            .scan_prefix(lane_prefix(sub_id, lane))
            .next()
            .transpose()?
            .and_then(|(_, v)| v.as_ref().try_into().ok()))
    }

    /// Remove a due entry that no longer matches its delivery.
    pub fn drop_due(&self, at_ms: u64, key: &[u8; 16]) -> Result<()> {
        self.due.remove(due_key(at_ms, key))?;
        Ok(())
    }

    /// Take a delivery out of the due index until its lane wakes it (it is
    /// not its lane's turn, or its subscription is disabled).
    pub fn park(&self, key: &[u8; 16]) -> Result<()> {
        self.update_delivery(key, |d| d.next_attempt_at = None)
    }

    /// Make a pending delivery due at `at`.
    pub fn schedule(&self, key: &[u8; 16], at: DateTime<Utc>) -> Result<()> {
        self.update_delivery(key, |d| {
            if d.status == DeliveryStatus::Pending {
                d.next_attempt_at = Some(at);
            }
        })
    }

    /// Change a delivery and keep the due index in step with its next attempt.
    fn update_delivery(&self, key: &[u8; 16], change: impl Fn(&mut Delivery)) -> Result<()> {
        self.in_outbox(|o| {
            let Some(v) = o.deliveries.get(key)? else {
                return Ok(());
            };
            let mut d: Delivery = decode("deliveries", &v).map_err(Abort::Abort)?;
            let before = d.next_attempt_at;
            change(&mut d);
            if let Some(t) = before {
                o.due.remove(&due_key(ms(t), key))?;
            }
            if let Some(t) = d.next_attempt_at {
                o.due.insert(&due_key(ms(t), key), &[])?;
            }
            o.deliveries.insert(key, encode(&d))?;
            Ok(())
        })
    }

    /// Record attempts and what follows from each, all in one transaction
    /// (group commit: one log write for many deliveries).
    pub fn finish_attempts(
        &self,
        items: &[([u8; 16], Attempt, Verdict)],
    ) -> Result<Vec<Option<Delivery>>> {
        self.in_outbox(|o| {
            items
                .iter()
                .map(|(key, attempt, verdict)| Self::finish_in(o, key, attempt, verdict))
                .collect()
        })
    }

    fn finish_in(
        o: &Outbox,
        key: &[u8; 16],
        attempt: &Attempt,
        verdict: &Verdict,
    ) -> std::result::Result<Option<Delivery>, Abort<StoreError>> {
        {
            let Some(v) = o.deliveries.get(key)? else {
                return Ok(None);
            };
            let mut d: Delivery = decode("deliveries", &v).map_err(Abort::Abort)?;
            if let Some(t) = d.next_attempt_at.take() {
                o.due.remove(&due_key(ms(t), key))?;
            }
            d.attempts.push(attempt.clone());
            let ek = event_key_of(&d.event_id).unwrap_or_default();
            let (prefix, lk) = (
                lane_prefix(&d.subscription_id, d.lane()),
                lane_key(&d.subscription_id, d.lane(), &ek),
            );
            match verdict {
                Verdict::Succeeded => {
                    d.status = DeliveryStatus::Succeeded;
                    o.leave_lane(&prefix, lk)?;
                }
                Verdict::Failed => {
                    d.status = DeliveryStatus::Failed;
                    o.leave_lane(&prefix, lk)?;
                }
                Verdict::RetryAt(t) => {
                    d.next_attempt_at = Some(*t);
                    o.due.insert(&due_key(ms(*t), key), &[])?;
                }
                Verdict::Hold => {}
            }
            o.deliveries.insert(key, encode(&d))?;
            Ok(Some(d))
        }
    }

    /// Make the head of every lane under `prefix` due now if it is waiting.
    /// Used after a head finishes, when a subscription is enabled, and at
    /// start-up (a crash may fall between finishing a head and waking the next).
    pub fn wake_lane_heads(&self, prefix: &[u8], now: DateTime<Utc>) -> Result<usize> {
        let mut woken = 0;
        let mut last_lane: Option<Vec<u8>> = None;
        for item in self.lanes.scan_prefix(prefix) {
            let (k, v) = item?;
            let lane = k[..k.len().saturating_sub(16)].to_vec();
            if last_lane.as_ref() == Some(&lane) {
                continue;
            }
            last_lane = Some(lane);
            let Ok(dk) = <[u8; 16]>::try_from(v.as_ref()) else {
                continue;
            };
            if let Some(d) = self.delivery_at(&dk)? {
                if self
                    .subscription(&d.subscription_id)
                    .is_some_and(|s| s.enabled)
                    && d.next_attempt_at.is_none()
                {
                    self.schedule(&dk, now)?;
                    woken += 1;
                }
            }
        }
        Ok(woken)
    }

    pub fn wake_lane(&self, sub_id: &str, lane: &str, now: DateTime<Utc>) -> Result<usize> {
        self.wake_lane_heads(&lane_prefix(sub_id, lane), now)
    }

    pub fn wake_subscription(&self, sub_id: &str, now: DateTime<Utc>) -> Result<usize> {
        self.wake_lane_heads(sub_id.as_bytes(), now)
    }
}
