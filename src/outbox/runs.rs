//! Lane entries edited inside their runs: each run is read once, changed in
//! memory, and written back (or removed, once empty) in the caller's batch.
//!
//! The rule every edit keeps: an entry lives in its lane's run with the
//! greatest key at or below its order. A poll's commit follows every entry
//! of its lanes, so it starts runs of its own without reading; an entry put
//! among older ones (a retry, a replay) joins the run that covers it.
//!
//! A finished entry leaves its run only when the run is written anyway
//! (emptied, or changed): its delivery's record, written by the same
//! completion, tells it finished at the next open, and the index knows it
//! meanwhile. So a commit's run of n entries costs one run write, not n.

use super::index::{Entry, Index, LaneId};
use super::keys;
use crate::db::{Result, StoreError};
use std::collections::BTreeMap;

pub struct Runs<'t> {
    tree: &'t sled::Tree,
    index: &'t Index,
    /// Runs read or started here, by key.
    edited: BTreeMap<Vec<u8>, Run>,
}

/// Entries a run takes before an entry after all of them starts another.
pub const MAX_RUN: usize = 64;

struct Run {
    lane: LaneId,
    /// Its pending entries, in order.
    entries: Vec<Entry>,
    /// Entries finished before, still on disk: left out of `entries`.
    hidden: Vec<u128>,
    /// Entries finished here.
    finished: Vec<u128>,
    /// To be written back.
    dirty: bool,
}

impl Run {
    /// Full, and every entry it holds on disk comes before `order`.
    fn full_before(&self, order: u128) -> bool {
        let held = self
            .entries
            .iter()
            .map(|e| e.order)
            .chain(self.hidden.iter().copied());
        self.entries.len() + self.hidden.len() >= MAX_RUN && held.max().is_some_and(|m| m < order)
    }
}

/// What a write did to the lanes' finished entries, for the index.
#[derive(Default)]
pub struct Written {
    /// Finished, and left on disk in a run that still has pending entries.
    pub finished: Vec<(LaneId, u128)>,
    /// Finished before, and gone with this write.
    pub gone: Vec<(LaneId, u128)>,
    /// Each run still pending after the write: its lane, its first
    /// pending entry and how many it holds. A lane whose pending entries
    /// all lie in one such run has that entry for its head, unread.
    pub pending: Vec<(LaneId, Entry, u64)>,
}

impl<'t> Runs<'t> {
    /// Runs of `tree`, where `index` says which entries have finished.
    pub fn new(tree: &'t sled::Tree, index: &'t Index) -> Self {
        Self {
            tree,
            index,
            edited: BTreeMap::new(),
        }
    }

    /// The key of the run that covers `order` in `lane`, read into memory;
    /// None when every run of the lane starts after it.
    fn covering(&mut self, lane: &LaneId, order: u128) -> Result<Option<Vec<u8>>> {
        let (prefix, at) = (keys::lane_prefix(lane), keys::lane_key(lane, order));
        let on_disk = self
            .tree
            .range(prefix.clone()..=at.clone())
            .next_back()
            .transpose()?;
        let edited = self
            .edited
            .range(prefix..=at)
            .next_back()
            .map(|(k, _)| k.clone());
        let key = match (on_disk, edited) {
            (Some((dk, v)), Some(ek)) if dk.as_ref() > ek.as_slice() => {
                self.load(dk.to_vec(), &v)?;
                Some(dk.to_vec())
            }
            (_, Some(ek)) => Some(ek),
            (Some((dk, v)), None) => {
                self.load(dk.to_vec(), &v)?;
                Some(dk.to_vec())
            }
            (None, None) => None,
        };
        Ok(key)
    }

    /// Read a run from disk unless it is being edited here. One that does
    /// not decode is an error: written back, its entries would be lost.
    fn load(&mut self, key: Vec<u8>, v: &[u8]) -> Result<()> {
        if let std::collections::btree_map::Entry::Vacant(slot) = self.edited.entry(key) {
            let (lane, all) =
                keys::split_run(slot.key(), v).ok_or_else(|| StoreError::Corrupt {
                    tree: "outbox",
                    detail: "a lane run that does not decode".into(),
                })?;
            let (hidden, entries): (Vec<Entry>, Vec<Entry>) = all
                .into_iter()
                .partition(|e| self.index.is_done(&lane, e.order));
            slot.insert(Run {
                lane,
                entries,
                hidden: hidden.iter().map(|e| e.order).collect(),
                finished: Vec::new(),
                dirty: false,
            });
        }
        Ok(())
    }

    /// The pending entry at `order` in `lane`, if any.
    pub fn get(&mut self, lane: &LaneId, order: u128) -> Result<Option<Entry>> {
        let Some(key) = self.covering(lane, order)? else {
            return Ok(None);
        };
        Ok(self.edited[&key]
            .entries
            .iter()
            .find(|e| e.order == order)
            .copied())
    }

    /// Put `e` in its lane, replacing a pending or finished entry at the
    /// same order. An entry after every one of a full run starts the next
    /// run: a long replay writes runs of [`MAX_RUN`], not one that grows.
    pub fn put(&mut self, lane: &LaneId, e: Entry) -> Result<()> {
        let key = match self.covering(lane, e.order)? {
            Some(key) if !self.edited[&key].full_before(e.order) => key,
            _ => keys::lane_key(lane, e.order),
        };
        let run = self.edited.entry(key).or_insert_with(|| Run {
            lane: lane.clone(),
            entries: Vec::new(),
            hidden: Vec::new(),
            finished: Vec::new(),
            dirty: false,
        });
        run.dirty = true;
        match run.entries.binary_search_by_key(&e.order, |x| x.order) {
            Ok(i) => run.entries[i] = e,
            Err(i) => run.entries.insert(i, e),
        }
        Ok(())
    }

    /// The entry at `order` in `lane` is done. Its run is written only
    /// when nothing pending is left in it (it goes) or it is rewritten
    /// anyway: until then the entry stays on disk and the index notes it
    /// finished, and its delivery's record (written with the same batch)
    /// says so at the next open. Most completions so write no run.
    pub fn finish(&mut self, lane: &LaneId, order: u128) -> Result<()> {
        let Some(key) = self.covering(lane, order)? else {
            return Ok(());
        };
        let run = self.edited.get_mut(&key).expect("just read");
        run.entries.retain(|e| e.order != order);
        run.finished.push(order);
        if run.entries.is_empty() {
            run.dirty = true;
        }
        Ok(())
    }

    /// Write the run that holds `order` in `lane` again, without its
    /// finished entries.
    pub fn tidy(&mut self, lane: &LaneId, order: u128) -> Result<()> {
        if let Some(key) = self.covering(lane, order)? {
            let run = self.edited.get_mut(&key).expect("just read");
            run.dirty = true;
        }
        Ok(())
    }

    /// Write every changed run into `batch` (an emptied run goes); what
    /// it did to finished entries is for the index once it is applied.
    pub fn write(self, batch: &mut sled::Batch) -> Written {
        let mut written = Written::default();
        for (key, run) in self.edited {
            if let Some(first) = run.entries.first() {
                let n = run.entries.len() as u64;
                written.pending.push((run.lane.clone(), *first, n));
            }
            if !run.dirty {
                let lane = &run.lane;
                written
                    .finished
                    .extend(run.finished.into_iter().map(|o| (lane.clone(), o)));
                continue;
            }
            if run.entries.is_empty() {
                batch.remove(key);
            } else {
                batch.insert(key, keys::encode_run(&run.entries));
            }
            let lane = &run.lane;
            written
                .gone
                .extend(run.hidden.into_iter().map(|o| (lane.clone(), o)));
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane() -> LaneId {
        LaneId {
            sub: "sub_1".into(),
            room: "math".into(),
        }
    }

    fn entry(order: u128) -> Entry {
        Entry {
            order,
            delivery: order << 80,
            event: order,
            not_before: 0,
            kind: crate::event::EventType::RoomStarted,
            attempted: false,
        }
    }

    fn write(tree: &sled::Tree, runs: Runs) -> Written {
        let mut batch = sled::Batch::default();
        let written = runs.write(&mut batch);
        tree.apply_batch(batch).unwrap();
        written
    }

    fn on_disk(tree: &sled::Tree) -> Vec<(u128, Vec<u128>)> {
        tree.iter()
            .map(|kv| {
                let (k, v) = kv.unwrap();
                let (_, entries) = keys::split_run(&k, &v).unwrap();
                let at = keys::split_lane_key(&k).unwrap().1;
                (at, entries.iter().map(|e| e.order).collect())
            })
            .collect()
    }

    #[test]
    fn entries_join_the_run_that_covers_them_and_an_empty_run_goes() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let mut ix = Index::default();
        // A commit's run, then the next commit's.
        let mut runs = Runs::new(&tree, &ix);
        for o in [5, 7] {
            runs.put(&lane(), entry(o)).unwrap();
        }
        write(&tree, runs);
        tree.insert(
            keys::lane_key(&lane(), 9),
            keys::encode_run(&[entry(9), entry(10)]),
        )
        .unwrap();
        assert_eq!(on_disk(&tree), vec![(5, vec![5, 7]), (9, vec![9, 10])]);
        // A replay of 6 joins the first run; one of 3 starts a run of its own.
        let mut runs = Runs::new(&tree, &ix);
        runs.put(&lane(), entry(6)).unwrap();
        runs.put(&lane(), entry(3)).unwrap();
        runs.put(&lane(), entry(4)).unwrap();
        assert_eq!(runs.get(&lane(), 6).unwrap(), Some(entry(6)));
        assert_eq!(runs.get(&lane(), 8).unwrap(), None);
        write(&tree, runs);
        assert_eq!(
            on_disk(&tree),
            vec![(3, vec![3, 4]), (5, vec![5, 6, 7]), (9, vec![9, 10])]
        );
        // A run with nothing pending goes; a finished entry of a run with
        // more to send stays on disk, and the index notes it.
        let mut runs = Runs::new(&tree, &ix);
        for o in [3, 4, 5, 9] {
            runs.finish(&lane(), o).unwrap();
        }
        let written = write(&tree, runs);
        assert_eq!(written.finished, vec![(lane(), 5), (lane(), 9)]);
        assert_eq!(on_disk(&tree), vec![(5, vec![5, 6, 7]), (9, vec![9, 10])]);
        for (l, o) in written.finished {
            ix.mark_done(&l, o);
        }
        // Finished entries are not seen, and go when their run is written.
        let mut runs = Runs::new(&tree, &ix);
        assert_eq!(runs.get(&lane(), 5).unwrap(), None);
        runs.put(&lane(), entry(8)).unwrap();
        let written = write(&tree, runs);
        assert_eq!(written.gone, vec![(lane(), 5)]);
        assert_eq!(on_disk(&tree), vec![(5, vec![6, 7, 8]), (9, vec![9, 10])]);
        for (l, o) in written.gone {
            ix.forget_done(&l, o);
        }
        assert!(!ix.is_done(&lane(), 5));
        // A long replay into an empty lane fills runs of MAX_RUN, one
        // after another.
        let long = LaneId {
            sub: "sub_1".into(),
            room: "zz-long".into(),
        };
        let mut runs = Runs::new(&tree, &ix);
        for o in 1..=2 * MAX_RUN as u128 + 1 {
            runs.put(&long, entry(o)).unwrap();
        }
        write(&tree, runs);
        let sizes: Vec<usize> = tree
            .scan_prefix(keys::lane_prefix(&long))
            .map(|kv| kv.unwrap().1.len() / 58)
            .collect();
        assert_eq!(sizes, vec![MAX_RUN, MAX_RUN, 1]);
        // A bare entry, as older stores wrote it, is a run of one.
        tree.insert(
            keys::lane_key(&lane(), 1),
            &keys::encode_entry(&entry(1))[..],
        )
        .unwrap();
        let mut runs = Runs::new(&tree, &ix);
        runs.put(&lane(), entry(2)).unwrap();
        write(&tree, runs);
        assert_eq!(on_disk(&tree)[0], (1, vec![1, 2]));
    }
}
