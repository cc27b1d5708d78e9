//! The outbox's in-memory index, pure: lane heads, what is due, and the
//! running figures (pending, oldest, events still needed). Rebuilt from disk
//! at open; the disk holds every lane in full, memory only each lane's head.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// A delivery lane: one subscription, one room ("" for test events).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LaneId {
    pub sub: Arc<str>,
    pub room: Arc<str>,
}

/// One pending delivery as the index sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its place in the lane (the room's sequence).
    pub order: u128,
    pub delivery: u128,
    pub event: u128,
    /// Not to be sent before this time (ms); 0 for at once.
    pub not_before: u64,
    pub kind: crate::event::EventType,
    /// Attempted before, so it has a delivery record; a first attempt
    /// reads none.
    pub attempted: bool,
}

impl Entry {
    /// When it was queued: delivery ids are ULIDs.
    pub fn created_ms(&self) -> u64 {
        (self.delivery >> 80) as u64
    }
}

/// When a head may be sent (ms), then when it was queued: heads due at
/// once go oldest first, so no lane waits behind others queued after it
/// (and a batch's completions are of deliveries queued close together).
type Due = (u64, u64);

#[derive(Debug, Default)]
struct Lane {
    head: Option<Entry>,
    len: u64,
    in_flight: bool,
    /// Its key in `due` while the head waits to be sent.
    due_at: Option<Due>,
}

#[derive(Debug, Default)]
pub struct Index {
    lanes: HashMap<LaneId, Lane>,
    /// Heads waiting to be sent, by time: only lanes of enabled
    /// subscriptions whose head is not in flight.
    due: BTreeSet<(Due, LaneId)>,
    /// Subscriptions whose lanes are held (disabled).
    held: BTreeSet<Arc<str>>,
    pending: u64,
    per_sub: HashMap<Arc<str>, u64>,
    /// Pending deliveries by the millisecond they were queued.
    oldest: BTreeMap<u64, u64>,
    /// Events pending deliveries need, with how many need each.
    needed: BTreeMap<u128, u64>,
    /// Entries finished but still on disk, in a run with more to send.
    done: HashMap<LaneId, BTreeSet<u128>>,
}

impl Index {
    /// A pending delivery joins `lane` (already on disk). It becomes the
    /// head when the lane was empty or it comes first and the head is not
    /// in flight (a manual retry of an older event).
    pub fn add(&mut self, lane: &LaneId, e: Entry) {
        self.pending += 1;
        *self.per_sub.entry(lane.sub.clone()).or_default() += 1;
        *self.oldest.entry(e.created_ms()).or_default() += 1;
        *self.needed.entry(e.event).or_default() += 1;
        let l = self.lanes.entry(lane.clone()).or_default();
        l.len += 1;
        let takes_head = match &l.head {
            None => true,
            Some(h) => e.order < h.order && !l.in_flight,
        };
        if takes_head {
            self.set_head(lane, Some(e));
        }
    }

    /// A pending delivery left `lane` (succeeded, failed or deleted). The
    /// caller then sets the lane's next head from disk.
    pub fn remove(&mut self, lane: &LaneId, e: &Entry) {
        self.pending = self.pending.saturating_sub(1);
        dec_sub(&mut self.per_sub, &lane.sub);
        dec(&mut self.oldest, &e.created_ms());
        dec(&mut self.needed, &e.event);
        if let Some(l) = self.lanes.get_mut(lane) {
            l.len = l.len.saturating_sub(1);
        }
    }

    /// Make `head` the lane's head (None: the lane is empty and goes).
    pub fn set_head(&mut self, lane: &LaneId, head: Option<Entry>) {
        let held = self.held.contains(&lane.sub);
        let Some(l) = self.lanes.get_mut(lane) else {
            return;
        };
        if let Some(at) = l.due_at.take() {
            self.due.remove(&(at, lane.clone()));
        }
        l.head = head;
        if l.head.is_none() && l.len == 0 && !l.in_flight {
            self.lanes.remove(lane);
            return;
        }
        if let (Some(h), false, false) = (head, l.in_flight, held) {
            let at = (h.not_before, h.created_ms());
            l.due_at = Some(at);
            self.due.insert((at, lane.clone()));
        }
    }

    /// The entry at `order` finished; its run on disk still holds it.
    pub fn mark_done(&mut self, lane: &LaneId, order: u128) {
        self.done.entry(lane.clone()).or_default().insert(order);
    }

    /// The finished entry at `order` is no longer on disk.
    pub fn forget_done(&mut self, lane: &LaneId, order: u128) {
        if let Some(orders) = self.done.get_mut(lane) {
            orders.remove(&order);
            if orders.is_empty() {
                self.done.remove(lane);
            }
        }
    }

    /// Has the entry at `order`, still on disk, finished?
    pub fn is_done(&self, lane: &LaneId, order: u128) -> bool {
        self.done.get(lane).is_some_and(|o| o.contains(&order))
    }

    /// How many pending deliveries `lane` holds.
    pub fn len(&self, lane: &LaneId) -> u64 {
        self.lanes.get(lane).map_or(0, |l| l.len)
    }

    #[cfg(test)]
    pub fn head(&self, lane: &LaneId) -> Option<Entry> {
        self.lanes.get(lane).and_then(|l| l.head)
    }

    #[cfg(test)]
    pub fn is_in_flight(&self, lane: &LaneId) -> bool {
        self.lanes.get(lane).is_some_and(|l| l.in_flight)
    }

    /// Take up to `limit` heads due at `now_ms`, marking their lanes in flight.
    pub fn claim(&mut self, now_ms: u64, limit: usize) -> Vec<(LaneId, Entry)> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(((at, _), _)) = self.due.first() else {
                break;
            };
            if *at > now_ms {
                break;
            }
            let (_, lane) = self.due.pop_first().expect("just seen");
            let l = self.lanes.get_mut(&lane).expect("due lanes exist");
            l.due_at = None;
            l.in_flight = true;
            out.push((lane, l.head.expect("due lanes have a head")));
        }
        out
    }

    /// The attempt of a lane's head is over; the caller sets the head next.
    pub fn release(&mut self, lane: &LaneId) {
        if let Some(l) = self.lanes.get_mut(lane) {
            l.in_flight = false;
        }
    }

    /// A disabled subscription's lanes wait; its deliveries stay pending.
    pub fn hold(&mut self, sub: &Arc<str>) {
        self.held.insert(sub.clone());
        let waiting: Vec<(Due, LaneId)> = self
            .due
            .iter()
            .filter(|(_, l)| &l.sub == sub)
            .cloned()
            .collect();
        for (at, lane) in waiting {
            self.due.remove(&(at, lane.clone()));
            if let Some(l) = self.lanes.get_mut(&lane) {
                l.due_at = None;
            }
        }
    }

    /// Enabled again: every head of the subscription is due when it may be.
    pub fn unhold(&mut self, sub: &Arc<str>) {
        if !self.held.remove(sub) {
            return;
        }
        let lanes: Vec<(LaneId, Option<Entry>)> = self
            .lanes
            .iter()
            .filter(|(id, _)| &id.sub == sub)
            .map(|(id, l)| (id.clone(), l.head))
            .collect();
        for (lane, head) in lanes {
            self.set_head(&lane, head);
        }
    }

    /// Forget a deleted subscription's lanes and figures.
    pub fn drop_sub(&mut self, sub: &Arc<str>, entries: &[(LaneId, Entry)]) {
        for (lane, e) in entries {
            self.remove(lane, e);
        }
        let lanes: Vec<LaneId> = self
            .lanes
            .keys()
            .filter(|l| &l.sub == sub)
            .cloned()
            .collect();
        for lane in lanes {
            if let Some(l) = self.lanes.remove(&lane) {
                if let Some(at) = l.due_at {
                    self.due.remove(&(at, lane));
                }
            }
        }
        self.held.remove(sub);
        self.per_sub.remove(sub);
        self.done.retain(|lane, _| &lane.sub != sub);
    }

    /// When the earliest waiting head falls due.
    pub fn next_due(&self) -> Option<u64> {
        self.due.first().map(|((at, _), _)| *at)
    }

    pub fn pending(&self) -> u64 {
        self.pending
    }

    pub fn pending_of(&self, sub: &str) -> u64 {
        self.per_sub.get(sub).copied().unwrap_or(0)
    }

    /// When the lane head of one subscription that has waited longest was
    /// queued (ms): the backlog's age as its receiver feels it. Reads every
    /// lane once: for the dashboard, not for a hot path.
    pub fn oldest_of(&self, sub: &str) -> Option<u64> {
        self.lanes
            .iter()
            .filter(|(id, _)| &*id.sub == sub)
            .filter_map(|(_, l)| l.head.map(|h| h.created_ms()))
            .min()
    }

    /// When the oldest pending delivery was queued (ms).
    pub fn oldest_ms(&self) -> Option<u64> {
        self.oldest.keys().next().copied()
    }

    /// Does a pending delivery still need this event?
    pub fn needs(&self, event: u128) -> bool {
        self.needed.contains_key(&event)
    }

    #[cfg(test)]
    /// Every finished entry the index says is still on disk.
    pub fn done_entries(&self) -> Vec<(LaneId, u128)> {
        let mut out = Vec::new();
        for (lane, orders) in &self.done {
            out.extend(orders.iter().map(|o| (lane.clone(), *o)));
        }
        out
    }

    #[cfg(test)]
    pub fn lane_count(&self) -> usize {
        self.lanes.len()
    }

    #[cfg(test)]
    /// Every lane with its head and length (for checks in tests).
    pub fn lanes(&self) -> impl Iterator<Item = (&LaneId, Option<Entry>, u64, bool)> {
        self.lanes
            .iter()
            .map(|(id, l)| (id, l.head, l.len, l.due_at.is_some()))
    }
}

fn dec<K: Ord>(map: &mut BTreeMap<K, u64>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

fn dec_sub(map: &mut HashMap<Arc<str>, u64>, key: &Arc<str>) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(room: &str) -> LaneId {
        LaneId {
            sub: "sub_1".into(),
            room: room.into(),
        }
    }

    fn entry(order: u128, d: u128) -> Entry {
        Entry {
            order,
            delivery: d << 80,
            event: order,
            not_before: 0,
            kind: crate::event::EventType::RoomStarted,
            attempted: false,
        }
    }

    #[test]
    fn only_heads_are_due_and_an_older_entry_takes_an_idle_head() {
        let mut ix = Index::default();
        ix.add(&lane("a"), entry(2, 2));
        ix.add(&lane("a"), entry(3, 3));
        assert_eq!(ix.pending(), 2);
        // A retried older event goes first while nothing is in flight.
        ix.add(&lane("a"), entry(1, 4));
        let claimed = ix.claim(10, 10);
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].1.order, 1);
        // In flight: an even older one waits behind it.
        ix.add(&lane("a"), entry(0, 5));
        assert_eq!(ix.head(&lane("a")).unwrap().order, 1);
        assert!(ix.claim(10, 10).is_empty());
        assert_eq!(ix.oldest_ms(), Some(2));
    }

    #[test]
    fn held_lanes_wait_until_enabled_and_lanes_go_when_empty() {
        let mut ix = Index::default();
        let sub: Arc<str> = "sub_1".into();
        ix.hold(&sub);
        ix.add(&lane("a"), entry(1, 1));
        assert!(ix.claim(10, 10).is_empty());
        ix.unhold(&sub);
        let (l, e) = ix.claim(10, 10).pop().unwrap();
        ix.remove(&l, &e);
        ix.release(&l);
        ix.set_head(&l, None);
        assert_eq!(ix.lane_count(), 0);
        assert_eq!(ix.pending(), 0);
        assert!(!ix.needs(1));
    }

    #[test]
    fn heads_due_at_once_go_oldest_queued_first_whatever_their_lane() {
        let mut ix = Index::default();
        ix.add(&lane("a"), entry(1, 30));
        ix.add(&lane("b"), entry(1, 10));
        ix.add(&lane("c"), entry(1, 20));
        let mut retry = entry(2, 5);
        retry.not_before = 40;
        ix.add(&lane("d"), retry);
        let rooms: Vec<_> = ix.claim(50, 10).into_iter().map(|(l, _)| l.room).collect();
        assert_eq!(
            rooms,
            ["b".into(), "c".into(), "a".into(), "d".into()] as [Arc<str>; 4]
        );
    }
}
