//! Retention's side of the outbox: finished deliveries go; events that
//! pending deliveries need stay, however old, and nothing else is kept for them.

use super::claim::decode_delivery;
use super::model::DeliveryStatus;
use super::{keys, Outbox};
use crate::db::Result;
use crate::ids::floor_of_ms;

impl Outbox {
    /// Run `f` with the set of events pending deliveries need, locked so
    /// that nothing is queued for an event while it is being removed.
    pub(crate) fn while_needed<T>(&self, f: impl FnOnce(&dyn Fn(u128) -> bool) -> T) -> T {
        let state = self.lock();
        f(&|event| state.index.needs(event))
    }

    /// Remove finished deliveries queued before `cutoff_ms`, scanning at
    /// most `batch` from `after`; returns how many went and where to go on
    /// (None when the scan reached the cutoff).
    pub fn prune_deliveries(
        &self,
        cutoff_ms: u64,
        after: Option<u128>,
        batch: usize,
    ) -> Result<(usize, Option<u128>)> {
        let start = keys::delivery_key(after.map_or(0, |k| k.saturating_add(1)));
        let end = keys::delivery_key(floor_of_ms(cutoff_ms));
        let _state = self.lock();
        let mut out = sled::Batch::default();
        let (mut removed, mut scanned, mut last) = (0, 0, None);
        for item in self.inner.tree.range(start..end).take(batch) {
            let (k, v) = item?;
            let dk = u128::from_be_bytes(k[1..17].try_into().unwrap_or([0; 16]));
            scanned += 1;
            last = Some(dk);
            let d = decode_delivery(&v)?;
            if d.status != DeliveryStatus::Pending {
                out.remove(keys::history_key(&d.subscription_id, dk));
                out.remove(k);
                removed += 1;
            }
        }
        self.inner.tree.apply_batch(out)?;
        Ok((removed, if scanned == batch { last } else { None }))
    }
}
