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
