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

/// The sequence a room index key ends with.
pub fn seq_of(key: &[u8]) -> Option<u64> {
    let at = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[at..].try_into().ok()?))
}

/// A room index entry (one a commit, at its first event's sequence) as
/// (sequence, event key) pairs: the value's event keys follow one another
/// a sequence apart. A key that retention removed is all zeros.
pub fn indexed_events<'v>(
    key: &[u8],
    value: &'v [u8],
) -> impl Iterator<Item = (u64, [u8; 16])> + 'v {
    let first = seq_of(key).unwrap_or(0);
    value
        .chunks_exact(16)
        .enumerate()
        .map(move |(i, ek)| (first + i as u64, ek.try_into().expect("16 bytes")))
        .filter(|(_, ek)| *ek != [0; 16])
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
    fn an_index_entry_holds_a_commits_events_a_sequence_apart() {
        let key = room_seq_key("a", 7);
        let mut value = [1u8; 16].to_vec();
        value.extend([0u8; 16]);
        value.extend([3u8; 16]);
        let got: Vec<(u64, [u8; 16])> = indexed_events(&key, &value).collect();
        assert_eq!(got, vec![(7, [1; 16]), (9, [3; 16])]);
        // One event to an entry, as stores before this layout wrote it.
        assert_eq!(indexed_events(&key, &[2; 16]).count(), 1);
    }
}
