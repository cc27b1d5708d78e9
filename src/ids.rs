//! Public ids (`evt_…`, `dlv_…`) and the monotonic ULID source behind them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use ulid::Ulid;

/// The public id of the event stored under `key`.
pub fn event_id(key: u128) -> String {
    format!("evt_{}", Ulid::from(key))
}

/// The store key of a public event id, or None if it is not one of ours.
pub fn event_key(id: &str) -> Option<u128> {
    Some(Ulid::from_string(id.strip_prefix("evt_")?).ok()?.into())
}

pub fn delivery_id(key: u128) -> String {
    format!("dlv_{}", Ulid::from(key))
}

/// A delivery's store key from its public id `dlv_<ULID>`.
pub fn delivery_key(id: &str) -> Option<u128> {
    Some(Ulid::from_string(id.strip_prefix("dlv_")?).ok()?.into())
}

/// The smallest ULID of millisecond `ms`: a time as a key bound.
pub fn floor_of_ms(ms: u64) -> u128 {
    Ulid::from_parts(ms, 0).into()
}

/// Hands out ULIDs that always grow: seeded with the largest id in the
/// store, so a clock stepped back across a restart cannot put a new event
/// or delivery before an older one (lanes, cursors and retention rely on it).
#[derive(Debug)]
pub struct Ids {
    last: Mutex<u128>,
    /// How many times the clock was behind the last id (for the logs).
    pub clock_behind: AtomicU64,
}

impl Ids {
    pub fn seeded(largest_stored: u128) -> Self {
        Self {
            last: Mutex::new(largest_stored),
            clock_behind: AtomicU64::new(0),
        }
    }

    /// A fresh ULID from `now_ms`, above every id handed out or stored.
    pub fn next_at(&self, now_ms: u64) -> u128 {
        let fresh: u128 = Ulid::from_parts(now_ms, rand::random::<u128>()).into();
        let mut last = self.last.lock().expect("id lock");
        let id = if fresh > *last {
            fresh
        } else {
            if Ulid::from(*last).timestamp_ms() > now_ms {
                self.clock_behind.fetch_add(1, Ordering::Relaxed);
            }
            *last + 1
        };
        *last = id;
        id
    }

    /// Never hand out `key` or anything below it from now on (an id
    /// another process stored).
    pub fn observe(&self, key: u128) {
        let mut last = self.last.lock().expect("id lock");
        *last = (*last).max(key);
    }

    pub fn next(&self) -> u128 {
        self.next_at(chrono::Utc::now().timestamp_millis().max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let k: u128 = Ulid::new().into();
        assert_eq!(event_key(&event_id(k)), Some(k));
        assert_eq!(delivery_key(&delivery_id(k)), Some(k));
        assert_eq!(event_key("evt_nope"), None);
        assert_eq!(event_key(&delivery_id(k)), None);
    }

    #[test]
    fn a_clock_stepped_back_still_yields_growing_ids() {
        let ids = Ids::seeded(floor_of_ms(1_000_000));
        let a = ids.next_at(5_000);
        let b = ids.next_at(4_000);
        assert!(a > floor_of_ms(1_000_000));
        assert!(b > a);
        assert!(ids.clock_behind.load(Ordering::Relaxed) >= 2);
        let c = ids.next_at(2_000_000);
        assert!(c >= floor_of_ms(2_000_000));
    }
}
