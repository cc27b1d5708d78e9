//! The outbox's one sled tree: a prefix byte per record kind, so one
//! atomic batch can change a delivery, its lane and its subscription.
//!
//! - `S` sub id → subscription JSON
//! - `D` sub id, 0, delivery key → a page of delivery records (JSON),
//!   keyed by its smallest: a subscription's history (see `history`)
//! - `L` sub id, 0, room key, order → a run of lane entries: pending, in
//!   lane order. A run holds the entries from its key's order up to the
//!   next run's key (one commit's events, a retry put among them).
//!
//! A poll's commit writes one run per lane and nothing else, and a batch
//! of completions one page per subscription: sled pays ~10 µs a key here,
//! so fan-out writes as little as it can.

use super::index::{Entry, LaneId};

pub const SUB: u8 = b'S';
pub const DELIVERY: u8 = b'D';
pub const LANE: u8 = b'L';

pub fn sub_key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(SUB);
    k.extend_from_slice(id.as_bytes());
    k
}

/// `D` + sub id + 0: every delivery of one subscription, oldest first.
pub fn deliveries_prefix(sub: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + sub.len() + 16);
    k.push(DELIVERY);
    k.extend_from_slice(sub.as_bytes());
    k.push(0);
    k
}

pub fn delivery_key(sub: &str, d: u128) -> Vec<u8> {
    let mut k = deliveries_prefix(sub);
    k.extend_from_slice(&d.to_be_bytes());
    k
}

/// The subscription and delivery key of a `D` key.
pub fn split_delivery_key(k: &[u8]) -> Option<(&str, u128)> {
    let rest = k.strip_prefix(&[DELIVERY])?;
    let nul = rest.len().checked_sub(17)?;
    let sub = std::str::from_utf8(&rest[..nul]).ok()?;
    let d = u128::from_be_bytes(rest.get(nul + 1..)?.try_into().ok()?);
    Some((sub, d))
}

/// `L` + sub id + 0: every lane of one subscription.
pub fn sub_lanes_prefix(sub: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + sub.len());
    k.push(LANE);
    k.extend_from_slice(sub.as_bytes());
    k.push(0);
    k
}

/// One lane: the room is length-prefixed so no room's keys prefix another's.
pub fn lane_prefix(lane: &LaneId) -> Vec<u8> {
    let mut k = sub_lanes_prefix(&lane.sub);
    k.extend_from_slice(&(lane.room.len() as u16).to_be_bytes());
    k.extend_from_slice(lane.room.as_bytes());
    k
}

pub fn lane_key(lane: &LaneId, order: u128) -> Vec<u8> {
    let mut k = lane_prefix(lane);
    k.extend_from_slice(&order.to_be_bytes());
    k
}

/// A lane key back into its lane and order.
pub fn split_lane_key(k: &[u8]) -> Option<(LaneId, u128)> {
    let rest = k.strip_prefix(&[LANE])?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let sub = std::str::from_utf8(&rest[..nul]).ok()?;
    let rest = &rest[nul + 1..];
    let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let room = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
    let order = u128::from_be_bytes(rest.get(2 + len..)?.try_into().ok()?);
    Some((
        LaneId {
            sub: sub.into(),
            room: room.into(),
        },
        order,
    ))
}

/// A run's value: each entry's order, then the entry (58 bytes each).
pub fn encode_run(run: &[Entry]) -> Vec<u8> {
    let mut v = Vec::with_capacity(RUN_ITEM * run.len());
    for e in run {
        v.extend_from_slice(&e.order.to_be_bytes());
        v.extend_from_slice(&encode_entry(e));
    }
    v
}

const RUN_ITEM: usize = 16 + 42;

/// A run's entries, in order. A value of one bare entry (41 or 42 bytes,
/// as stores before runs wrote it) is that entry at the key's order.
pub fn decode_run(key_order: u128, v: &[u8]) -> Option<Vec<Entry>> {
    if v.len() == 41 || v.len() == 42 {
        return Some(vec![decode_entry(key_order, v)?]);
    }
    if v.len() % RUN_ITEM != 0 {
        return None;
    }
    v.chunks_exact(RUN_ITEM)
        .map(|c| decode_entry(u128::from_be_bytes(c[..16].try_into().ok()?), &c[16..]))
        .collect()
}

/// A lane key and its run's value: the lane and its entries.
pub fn split_run(k: &[u8], v: &[u8]) -> Option<(LaneId, Vec<Entry>)> {
    let (lane, order) = split_lane_key(k)?;
    Some((lane, decode_run(order, v)?))
}

/// A lane entry's value: delivery, event, not-before (ms), event type,
/// and 1 once attempted.
pub fn encode_entry(e: &Entry) -> [u8; 42] {
    let mut v = [0u8; 42];
    v[..16].copy_from_slice(&e.delivery.to_be_bytes());
    v[16..32].copy_from_slice(&e.event.to_be_bytes());
    v[32..40].copy_from_slice(&e.not_before.to_be_bytes());
    v[40] = e.kind as u8;
    v[41] = e.attempted as u8;
    v
}

pub fn decode_entry(order: u128, v: &[u8]) -> Option<Entry> {
    Some(Entry {
        order,
        delivery: u128::from_be_bytes(v.get(..16)?.try_into().ok()?),
        event: u128::from_be_bytes(v.get(16..32)?.try_into().ok()?),
        not_before: u64::from_be_bytes(v.get(32..40)?.try_into().ok()?),
        kind: *crate::event::EventType::ALL.get(*v.get(40)? as usize)?,
        // Entries written before the flag existed may have a record.
        attempted: v.get(41).is_none_or(|a| *a != 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_keys_round_trip_and_sort_by_order() {
        let lane = LaneId {
            sub: "sub_1".into(),
            room: "math/101 ü".into(),
        };
        let k = lane_key(&lane, 7);
        assert_eq!(split_lane_key(&k), Some((lane.clone(), 7)));
        assert!(lane_key(&lane, 255) < lane_key(&lane, 256));
        let other = LaneId {
            sub: "sub_1".into(),
            room: "math".into(),
        };
        assert!(!lane_key(&lane, 1).starts_with(&lane_prefix(&other)));
        let e = Entry {
            order: 7,
            delivery: 1 << 100,
            event: 3,
            not_before: 9,
            kind: crate::event::EventType::RoomUpdated,
            attempted: false,
        };
        assert_eq!(decode_entry(7, &encode_entry(&e)), Some(e));
        let older = &encode_entry(&e)[..41];
        assert!(decode_entry(7, older).unwrap().attempted);
        // A bare entry reads as a run of one; a run keeps each order.
        assert_eq!(decode_run(7, &encode_entry(&e)), Some(vec![e]));
        let next = Entry { order: 9, ..e };
        assert_eq!(decode_run(7, &encode_run(&[e, next])), Some(vec![e, next]));
        assert_eq!(decode_run(7, &[0; 50]), None);
        let dk = delivery_key("sub_1", 42);
        assert_eq!(split_delivery_key(&dk), Some(("sub_1", 42)));
    }
}
