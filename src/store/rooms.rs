//! Watched rooms, their last snapshots, and the transaction that turns a poll
//! into stored events.

use super::keys::room_seq_key;
use super::{Result, Store, StoreError};
use crate::db::{decode, encode};
use crate::diff::build_events;
use crate::event::{webhook_body, Event};
use crate::ids::{event_id, event_key};
use crate::room::{RoomId, RoomStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, Transactional};

/// What the store keeps of a room. It survives unwatching, so a room watched
/// again continues its `sequence`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomRecord {
    pub room_id: String,
    /// None when the room is not watched (any more).
    pub watched_since: Option<DateTime<Utc>>,
    /// The last answer, or None before the baseline.
    pub snapshot: Option<RoomStatus>,
    /// The last sequence number used by this room's events.
    pub sequence: u64,
    pub last_changed_at: Option<DateTime<Utc>>,
    /// Classes the LMS expects (`PUT /v1/rooms/{id}` with a schedule).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<super::ClassWindow>,
}

/// What one successful poll did to the store.
#[derive(Debug, PartialEq)]
pub enum PollCommit {
    /// Same answer as the snapshot: nothing written.
    Unchanged,
    /// First answer of a newly watched room, stored silently.
    Baseline,
    /// The snapshot moved; these events were stored with it.
    Changed(Vec<Event>),
    /// The room was unwatched while the poll was in flight.
    NotWatched,
}

impl Store {
    /// Start watching; returns true when the room was not watched before.
    pub fn watch(&self, room: &RoomId, now: DateTime<Utc>) -> Result<bool> {
        let key = room.as_str().as_bytes();
        let mut created = false;
        self.rooms.fetch_and_update(key, |old| {
            let existing = old.and_then(|b| decode::<RoomRecord>("rooms", b).ok());
            created = !matches!(&existing, Some(r) if r.watched_since.is_some());
            let record = match existing {
                Some(r) if !created => r,
                Some(r) => RoomRecord {
                    watched_since: Some(now),
                    ..r
                },
                None => RoomRecord {
                    room_id: room.to_string(),
                    watched_since: Some(now),
                    snapshot: None,
                    sequence: 0,
                    last_changed_at: None,
                    schedule: Vec::new(),
                },
            };
            Some(encode(&record))
        })?;
        Ok(created)
    }

    /// Stop watching; the room's events stay. Returns false when it was not watched.
    pub fn unwatch(&self, room: &RoomId) -> Result<bool> {
        let key = room.as_str().as_bytes();
        let mut was = false;
        self.rooms.fetch_and_update(key, |old| {
            let bytes = old?;
            match decode::<RoomRecord>("rooms", bytes) {
                Ok(r) if r.watched_since.is_some() => {
                    was = true;
                    // The snapshot goes stale while unwatched: a later watch
                    // takes a fresh baseline rather than diffing across the gap.
                    Some(encode(&RoomRecord {
                        watched_since: None,
                        snapshot: None,
                        ..r
                    }))
                }
                _ => Some(bytes.to_vec()),
            }
        })?;
        Ok(was)
    }

    pub fn room(&self, room: &str) -> Result<Option<RoomRecord>> {
        self.rooms
            .get(room.as_bytes())?
            .map(|b| decode("rooms", &b))
            .transpose()
    }

    /// Watched rooms in room-id order.
    pub fn watched_rooms(&self) -> Result<Vec<RoomRecord>> {
        let mut out = Vec::new();
        for item in self.rooms.iter() {
            let (_, v) = item?;
            let r: RoomRecord = decode("rooms", &v)?;
            if r.watched_since.is_some() {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// What a poll's answer needs without writing: Some when it is
    /// settled by a plain read (unchanged, or the room is not watched),
    /// None when it must be committed.
    pub fn settled_without_commit(
        &self,
        room: &RoomId,
        current: &RoomStatus,
    ) -> Result<Option<PollCommit>> {
        Ok(match self.room(room.as_str())? {
            None => Some(PollCommit::NotWatched),
            Some(r) if r.watched_since.is_none() => Some(PollCommit::NotWatched),
            Some(r) if r.snapshot.as_ref() == Some(current) => Some(PollCommit::Unchanged),
            Some(_) => None,
        })
    }

    /// Store a successful poll's answer: the snapshot and the events it
    /// produced commit in one transaction; an unchanged answer writes nothing.
    pub fn record_poll(
        &self,
        room: &RoomId,
        current: &RoomStatus,
        seen_at: DateTime<Utc>,
        initial_events: bool,
    ) -> Result<PollCommit> {
        // A plain read first: the common case (nothing changed) never opens a transaction.
        if let Some(settled) = self.settled_without_commit(room, current)? {
            return Ok(settled);
        }
        let answer = PollAnswer {
            room: room.clone(),
            status: current.clone(),
            seen_at,
        };
        let mut outcomes = self.commit_polls(std::slice::from_ref(&answer), initial_events)?;
        Ok(outcomes.pop().expect("one outcome per answer"))
    }

    /// Commit many rooms' answers in one transaction (group commit): each
    /// room's snapshot with the events and deliveries it produced.
    pub fn commit_polls(
        &self,
        answers: &[PollAnswer],
        initial_events: bool,
    ) -> Result<Vec<PollCommit>> {
        // The outbox stays locked from planning to applying: no subscription
        // changes between choosing the targets and committing their deliveries.
        self.outbox.locked(|state| {
            let trees = (
                &self.rooms,
                &self.events,
                &self.room_events,
                self.outbox.tree(),
            );
            let committed = trees.transaction(|(rooms, events, room_events, outbox)| {
                let mut outcomes = Vec::with_capacity(answers.len());
                let mut plans = Vec::new();
                for a in answers {
                    let key = a.room.as_str().as_bytes();
                    let Some(bytes) = rooms.get(key)? else {
                        outcomes.push(PollCommit::NotWatched);
                        continue;
                    };
                    let mut record: RoomRecord =
                        decode("rooms", &bytes).map_err(ConflictableTransactionError::Abort)?;
                    if record.watched_since.is_none() {
                        outcomes.push(PollCommit::NotWatched);
                        continue;
                    }
                    let previous = record.snapshot.take();
                    if previous.as_ref() == Some(&a.status) {
                        outcomes.push(PollCommit::Unchanged);
                        continue;
                    }
                    if previous.is_none() && !initial_events {
                        record.snapshot = Some(a.status.clone());
                        rooms.insert(key, encode(&record))?;
                        outcomes.push(PollCommit::Baseline);
                        continue;
                    }
                    let stored = build_events(
                        previous.as_ref(),
                        &a.status,
                        record.sequence + 1,
                        a.seen_at,
                        || event_id(self.ids.next_at(crate::outbox::ms(a.seen_at))),
                    );
                    for event in &stored {
                        let ek = event_key(&event.id).expect("our own id").to_be_bytes();
                        events.insert(&ek, webhook_body(event))?;
                        let seq = event.sequence().expect("room events have a sequence");
                        room_events.insert(room_seq_key(a.room.as_str(), seq), &ek)?;
                        record.sequence = seq;
                    }
                    // The outbox commits with the events: nothing is lost between them.
                    let plan = self.outbox.plan(state, &stored, a.seen_at);
                    outbox.apply_batch(plan.batch())?;
                    if !stored.is_empty() {
                        record.last_changed_at = Some(a.seen_at);
                    }
                    record.snapshot = Some(a.status.clone());
                    rooms.insert(key, encode(&record))?;
                    plans.push(plan);
                    outcomes.push(PollCommit::Changed(stored));
                }
                Ok((outcomes, plans))
            });
            let (outcomes, plans) =
                committed.map_err(|e: sled::transaction::TransactionError<StoreError>| {
                    StoreError::from(e)
                })?;
            for plan in plans {
                self.outbox.applied(state, plan);
            }
            // Noted under the outbox lock, as ids are given out: a flush
            // that reads this covers every smaller key.
            let largest = outcomes
                .iter()
                .filter_map(|o| match o {
                    PollCommit::Changed(events) => events.last(),
                    _ => None,
                })
                .filter_map(|e| event_key(&e.id))
                .max();
            if let Some(k) = largest {
                self.note_written(k);
                // Events must reach disk (and the stream) even when no
                // subscription queued a delivery for them.
                self.queued
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(outcomes)
        })
    }
}

/// One room's answer, on its way into [`Store::commit_polls`].
#[derive(Clone, Debug)]
pub struct PollAnswer {
    pub room: RoomId,
    pub status: RoomStatus,
    pub seen_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomId {
        RoomId::parse("math 101").unwrap()
    }

    fn live(n: u64) -> RoomStatus {
        RoomStatus {
            exists: true,
            is_active: true,
            room_id: "math 101".into(),
            title: Some("Calculus".into()),
            participant_count: Some(n),
            has_teacher: Some(true),
            is_recording: Some(false),
            created_at: Some("2024-01-15T09:00:00.000Z".into()),
            started_at: Some("2024-01-15T09:02:30.000Z".into()),
        }
    }

    #[test]
    fn baseline_then_changes_then_nothing() {
        let s = Store::temporary().unwrap();
        let now = Utc::now();
        assert_eq!(
            s.record_poll(&room(), &live(1), now, false).unwrap(),
            PollCommit::NotWatched
        );
        assert!(s.watch(&room(), now).unwrap());
        assert!(!s.watch(&room(), now).unwrap());
        assert_eq!(
            s.record_poll(&room(), &live(1), now, false).unwrap(),
            PollCommit::Baseline
        );
        assert_eq!(
            s.record_poll(&room(), &live(1), now, false).unwrap(),
            PollCommit::Unchanged
        );
        let PollCommit::Changed(events) = s.record_poll(&room(), &live(2), now, false).unwrap()
        else {
            panic!("expected a change");
        };
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].sequence(), Some(1));
        let record = s.room("math 101").unwrap().unwrap();
        assert_eq!(record.sequence, 1);
        assert_eq!(record.snapshot, Some(live(2)));
    }

    #[test]
    fn unwatch_keeps_sequence_and_rebaselines() {
        let s = Store::temporary().unwrap();
        let now = Utc::now();
        s.watch(&room(), now).unwrap();
        s.record_poll(&room(), &live(1), now, false).unwrap();
        s.record_poll(&room(), &live(2), now, false).unwrap();
        assert!(s.unwatch(&room()).unwrap());
        assert!(!s.unwatch(&room()).unwrap());
        assert!(s.watched_rooms().unwrap().is_empty());
        assert!(s.watch(&room(), now).unwrap());
        assert_eq!(
            s.record_poll(&room(), &live(9), now, false).unwrap(),
            PollCommit::Baseline
        );
        let PollCommit::Changed(events) = s.record_poll(&room(), &live(3), now, false).unwrap()
        else {
            panic!("expected a change");
        };
        assert_eq!(events[0].sequence(), Some(2));
    }

    #[test]
    fn initial_events_diff_against_nothing() {
        let s = Store::temporary().unwrap();
        s.watch(&room(), Utc::now()).unwrap();
        let PollCommit::Changed(events) =
            s.record_poll(&room(), &live(1), Utc::now(), true).unwrap()
        else {
            panic!("expected events");
        };
        let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "room.created",
                "room.started",
                "teacher.joined",
                "participants.changed"
            ]
        );
        assert!(events[0].data["previous"].is_null());
    }
}
