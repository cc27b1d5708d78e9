//! Unit tests of the pure diff: every row of SPEC's table, combinations, order.

use super::*;
use crate::event::EventType::{self, *};
use crate::room::RoomStatus;
use serde_json::json;

fn gone() -> RoomStatus {
    RoomStatus::not_found("r")
}

fn idle() -> RoomStatus {
    RoomStatus {
        exists: true,
        is_active: false,
        room_id: "r".into(),
        title: Some("Calculus".into()),
        participant_count: Some(0),
        has_teacher: Some(false),
        is_recording: Some(false),
        created_at: Some("2024-01-15T09:00:00.000Z".into()),
        started_at: None,
    }
}

fn live() -> RoomStatus {
    RoomStatus {
        is_active: true,
        started_at: Some("2024-01-15T09:02:30.000Z".into()),
        ..idle()
    }
}

fn full() -> RoomStatus {
    RoomStatus {
        has_teacher: Some(true),
        is_recording: Some(true),
        participant_count: Some(12),
        ..live()
    }
}

fn kinds(prev: Option<&RoomStatus>, cur: &RoomStatus) -> Vec<(EventType, bool)> {
    diff(prev, cur)
        .into_iter()
        .map(|c| (c.kind, c.inferred))
        .collect()
}

fn seen(ks: &[EventType]) -> Vec<(EventType, bool)> {
    ks.iter().map(|k| (*k, false)).collect()
}

#[test]
fn unchanged_answer_emits_nothing() {
    for s in [gone(), idle(), live(), full()] {
        assert!(diff(Some(&s), &s).is_empty());
    }
}

#[test]
fn each_row_of_the_table() {
    let rec = RoomStatus {
        is_recording: Some(true),
        ..live()
    };
    let teach = RoomStatus {
        has_teacher: Some(true),
        ..live()
    };
    assert_eq!(kinds(Some(&rec), &live()), seen(&[RecordingStopped]));
    assert_eq!(kinds(Some(&live()), &rec), seen(&[RecordingStarted]));
    assert_eq!(kinds(Some(&teach), &live()), seen(&[TeacherLeft]));
    assert_eq!(kinds(Some(&live()), &teach), seen(&[TeacherJoined]));
    assert_eq!(kinds(Some(&live()), &idle()), seen(&[RoomEnded]));
    assert_eq!(kinds(Some(&idle()), &live()), seen(&[RoomStarted]));
    assert_eq!(kinds(Some(&idle()), &gone()), seen(&[RoomDeleted]));
    assert_eq!(kinds(Some(&gone()), &idle()), seen(&[RoomCreated]));
    let more = RoomStatus {
        participant_count: Some(3),
        ..live()
    };
    assert_eq!(kinds(Some(&live()), &more), seen(&[ParticipantsChanged]));
    let renamed = RoomStatus {
        title: Some("Algebra".into()),
        ..idle()
    };
    assert_eq!(kinds(Some(&idle()), &renamed), seen(&[RoomUpdated]));
}

#[test]
fn no_snapshot_counts_as_room_not_existing() {
    assert_eq!(
        kinds(None, &full()),
        seen(&[
            RoomCreated,
            RoomStarted,
            TeacherJoined,
            RecordingStarted,
            ParticipantsChanged
        ])
    );
    assert!(diff(None, &gone()).is_empty());
}

#[test]
fn ending_closes_teacher_and_recording_first() {
    assert_eq!(
        kinds(Some(&full()), &idle()),
        seen(&[
            RecordingStopped,
            TeacherLeft,
            RoomEnded,
            ParticipantsChanged
        ])
    );
}

#[test]
fn vanishing_closes_everything_and_counts_zero() {
    assert_eq!(
        kinds(Some(&full()), &gone()),
        seen(&[
            RecordingStopped,
            TeacherLeft,
            RoomEnded,
            RoomDeleted,
            ParticipantsChanged
        ])
    );
}

#[test]
fn appearing_live_opens_in_order() {
    assert_eq!(
        kinds(Some(&gone()), &full()),
        seen(&[
            RoomCreated,
            RoomStarted,
            TeacherJoined,
            RecordingStarted,
            ParticipantsChanged
        ])
    );
}

#[test]
fn new_started_at_is_an_inferred_end_and_start() {
    let next = RoomStatus {
        started_at: Some("2024-01-15T11:00:00.000Z".into()),
        ..full()
    };
    assert_eq!(
        kinds(Some(&full()), &next),
        vec![
            (RecordingStopped, true),
            (TeacherLeft, true),
            (RoomEnded, true),
            (RoomStarted, true),
            (TeacherJoined, true),
            (RecordingStarted, true),
        ]
    );
}

#[test]
fn new_session_without_teacher_only_closes_what_was_open() {
    let next = RoomStatus {
        started_at: Some("2024-01-15T11:00:00.000Z".into()),
        has_teacher: Some(false),
        is_recording: Some(false),
        participant_count: Some(1),
        ..full()
    };
    assert_eq!(
        kinds(Some(&full()), &next),
        vec![
            (RecordingStopped, false),
            (TeacherLeft, false),
            (RoomEnded, true),
            (RoomStarted, true),
            (ParticipantsChanged, false),
        ]
    );
}

#[test]
fn new_created_at_is_an_inferred_delete_and_create() {
    let reborn = RoomStatus {
        created_at: Some("2024-02-01T00:00:00.000Z".into()),
        title: Some("Another".into()),
        ..idle()
    };
    // A different title on a re-created room is its creation, not an update.
    assert_eq!(
        kinds(Some(&idle()), &reborn),
        vec![(RoomDeleted, true), (RoomCreated, true)]
    );
    let reborn_live = RoomStatus {
        created_at: Some("2024-02-01T00:00:00.000Z".into()),
        ..full()
    };
    assert_eq!(
        kinds(Some(&full()), &reborn_live),
        vec![
            (RecordingStopped, true),
            (TeacherLeft, true),
            (RoomEnded, true),
            (RoomDeleted, true),
            (RoomCreated, true),
            (RoomStarted, true),
            (TeacherJoined, true),
            (RecordingStarted, true),
        ]
    );
}

#[test]
fn missing_timestamps_prove_nothing() {
    let no_start = RoomStatus {
        started_at: None,
        ..full()
    };
    assert!(diff(Some(&full()), &no_start).is_empty());
    assert!(diff(Some(&no_start), &full()).is_empty());
}

#[test]
fn flags_outside_a_session_are_ignored() {
    // A teacher flag on a room that is not live is not a session of its own.
    let odd = RoomStatus {
        has_teacher: Some(true),
        is_recording: Some(true),
        ..idle()
    };
    assert!(diff(Some(&idle()), &odd).is_empty());
    assert_eq!(
        kinds(Some(&odd), &full()),
        seen(&[
            RoomStarted,
            TeacherJoined,
            RecordingStarted,
            ParticipantsChanged
        ])
    );
}

#[test]
fn several_changes_come_in_table_order() {
    let prev = RoomStatus {
        has_teacher: Some(true),
        ..live()
    };
    let cur = RoomStatus {
        has_teacher: Some(false),
        is_recording: Some(true),
        participant_count: Some(5),
        title: Some("Renamed".into()),
        ..live()
    };
    assert_eq!(
        kinds(Some(&prev), &cur),
        seen(&[
            TeacherLeft,
            RecordingStarted,
            ParticipantsChanged,
            RoomUpdated
        ])
    );
}

#[test]
fn build_events_numbers_and_describes() {
    let mut n = 0;
    let events = build_events(Some(&idle()), &full(), 7, Utc::now(), || {
        n += 1;
        format!("evt_{n}")
    });
    let seqs: Vec<u64> = events.iter().map(|e| e.sequence().unwrap()).collect();
    assert_eq!(seqs, vec![7, 8, 9, 10]);
    assert_eq!(events[0].id, "evt_1");
    let data = &events[0].data.to_value();
    assert_eq!(data["roomId"], "r");
    assert_eq!(data["previous"]["isActive"], false);
    assert_eq!(data["current"]["isActive"], true);
    assert_eq!(
        data["changes"]["isActive"],
        json!({"previous": false, "current": true})
    );
    assert!(data["changes"].get("title").is_none());
    assert!(data.get("inferred").is_none());
}

#[test]
fn changes_cover_added_and_removed_fields() {
    let c = Changes::between(Some(&idle()), &gone());
    let c = serde_json::to_value(c).unwrap();
    assert_eq!(c["exists"], json!({"previous": true, "current": false}));
    assert_eq!(c["title"], json!({"previous": "Calculus", "current": null}));
    assert!(c.get("roomId").is_none());
}

#[test]
fn a_room_event_body_is_byte_for_byte_spec_order() {
    let at = "2024-01-15T09:02:31Z".parse().unwrap();
    let events = build_events(Some(&idle()), &live(), 3, at, || "evt_1".into());
    let body = String::from_utf8(crate::event::webhook_body(&events[0])).unwrap();
    let snapshot = |active: bool, started: &str| {
        format!(
            r#"{{"exists":true,"isActive":{active},"roomId":"r","title":"Calculus","participantCount":0,"hasTeacher":false,"isRecording":false,"createdAt":"2024-01-15T09:00:00.000Z"{started}}}"#
        )
    };
    let expected = format!(
        r#"{{"type":"room.started","timestamp":"2024-01-15T09:02:31Z","data":{{"roomId":"r","sequence":3,"previous":{},"current":{},"changes":{{"isActive":{{"previous":false,"current":true}},"startedAt":{{"previous":null,"current":"2024-01-15T09:02:30.000Z"}}}}}}}}"#,
        snapshot(false, ""),
        snapshot(true, r#","startedAt":"2024-01-15T09:02:30.000Z""#),
    );
    assert_eq!(body, expected);
    // And it reads back as the same event.
    let back = crate::event::Event::from_body("evt_1".into(), body.as_bytes()).unwrap();
    assert_eq!(back, events[0]);
}
