//! Opening the outbox: subscriptions and lanes read back from disk into
//! memory, and whatever a crash left half-done finished or removed.

use super::index::Index;
use super::{keys, Inner, Outbox, State};
use crate::db::{decode, Result};
use crate::ids::Ids;
use crate::subscription::{Subscription, Target};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use tracing::info;

/// Trees of the first outbox layout, replaced by the one `outbox` tree.
const OLD_TREES: [&str; 5] = ["deliveries", "sub_deliveries", "lanes", "lane_sizes", "due"];

impl Outbox {
    pub(crate) fn open(
        db: &sled::Db,
        events: sled::Tree,
        ids: Arc<Ids>,
        queued: Arc<AtomicU64>,
    ) -> Result<Self> {
        let tree = db.open_tree("outbox")?;
        migrate_subscriptions(db, &tree)?;
        let mut subs = BTreeMap::new();
        for item in tree.scan_prefix([keys::SUB]) {
            let (_, v) = item?;
            let sub: Subscription = decode("outbox", &v)?;
            subs.insert(sub.id.clone(), Arc::new(Target::new(sub)));
        }
        let mut index = Index::default();
        for target in subs.values().filter(|t| !t.sub.enabled) {
            index.hold(&target.sub.id.as_str().into());
        }
        let mut tidy = sled::Batch::default();
        for item in tree.scan_prefix([keys::LANE]) {
            let (k, v) = item?;
            match keys::split_run(&k, &v) {
                Some((lane, run)) if subs.contains_key(&*lane.sub) => {
                    let mut pending = Vec::with_capacity(run.len());
                    for entry in &run {
                        if !finished(&tree, &lane, entry)? {
                            index.add(&lane, *entry);
                            pending.push(*entry);
                        }
                    }
                    // Finished entries left in their run go now.
                    if pending.is_empty() {
                        tidy.remove(k);
                    } else if pending.len() < run.len() {
                        tidy.insert(k, keys::encode_run(&pending));
                    }
                }
                // A subscription deleted by a crashed process: finish the job.
                _ => tidy.remove(k),
            }
        }
        tree.apply_batch(tidy)?;
        sweep_deleted_history(&tree, &subs)?;
        Ok(Self {
            inner: Arc::new(Inner {
                tree,
                events,
                ids,
                queued,
                state: Mutex::new(State { subs, index }),
            }),
        })
    }

    /// The largest delivery key stored, to seed the id source.
    pub(crate) fn largest_key(db: &sled::Db) -> Result<u128> {
        let tree = db.open_tree("outbox")?;
        let mut largest = 0;
        for item in tree.scan_prefix([keys::LANE]) {
            let (k, v) = item?;
            if let Some((_, run)) = keys::split_run(&k, &v) {
                largest = run.iter().map(|e| e.delivery).fold(largest, u128::max);
            }
        }
        // History reads newest first: the first record of each is its largest.
        for item in tree.scan_prefix([keys::SUB]) {
            let id = item?.0[1..].to_vec();
            let id = String::from_utf8_lossy(&id);
            if let Some((d, _)) =
                super::history::Newest::new(&tree, &id, u128::MAX).next_status()?
            {
                largest = largest.max(d);
            }
        }
        Ok(largest)
    }
}

/// Has a run's entry finished? Its delivery's record says so: a
/// completion writes the record and leaves the run alone while the run
/// has more to send.
fn finished(tree: &sled::Tree, lane: &super::LaneId, e: &super::index::Entry) -> Result<bool> {
    let page = super::history::find(tree, &lane.sub, e.delivery)?;
    let status = page.and_then(|p| p.status(e.delivery));
    Ok(status.is_some_and(|s| s != super::DeliveryStatus::Pending))
}

/// The first layout kept subscriptions in a tree of their own and the
/// outbox in five more: move the subscriptions over, drop the rest (their
/// pending deliveries were the first layout's; see the README on upgrading).
fn migrate_subscriptions(db: &sled::Db, tree: &sled::Tree) -> Result<()> {
    let old = db.open_tree("subscriptions")?;
    if !old.is_empty() {
        let mut batch = sled::Batch::default();
        for item in old.iter() {
            let (k, v) = item?;
            let mut key = vec![keys::SUB];
            key.extend_from_slice(&k);
            batch.insert(key, v);
        }
        tree.apply_batch(batch)?;
        old.clear()?;
        info!("subscriptions moved to the new outbox layout");
    }
    for name in OLD_TREES {
        if db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == name.as_bytes())
        {
            db.drop_tree(name)?;
        }
    }
    Ok(())
}

/// Delivery records of subscriptions that no longer exist (a delete cut short).
fn sweep_deleted_history(tree: &sled::Tree, subs: &BTreeMap<String, Arc<Target>>) -> Result<()> {
    let mut batch = sled::Batch::default();
    for item in tree.scan_prefix([keys::DELIVERY]) {
        let (k, _) = item?;
        let known = keys::split_delivery_key(&k).is_some_and(|(sub, _)| subs.contains_key(sub));
        if !known {
            batch.remove(k);
        }
    }
    tree.apply_batch(batch)?;
    Ok(())
}
