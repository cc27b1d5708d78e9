//! Lane entries edited inside their runs: each run is read once, changed in
//! memory, and written back (or removed, once empty) in the caller's batch.
//!
//! The rule every edit keeps: an entry lives in its lane's run with the
//! greatest key at or below its order. A poll's commit follows every entry
//! of its lanes, so it starts runs of its own without reading; an entry put
//! among older ones (a retry, a replay) joins the run that covers it.

use super::index::{Entry, LaneId};
use super::keys;
use crate::db::{Result, StoreError};
use std::collections::BTreeMap;

pub struct Runs<'t> {
    tree: &'t sled::Tree,
    /// Runs read or started here, by key, as they are to be written.
    edited: BTreeMap<Vec<u8>, Vec<Entry>>,
}

impl<'t> Runs<'t> {
    pub fn new(tree: &'t sled::Tree) -> Self {
        Self {
            tree,
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
            let run = keys::split_run(slot.key(), v).ok_or_else(|| StoreError::Corrupt {
                tree: "outbox",
                detail: "a lane run that does not decode".into(),
            })?;
            slot.insert(run.1);
        }
        Ok(())
    }

    /// The entry at `order` in `lane`, if any.
    pub fn get(&mut self, lane: &LaneId, order: u128) -> Result<Option<Entry>> {
        let Some(key) = self.covering(lane, order)? else {
            return Ok(None);
        };
        Ok(self.edited[&key].iter().find(|e| e.order == order).copied())
    }

    /// Put `e` in its lane, replacing an entry at the same order.
    pub fn put(&mut self, lane: &LaneId, e: Entry) -> Result<()> {
        let key = match self.covering(lane, e.order)? {
            Some(key) => key,
            None => keys::lane_key(lane, e.order),
        };
        let run = self.edited.entry(key).or_default();
        match run.binary_search_by_key(&e.order, |x| x.order) {
            Ok(i) => run[i] = e,
            Err(i) => run.insert(i, e),
        }
        Ok(())
    }

    /// Take the entry at `order` out of `lane`.
    pub fn remove(&mut self, lane: &LaneId, order: u128) -> Result<()> {
        if let Some(key) = self.covering(lane, order)? {
            let run = self.edited.get_mut(&key).expect("just read");
            run.retain(|e| e.order != order);
        }
        Ok(())
    }

    /// Write every edited run into `batch`; an emptied run goes.
    pub fn write(self, batch: &mut sled::Batch) {
        for (key, run) in self.edited {
            if run.is_empty() {
                batch.remove(key);
            } else {
                batch.insert(key, keys::encode_run(&run));
            }
        }
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

    fn write(tree: &sled::Tree, runs: Runs) {
        let mut batch = sled::Batch::default();
        runs.write(&mut batch);
        tree.apply_batch(batch).unwrap();
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
        // A commit's run, then the next commit's.
        let mut runs = Runs::new(&tree);
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
        let mut runs = Runs::new(&tree);
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
        // Emptied runs go; the others keep their keys.
        let mut runs = Runs::new(&tree);
        for o in [3, 4, 5, 9] {
            runs.remove(&lane(), o).unwrap();
        }
        write(&tree, runs);
        assert_eq!(on_disk(&tree), vec![(5, vec![6, 7]), (9, vec![10])]);
        // A bare entry, as older stores wrote it, is a run of one.
        tree.insert(
            keys::lane_key(&lane(), 1),
            &keys::encode_entry(&entry(1))[..],
        )
        .unwrap();
        let mut runs = Runs::new(&tree);
        runs.put(&lane(), entry(2)).unwrap();
        write(&tree, runs);
        assert_eq!(on_disk(&tree)[0], (1, vec![1, 2]));
    }
}
