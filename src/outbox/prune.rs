//! Retention's side of the outbox: finished deliveries go; events that
//! pending deliveries need stay, however old, and nothing else is kept for them.

use super::history::{self, Page};
use super::model::DeliveryStatus;
use super::runs::Runs;
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

    /// Remove finished deliveries queued before `cutoff_ms`, subscription
    /// by subscription, at most `batch` per write; returns how many went.
    pub fn prune_deliveries(&self, cutoff_ms: u64, batch: usize) -> Result<usize> {
        let subs: Vec<String> = self.lock().subs.keys().cloned().collect();
        let mut removed = 0;
        for sub in subs {
            let mut from = keys::deliveries_prefix(&sub);
            // A page before the cutoff may hold later records of its
            // bucket: those stay, under their smallest id.
            let cutoff = floor_of_ms(cutoff_ms);
            let end = keys::delivery_key(&sub, cutoff);
            loop {
                // Under the lock: a retry cannot revive a record being removed.
                let mut state = self.lock();
                let mut out = sled::Batch::default();
                let mut runs = Runs::new(&self.inner.tree, &state.index);
                let (mut scanned, mut last) = (0, None);
                for item in self.inner.tree.range(from.clone()..end.clone()).take(batch) {
                    let (k, v) = item?;
                    scanned += 1;
                    let page = Page::decode(k.clone(), v)?;
                    let gone = |id: u128, s| s != DeliveryStatus::Pending && id < cutoff;
                    for (id, _) in page.ids().filter(|(id, s)| gone(*id, *s)) {
                        let d = page.get(id)?.expect("listed");
                        // A finished entry still in its run is told finished
                        // by this record at the next open: the run is
                        // written without it first.
                        let (lane, order) = (super::lane_of(&d), d.lane_order());
                        if state.index.is_done(&lane, order) {
                            runs.tidy(&lane, order)?;
                        }
                        removed += 1;
                    }
                    history::rewrite(&mut out, &sub, &page, page.keep(gone));
                    last = Some(k);
                }
                let written = runs.write(&mut out);
                self.inner.tree.apply_batch(out)?;
                Self::note_runs(&mut state, written);
                match last {
                    Some(k) if scanned == batch => {
                        from = k.to_vec();
                        from.push(0);
                    }
                    _ => break,
                }
            }
        }
        Ok(removed)
    }
}
