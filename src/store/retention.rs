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
    /// The smallest event key a pending delivery waits on (lane keys end
    /// with it, so no delivery record is read).
    fn oldest_pending_event(&self) -> Result<Option<[u8; 16]>> {
        let mut oldest: Option<[u8; 16]> = None;
        for item in self.lanes.iter() {
            let (k, _) = item?;
            if let Ok(ek) = <[u8; 16]>::try_from(&k[k.len().saturating_sub(16)..]) {
                oldest = Some(oldest.map_or(ek, |o| o.min(ek)));
            }
        }
        Ok(oldest)
    }

    /// Remove up to `batch` events stored before `cutoff`, keeping every
    /// event that a pending delivery still needs; returns how many went.
    pub fn prune_events(&self, cutoff: DateTime<Utc>, batch: usize) -> Result<usize> {
        let mut end = ulid_floor(cutoff);
        if let Some(needed) = self.oldest_pending_event()? {
            end = end.min(needed);
        }
        let mut removed = 0;
        for item in self.events.range(..end).take(batch) {
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
