//! Key layouts: big-endian integers so range scans come back in order.

use ulid::Ulid;

/// A room's prefix in composite keys: length, then bytes, so no room id is a
/// prefix of another's keys.
pub fn room_key(room: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + room.len());
    k.extend_from_slice(&(room.len() as u16).to_be_bytes());
    k.extend_from_slice(room.as_bytes());
    k
}

pub fn room_seq_key(room: &str, seq: u64) -> Vec<u8> {
    let mut k = room_key(room);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The public id of the event stored under `ulid`.
pub fn event_id(ulid: Ulid) -> String {
    format!("evt_{ulid}")
}

/// The store key of a public event id, or None if it is not one of ours.
pub fn event_key_of(id: &str) -> Option<[u8; 16]> {
    let ulid = Ulid::from_string(id.strip_prefix("evt_")?).ok()?;
    Some(u128::from(ulid).to_be_bytes())
}

/// A delivery's store key from its public id `dlv_<ULID>`.
pub fn delivery_key_of(id: &str) -> Option<[u8; 16]> {
    let ulid = Ulid::from_string(id.strip_prefix("dlv_")?).ok()?;
    Some(u128::from(ulid).to_be_bytes())
}

pub fn delivery_id(key: [u8; 16]) -> String {
    format!("dlv_{}", Ulid::from(u128::from_be_bytes(key)))
}

/// The pending queue of one (subscription, room): FIFO by event key.
pub fn lane_prefix(sub_id: &str, room: &str) -> Vec<u8> {
    let mut k = sub_id.as_bytes().to_vec();
    k.extend_from_slice(&room_key(room));
    k
}

pub fn lane_key(sub_id: &str, room: &str, event_key: &[u8; 16]) -> Vec<u8> {
    let mut k = lane_prefix(sub_id, room);
    k.extend_from_slice(event_key);
    k
}

/// The due index: time first, so a range scan yields what is due now.
pub fn due_key(at_ms: u64, delivery: &[u8; 16]) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&at_ms.to_be_bytes());
    k[8..].copy_from_slice(delivery);
    k
}

pub fn split_due_key(k: &[u8]) -> Option<(u64, [u8; 16])> {
    let ms = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
    let d: [u8; 16] = k.get(8..24)?.try_into().ok()?;
    Some((ms, d))
}

pub fn sub_delivery_key(sub_id: &str, delivery: &[u8; 16]) -> Vec<u8> {
    let mut k = sub_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(delivery);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_keys_do_not_prefix_each_other() {
        assert!(!room_seq_key("ab", 1).starts_with(&room_key("a")));
        assert!(room_seq_key("a", 1) < room_seq_key("a", 2));
        assert!(room_seq_key("a", 255) < room_seq_key("a", 256));
    }

    #[test]
    fn event_ids_round_trip_and_sort_like_keys() {
        let a = Ulid::new();
        let b = Ulid::from_parts(a.timestamp_ms() + 1, 0);
        assert_eq!(
            event_key_of(&event_id(a)),
            Some(u128::from(a).to_be_bytes())
        );
        assert!(event_id(a) < event_id(b));
        assert_eq!(event_key_of("evt_nope"), None);
        assert_eq!(event_key_of("01ARZ3NDEKTSV4RRFFQ69G5FAV"), None);
    }
}
