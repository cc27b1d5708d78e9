//! Pruning events older than the retention period, a batch at a time;
//! the outbox keeps every event a pending delivery needs.

use super::events::decode_event;
use super::keys::room_seq_key;
use super::{Result, Store};
use crate::ids::floor_of_ms;

impl Store {
    /// Remove up to `batch` events stored before `cutoff_ms`, from `after`
    /// on, keeping each event a pending delivery needs; returns how many
    /// went and where to go on (None when the scan reached the cutoff).
    pub fn prune_events(
        &self,
        cutoff_ms: u64,
        after: Option<u128>,
        batch: usize,
    ) -> Result<(usize, Option<u128>)> {
        let start = after.map_or(0, |k| k.saturating_add(1)).to_be_bytes();
        let end = floor_of_ms(cutoff_ms).to_be_bytes();
        self.outbox.while_needed(|needed| {
            let (mut removed, mut scanned, mut last) = (0, 0, None);
            for item in self.events.range(start..end).take(batch) {
                let (k, v) = item?;
                let key = u128::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 16]));
                scanned += 1;
                last = Some(key);
                if needed(key) {
                    continue;
                }
                let event = decode_event(&k, &v)?;
                if let (Some(room), Some(seq)) = (event.room_id(), event.sequence()) {
                    self.room_events.remove(room_seq_key(room, seq))?;
                }
                self.events.remove(k)?;
                removed += 1;
            }
            Ok((removed, if scanned == batch { last } else { None }))
        })
    }
}
