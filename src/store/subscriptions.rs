//! Subscriptions, kept in sled and mirrored in memory for the outbox's
//! matching (sled transactions cannot scan).

use super::keys::{lane_prefix, sub_delivery_key};
use super::{decode, encode, Result, Store};
use crate::subscription::Subscription;

impl Store {
    pub(super) fn load_subscriptions(&self) -> Result<()> {
        let mut cache = self.subs.write().unwrap();
        for item in self.subscriptions.iter() {
            let (_, v) = item?;
            let s: Subscription = decode("subscriptions", &v)?;
            cache.insert(s.id.clone(), s);
        }
        Ok(())
    }

    pub fn insert_subscription(&self, sub: &Subscription) -> Result<()> {
        let mut cache = self.subs.write().unwrap();
        self.subscriptions.insert(sub.id.as_bytes(), encode(sub))?;
        cache.insert(sub.id.clone(), sub.clone());
        Ok(())
    }

    pub fn subscription(&self, id: &str) -> Option<Subscription> {
        self.subs.read().unwrap().get(id).cloned()
    }

    /// All subscriptions, oldest first.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        let mut all: Vec<_> = self.subs.read().unwrap().values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    pub fn subscription_count(&self) -> usize {
        self.subs.read().unwrap().len()
    }

    /// Change a subscription; the cache lock is held across the write so
    /// the cache never goes back to an older version.
    pub fn update_subscription(
        &self,
        id: &str,
        change: impl FnOnce(&mut Subscription),
    ) -> Result<Option<Subscription>> {
        let mut cache = self.subs.write().unwrap();
        let Some(mut sub) = cache.get(id).cloned() else {
            return Ok(None);
        };
        change(&mut sub);
        if cache.get(id) != Some(&sub) {
            self.subscriptions.insert(id.as_bytes(), encode(&sub))?;
            cache.insert(id.to_string(), sub.clone());
        }
        Ok(Some(sub))
    }

    /// Delete a subscription with its deliveries, pending ones included.
    pub fn delete_subscription(&self, id: &str) -> Result<bool> {
        let mut cache = self.subs.write().unwrap();
        if cache.remove(id).is_none() {
            return Ok(false);
        }
        self.subscriptions.remove(id.as_bytes())?;
        let mut index_prefix = sub_delivery_key(id, &[0; 16]);
        index_prefix.truncate(id.len() + 1);
        for item in self.sub_deliveries.scan_prefix(&index_prefix) {
            let (k, _) = item?;
            if let Ok(dk) = <[u8; 16]>::try_from(&k[k.len() - 16..]) {
                // Its due entry, if any, is dropped as stale when next seen.
                self.deliveries.remove(dk)?;
            }
            self.sub_deliveries.remove(k)?;
        }
        for item in self
            .lanes
            .scan_prefix(lane_prefix(id, "").get(..id.len()).unwrap_or_default())
        {
            let (k, _) = item?;
            self.lanes.remove(k)?;
        }
        Ok(true)
    }
}
