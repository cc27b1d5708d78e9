//! Pruning: events and finished deliveries older than the retention period,
//! a batch at a time.

use super::keys::{room_seq_key, sub_delivery_key};
use super::{decode, Result, Store};
use crate::delivery::{Delivery, DeliveryStatus};
use crate::event::Event;
use chrono::{DateTime, Utc};

fn ulid_floor(t: DateTime<Utc>) -> [u8; 16] {
    let ms = t.timestamp_millis().max(0) as u64;
    u128::from(ulid::Ulid::from_parts(ms, 0)).to_be_bytes()
}

impl Store {
    /// Remove up to `batch` events stored before `cutoff`; returns how many.
    pub fn prune_events(&self, cutoff: DateTime<Utc>, batch: usize) -> Result<usize> {
        let mut removed = 0;
        for item in self.events.range(..ulid_floor(cutoff)).take(batch) {
            let (k, v) = item?;
            let event: Event = decode("events", &v)?;
            if let (Some(room), Some(seq)) = (event.room_id(), event.sequence()) {
                self.room_events.remove(room_seq_key(room, seq))?;
            }
            self.events.remove(k)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Remove finished deliveries queued before `cutoff`, scanning at most
    /// `batch` from `after`; returns how many went and where to go on from
    /// (None when the scan reached the cutoff).
    pub fn prune_deliveries(
        &self,
        cutoff: DateTime<Utc>,
        after: Option<[u8; 16]>,
        batch: usize,
    ) -> Result<(usize, Option<[u8; 16]>)> {
        let start = after
            .map(|k| (u128::from_be_bytes(k) + 1).to_be_bytes())
            .unwrap_or([0; 16]);
        let (mut removed, mut scanned, mut last) = (0, 0, None);
        for item in self.deliveries.range(start..ulid_floor(cutoff)).take(batch) {
            let (k, v) = item?;
            let key: [u8; 16] = k.as_ref().try_into().unwrap_or([0; 16]);
            scanned += 1;
            last = Some(key);
            let d: Delivery = decode("deliveries", &v)?;
            if d.status != DeliveryStatus::Pending {
                self.sub_deliveries
                    .remove(sub_delivery_key(&d.subscription_id, &key))?;
                self.deliveries.remove(k)?;
                removed += 1;
            }
        }
        Ok((removed, if scanned == batch { last } else { None }))
    }
}
