//! Pruning events older than the retention period, a batch at a time;
//! the outbox keeps every event a pending delivery needs.

use super::events::decode_event;
use super::keys::{room_key, room_seq_key, seq_of};
use super::{Result, Store};
use crate::ids::floor_of_ms;

impl Store {
    /// Remove up to `batch` events stored before `cutoff_ms`, from `after`
    /// on, keeping each event a pending delivery needs; returns how many
    /// went and where to go on (None when the scan reached the cutoff).
    pub fn prune_events(
        &self,
        cutoff_ms: u64,
        after: Option<u128>,
        batch: usize,
    ) -> Result<(usize, Option<u128>)> {
        let start = after.map_or(0, |k| k.saturating_add(1)).to_be_bytes();
        let end = floor_of_ms(cutoff_ms).to_be_bytes();
        self.outbox.while_needed(|needed| {
            let (mut removed, mut scanned, mut last) = (0, 0, None);
            for item in self.events.range(start..end).take(batch) {
                let (k, v) = item?;
                let key = u128::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 16]));
                scanned += 1;
                last = Some(key);
                if needed(key) {
                    continue;
                }
                let event = decode_event(&k, &v)?;
                if let (Some(room), Some(seq)) = (event.room_id(), event.sequence()) {
                    self.unindex(room, seq, key)?;
                }
                self.events.remove(k)?;
                removed += 1;
            }
            Ok((removed, if scanned == batch { last } else { None }))
        })
    }

    /// Take a removed event out of its room's index entry (zeros in its
    /// place, so the others keep their sequences); the entry goes with its
    /// last event.
    fn unindex(&self, room: &str, seq: u64, key: u128) -> Result<()> {
        let found = self
            .room_events
            .range(room_key(room)..=room_seq_key(room, seq))
            .next_back()
            .transpose()?;
        let Some((k, v)) = found else {
            return Ok(());
        };
        let at = 16 * seq.saturating_sub(seq_of(&k).unwrap_or(0)) as usize;
        if v.get(at..at + 16) != Some(&key.to_be_bytes()[..]) {
            return Ok(());
        }
        let mut left = v.to_vec();
        left[at..at + 16].fill(0);
        if left.iter().all(|b| *b == 0) {
            self.room_events.remove(k)?;
        } else {
            self.room_events.insert(k, left)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::room::{RoomId, RoomStatus};
    use crate::store::{EventFilter, Store};
    use chrono::Utc;

    fn by_room(store: &Store, after: Option<String>) -> Vec<String> {
        let filter = EventFilter {
            room: Some("math".into()),
            after,
            limit: 100,
            ..Default::default()
        };
        let page = store.list_events(&filter).unwrap();
        page.events.into_iter().map(|e| e.id).collect()
    }

    #[test]
    fn a_commits_index_entry_lists_from_mid_entry_and_goes_with_its_last_event() {
        let store = Store::temporary().unwrap();
        let (room, now) = (RoomId::parse("math").unwrap(), Utc::now());
        store.watch(&room, now).unwrap();
        let live = RoomStatus::live_for_tests("math", 3);
        store.record_poll(&room, &live, now, true).unwrap();
        let all = by_room(&store, None);
        assert!(all.len() >= 2, "one commit, several events: {all:?}");
        assert_eq!(store.room_events.len(), 1, "one index entry a commit");
        // Paged from inside the entry.
        assert_eq!(by_room(&store, Some(all[0].clone())), all[1..]);
        // Pruned one at a time: the rest stay listed, then the entry goes.
        let later = crate::outbox::ms(now) + 1000;
        store.prune_events(later, None, 1).unwrap();
        assert_eq!(by_room(&store, None), all[1..]);
        assert_eq!(store.room_events.len(), 1);
        while store.prune_events(later, None, 1).unwrap().0 > 0 {}
        assert!(by_room(&store, None).is_empty());
        assert_eq!(store.room_events.len(), 0);
    }
}
