//! Watched rooms, their last snapshots, and the transaction that commits a
//! poller's diffed answer, only if the room's version still holds.

use super::keys::room_seq_key;
use super::{Result, Store, StoreError};
use crate::db::{decode, encode};
use crate::diff::{diff, events_from};
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
    /// Grows by one with every write of `snapshot`: a poll commits only if
    /// the version it diffed against still holds (compare-and-set).
    #[serde(default)]
    pub version: u64,
}

impl RoomRecord {
    /// What a poller diffs its next answer against.
    pub fn base(&self) -> Base {
        Base {
            snapshot: self.snapshot.clone(),
            sequence: self.sequence,
            version: self.version,
        }
    }
}

/// The stored state a poll's answer is diffed against, and the version
/// that must still hold when its result is committed.
#[derive(Clone, Debug, PartialEq)]
pub struct Base {
    pub snapshot: Option<RoomStatus>,
    /// The last sequence used by the room's events.
    pub sequence: u64,
    pub version: u64,
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
    /// The stored snapshot moved since the poll read it (a re-watch, or
    /// another poller): nothing was written; diff again from the store.
    Stale,
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
                    version: 0,
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
                        version: r.version + 1,
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

    /// What a watched room's poll diffs against; None when not watched.
    pub fn base(&self, room: &RoomId) -> Result<Option<Base>> {
        Ok(self
            .room(room.as_str())?
            .filter(|r| r.watched_since.is_some())
            .map(|r| r.base()))
    }

    /// Diff one answer against the stored snapshot and commit it: the
    /// poller's path in one call (for tools and tests).
    pub fn record_poll(
        &self,
        room: &RoomId,
        current: &RoomStatus,
        seen_at: DateTime<Utc>,
        initial_events: bool,
    ) -> Result<PollCommit> {
        let Some(base) = self.base(room)? else {
            return Ok(PollCommit::NotWatched);
        };
        let Some(answer) = PollAnswer::diffed(room, &base, current, seen_at, initial_events) else {
            return Ok(PollCommit::Unchanged);
        };
        let mut outcomes = self.commit_polls(std::slice::from_ref(&answer))?;
        Ok(outcomes.pop().expect("one outcome per answer"))
    }

    /// Commit many rooms' diffed answers in one transaction (group commit):
    /// each room's snapshot with its events and their deliveries, each only
    /// if the room's version is still the one its answer was diffed against.
    /// Event ids are given here, under the outbox lock, so they are
    /// committed in order.
    pub fn commit_polls(&self, answers: &[PollAnswer]) -> Result<Vec<PollCommit>> {
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
                    if record.version != a.base_version {
                        outcomes.push(PollCommit::Stale);
                        continue;
                    }
                    record.version += 1;
                    let had_snapshot = record.snapshot.replace(a.status.clone()).is_some();
                    if a.changes.is_empty() {
                        // A first answer, or a change no event is about.
                        rooms.insert(key, encode(&record))?;
                        outcomes.push(match had_snapshot {
                            false => PollCommit::Baseline,
                            true => PollCommit::Changed(Vec::new()),
                        });
                        continue;
                    }
                    let stored =
                        a.events(|| event_id(self.ids.next_at(crate::outbox::ms(a.seen_at))));
                    // One room index entry for the commit: its events'
                    // keys, from the first event's sequence on.
                    let mut indexed = Vec::with_capacity(16 * stored.len());
                    for event in &stored {
                        let ek = event_key(&event.id).expect("our own id").to_be_bytes();
                        events.insert(&ek, webhook_body(event))?;
                        indexed.extend_from_slice(&ek);
                        record.sequence = event.sequence().expect("room events have a sequence");
                    }
                    let first = stored[0].sequence().expect("room events have a sequence");
                    room_events.insert(room_seq_key(a.room.as_str(), first), indexed)?;
                    // The outbox commits with the events: nothing is lost between them.
                    let plan = self.outbox.plan(state, &stored, a.seen_at);
                    outbox.apply_batch(plan.batch())?;
                    record.last_changed_at = Some(a.seen_at);
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

/// One room's diffed answer, on its way into [`Store::commit_polls`]: the
/// new snapshot, what changed (the pure diff), and the version it was
/// diffed against. Its events' bodies are built at commit, so a queue of
/// answers waiting for the committer holds a few bytes each, not bodies.
#[derive(Clone, Debug)]
pub struct PollAnswer {
    pub room: RoomId,
    pub status: RoomStatus,
    pub seen_at: DateTime<Utc>,
    pub base_version: u64,
    /// The snapshot diffed against (None before the baseline).
    pub previous: Option<RoomStatus>,
    /// The sequence of the first event.
    pub first_sequence: u64,
    /// Empty for a baseline, or a change no event is about.
    pub changes: Vec<crate::event::RoomChange>,
}

impl PollAnswer {
    /// Diff `current` against `base` with the pure diff: None when nothing
    /// is to be written (the same snapshot).
    pub fn diffed(
        room: &RoomId,
        base: &Base,
        current: &RoomStatus,
        seen_at: DateTime<Utc>,
        initial_events: bool,
    ) -> Option<Self> {
        if base.snapshot.as_ref() == Some(current) {
            return None;
        }
        let changes = if base.snapshot.is_none() && !initial_events {
            Vec::new()
        } else {
            diff(base.snapshot.as_ref(), current)
        };
        Some(Self {
            room: room.clone(),
            status: current.clone(),
            seen_at,
            base_version: base.version,
            previous: base.snapshot.clone(),
            first_sequence: base.sequence + 1,
            changes,
        })
    }

    /// The stored events of this answer, with ids from `new_id`.
    pub fn events(&self, new_id: impl FnMut() -> String) -> Vec<Event> {
        events_from(
            &self.changes,
            self.previous.as_ref(),
            &self.status,
            self.first_sequence,
            self.seen_at,
            new_id,
        )
    }
}
