//! The pure diff: two snapshots of one room in, SPEC's events out, in order.

use crate::changes::Changes;
use crate::event::{Event, EventData, EventType, RoomChange, RoomEventData};
use crate::room::RoomStatus;
use chrono::{DateTime, Utc};

/// The facts about a room that events are about, with absent fields resolved.
/// Teacher and recording belong to a live session: a room that is not active
/// has neither, so every session's events stay balanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View<'a> {
    exists: bool,
    active: bool,
    teacher: bool,
    recording: bool,
    participants: u64,
    title: Option<&'a str>,
    created_at: Option<&'a str>,
    started_at: Option<&'a str>,
}

impl<'a> View<'a> {
    const GONE: View<'static> = View {
        exists: false,
        active: false,
        teacher: false,
        recording: false,
        participants: 0,
        title: None,
        created_at: None,
        started_at: None,
    };

    fn of(status: Option<&'a RoomStatus>) -> Self {
        let Some(s) = status.filter(|s| s.exists) else {
            return View::GONE;
        };
        let active = s.is_active;
        View {
            exists: true,
            active,
            teacher: active && s.has_teacher.unwrap_or(false),
            recording: active && s.is_recording.unwrap_or(false),
            participants: s.participant_count.unwrap_or(0),
            title: s.title.as_deref(),
            created_at: s.created_at.as_deref(),
            started_at: s.started_at.as_deref(),
        }
    }
}

/// Both known and different: an absent timestamp proves nothing.
fn moved(a: Option<&str>, b: Option<&str>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a != b)
}

/// The events between `previous` (None: the room did not exist) and `current`.
pub fn diff(previous: Option<&RoomStatus>, current: &RoomStatus) -> Vec<RoomChange> {
    let p = View::of(previous);
    let c = View::of(Some(current));
    // The room was deleted and re-created between two polls.
    let reborn = p.exists && c.exists && moved(p.created_at, c.created_at);
    // One class ended and another began between two polls.
    let new_session = p.active && c.active && (reborn || moved(p.started_at, c.started_at));

    let mut out = Vec::new();
    let mut push = |kind, seen: bool, happened: bool| {
        if seen || happened {
            // `seen`: visible in the flags; otherwise only the break implies it.
            out.push(RoomChange {
                kind,
                inferred: !seen,
            });
        }
    };
    use EventType::*;
    // What closed.
    push(
        RecordingStopped,
        p.recording && !c.recording,
        p.recording && new_session,
    );
    push(
        TeacherLeft,
        p.teacher && !c.teacher,
        p.teacher && new_session,
    );
    push(RoomEnded, p.active && !c.active, new_session);
    push(RoomDeleted, p.exists && !c.exists, reborn);
    // What opened.
    push(RoomCreated, !p.exists && c.exists, reborn);
    push(RoomStarted, !p.active && c.active, new_session);
    push(
        TeacherJoined,
        !p.teacher && c.teacher,
        c.teacher && new_session,
    );
    push(
        RecordingStarted,
        !p.recording && c.recording,
        c.recording && new_session,
    );
    // Counts and titles.
    push(ParticipantsChanged, p.participants != c.participants, false);
    push(
        RoomUpdated,
        p.exists && c.exists && !reborn && p.title != c.title,
        false,
    );
    out
}

/// Turn one poll's diff into stored events, numbering them from `next_sequence`.
pub fn build_events(
    previous: Option<&RoomStatus>,
    current: &RoomStatus,
    next_sequence: u64,
    seen_at: DateTime<Utc>,
    new_id: impl FnMut() -> String,
) -> Vec<Event> {
    let changes = diff(previous, current);
    events_from(&changes, previous, current, next_sequence, seen_at, new_id)
}

/// The stored events of a diff already made: each with its sequence, its
/// id, and the snapshots and changed fields its body describes.
pub fn events_from(
    changes: &[RoomChange],
    previous: Option<&RoomStatus>,
    current: &RoomStatus,
    next_sequence: u64,
    seen_at: DateTime<Utc>,
    mut new_id: impl FnMut() -> String,
) -> Vec<Event> {
    if changes.is_empty() {
        return Vec::new();
    }
    let fields = Changes::between(previous, current);
    changes
        .iter()
        .zip(next_sequence..)
        .map(|(change, sequence)| {
            let data = RoomEventData {
                room_id: current.room_id.clone(),
                sequence,
                previous: previous.cloned(),
                current: current.clone(),
                changes: fields.clone(),
                inferred: change.inferred,
            };
            Event {
                id: new_id(),
                kind: change.kind,
                timestamp: seen_at,
                data: EventData::Room(Box::new(data)),
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
