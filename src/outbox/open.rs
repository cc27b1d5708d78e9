//! Opening the outbox: subscriptions and lanes read back from disk into
//! memory, and whatever a crash left half-done finished or removed.

use super::index::Index;
use super::model::DeliveryStatus;
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
        let mut orphans = sled::Batch::default();
        for item in tree.scan_prefix([keys::LANE]) {
            let (k, v) = item?;
            let parsed = keys::split_lane_key(&k)
                .and_then(|(lane, order)| Some((lane, keys::decode_entry(order, &v)?)));
            match parsed {
                Some((lane, entry))
                    if subs.contains_key(&*lane.sub)
                        && !finished(&tree, &lane.sub, entry.delivery)? =>
                {
                    index.add(&lane, entry);
                }
                // A subscription deleted by a crashed process, or a
                // completion cut between its two writes: finish the job.
                _ => orphans.remove(k),
            }
        }
        tree.apply_batch(orphans)?;
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
            if let Some(e) = keys::split_lane_key(&k).and_then(|(_, o)| keys::decode_entry(o, &v)) {
                largest = largest.max(e.delivery);
            }
        }
        // Records sort by subscription, then id: the last of each is its largest.
        for item in tree.scan_prefix([keys::SUB]) {
            let id = item?.0[1..].to_vec();
            let id = String::from_utf8_lossy(&id);
            let last = tree
                .scan_prefix(keys::deliveries_prefix(&id))
                .next_back()
                .transpose()?;
            if let Some((_, d)) = last.as_ref().and_then(|(k, _)| keys::split_delivery_key(k)) {
                largest = largest.max(d);
            }
        }
        Ok(largest)
    }
}

/// Whether the delivery's record says it is done: a completion writes the
/// record before it removes the lane entry (see [`Outbox::complete`]).
fn finished(tree: &sled::Tree, sub: &str, delivery: u128) -> Result<bool> {
    Ok(match tree.get(keys::delivery_key(sub, delivery))? {
        Some(v) => super::claim::decode_delivery(&v)?.status != DeliveryStatus::Pending,
        None => false,
    })
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

#[cfg(test)]
mod tests {
    use crate::outbox::model::DeliveryStatus;
    use crate::room::{RoomId, RoomStatus};
    use crate::store::Store;
    use crate::subscription::Subscription;
    use chrono::Utc;

    /// A crash between a completion's two writes: the record says the
    /// delivery succeeded, its lane entry is still there.
    #[test]
    fn a_finished_delivery_left_in_its_lane_is_cleared_at_open() {
        let store = Store::temporary().unwrap();
        let now = Utc::now();
        let sub = Subscription::new(
            "sub_a".into(),
            "http://x/".into(),
            vec![],
            vec![],
            None,
            now,
        );
        store
            .outbox()
            .create_subscription(sub, 10)
            .unwrap()
            .unwrap();
        let room = RoomId::parse("r").unwrap();
        store.watch(&room, now).unwrap();
        for n in [1, 2] {
            store
                .record_poll(&room, &RoomStatus::live_for_tests("r", n), now, false)
                .unwrap();
        }
        let claims = store.outbox().claim(now, 1).unwrap().claims;
        let mut d = claims[0].delivery.clone();
        d.status = DeliveryStatus::Succeeded;
        let dk = crate::ids::delivery_key(&d.id).unwrap();
        store
            .outbox()
            .tree()
            .insert(
                super::keys::delivery_key("sub_a", dk),
                crate::db::encode(&d),
            )
            .unwrap();
        assert_eq!(store.outbox().pending().0, 1);

        let reopened = store.reopen().unwrap();
        assert_eq!(reopened.outbox().pending().0, 0, "nothing left pending");
        assert!(reopened.outbox().claim(now, 5).unwrap().claims.is_empty());
        let prefix = [super::keys::LANE];
        assert_eq!(reopened.outbox().tree().scan_prefix(prefix).count(), 0);
    }
}
