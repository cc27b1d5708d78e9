//! Key layouts: big-endian integers so range scans come back in order.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_keys_do_not_prefix_each_other() {
        assert!(!room_seq_key("ab", 1).starts_with(&room_key("a")));
        assert!(room_seq_key("a", 1) < room_seq_key("a", 2));
        assert!(room_seq_key("a", 255) < room_seq_key("a", 256));
    }
}
