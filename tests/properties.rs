//! Properties of watching rooms, for any sequence of upstream answers (some
//! of them failures): events are balanced, replaying them reproduces the last
//! answer's flags, sequences are contiguous, and failures change nothing.

use chrono::Utc;
use proptest::prelude::*;
use verriflo_relay::event::{Event, EventType};
use verriflo_relay::room::{RoomId, RoomStatus};
use verriflo_relay::store::{EventFilter, Store};
use verriflo_relay::upstream::parse_body;

const ROOM: &str = "prop-room";

/// One answer the upstream could give: a documented one, or garbage.
#[derive(Clone, Debug)]
enum Answer {
    Ok(RoomStatus),
    Garbage(Vec<u8>),
}

fn status() -> impl Strategy<Value = RoomStatus> {
    let pick = |a: &'static str, b: &'static str| {
        prop_oneof![
            Just(None),
            Just(Some(a.to_string())),
            Just(Some(b.to_string()))
        ]
    };
    (
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0u64..4),
        pick("Algebra", "Geometry"),
        pick("2024-01-01T00:00:00.000Z", "2024-02-01T00:00:00.000Z"),
        pick("2024-01-01T09:00:00.000Z", "2024-01-01T11:00:00.000Z"),
    )
        .prop_map(
            |(exists, active, teacher, rec, n, title, created, started)| {
                if !exists {
                    return RoomStatus::not_found(ROOM);
                }
                RoomStatus {
                    exists,
                    is_active: active,
                    room_id: ROOM.into(),
                    title,
                    participant_count: n,
                    has_teacher: teacher,
                    is_recording: rec,
                    created_at: created,
                    started_at: started,
                }
            },
        )
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        4 => status().prop_map(Answer::Ok),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Answer::Garbage),
    ]
}

fn body(a: &Answer) -> Vec<u8> {
    match a {
        Answer::Ok(s) => {
            serde_json::to_vec(&serde_json::json!({"success": true, "message": "x", "data": s}))
                .unwrap()
        }
        Answer::Garbage(bytes) => bytes.clone(),
    }
}

/// Feed answers through the real parser and store, as the poller does.
fn run(answers: &[Answer]) -> (Vec<Event>, Option<RoomStatus>) {
    let store = Store::temporary().unwrap();
    let room = RoomId::parse(ROOM).unwrap();
    store.watch(&room, Utc::now()).unwrap();
    for a in answers {
        // A failed poll never reaches the store.
        if let Ok(status) = parse_body(&room, &body(a)) {
            store
                .record_poll(&room, &status, Utc::now(), false)
                .unwrap();
        }
    }
    let filter = EventFilter {
        room: Some(ROOM.into()),
        limit: 1000,
        ..Default::default()
    };
    let events = store.list_events(&filter).unwrap().events;
    let last = store.room(ROOM).unwrap().and_then(|r| r.snapshot);
    (events, last)
}

/// The flags events are about, as `diff` resolves them.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Flags {
    exists: bool,
    active: bool,
    teacher: bool,
    recording: bool,
}

fn flags(s: &RoomStatus) -> Flags {
    let active = s.exists && s.is_active;
    Flags {
        exists: s.exists,
        active,
        teacher: active && s.has_teacher.unwrap_or(false),
        recording: active && s.is_recording.unwrap_or(false),
    }
}

/// Apply one event to the flags, failing if it is unbalanced.
fn apply(f: &mut Flags, e: &Event) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{} {why} in {f:?}", e.kind));
    match e.kind {
        EventType::RecordingStopped if f.recording => f.recording = false,
        EventType::TeacherLeft if f.teacher => f.teacher = false,
        EventType::RoomEnded if f.active && !f.teacher && !f.recording => f.active = false,
        EventType::RoomDeleted if f.exists && !f.active => f.exists = false,
        EventType::RoomCreated if !f.exists => f.exists = true,
        EventType::RoomStarted if f.exists && !f.active => f.active = true,
        EventType::TeacherJoined if f.active && !f.teacher => f.teacher = true,
        EventType::RecordingStarted if f.active && !f.recording => f.recording = true,
        EventType::ParticipantsChanged => {}
        EventType::RoomUpdated if f.exists => {}
        _ => return bad("is not balanced"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn events_are_balanced_replayable_contiguous_and_failures_change_nothing(
        answers in proptest::collection::vec(answer(), 1..40)
    ) {
        let (events, last) = run(&answers);

        // Contiguous sequences.
        let seqs: Vec<u64> = events.iter().map(|e| e.sequence().unwrap()).collect();
        prop_assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());

        // Balanced, and replaying from the baseline reproduces each poll's flags.
        let baseline = answers.iter().find_map(|a| match a {
            Answer::Ok(s) => Some(s.clone()),
            Answer::Garbage(_) => None,
        });
        if let Some(base) = baseline {
            let mut f = flags(&base);
            for e in &events {
                apply(&mut f, e).map_err(TestCaseError::fail)?;
            }
            prop_assert_eq!(f, flags(last.as_ref().unwrap()));
        } else {
            prop_assert!(events.is_empty());
        }

        // The same answers without the failures give the same events.
        let clean: Vec<Answer> = answers.iter().filter(|a| matches!(a, Answer::Ok(_))).cloned().collect();
        let (clean_events, clean_last) = run(&clean);
        let kinds = |es: &[Event]| es.iter().map(|e| (e.kind, e.data.to_value()["current"].clone())).collect::<Vec<_>>();
        prop_assert_eq!(kinds(&events), kinds(&clean_events));
        prop_assert_eq!(last, clean_last);
    }

    #[test]
    fn the_parser_takes_any_bytes_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let room = RoomId::parse(ROOM).unwrap();
        let _ = parse_body(&room, &bytes);
    }

    #[test]
    fn the_parser_takes_any_json_without_panicking(v in json_value()) {
        let room = RoomId::parse(ROOM).unwrap();
        let wrapped = serde_json::json!({"success": true, "data": v});
        let _ = parse_body(&room, wrapped.to_string().as_bytes());
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-zA-Z]{0,8}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from(ROOM)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("exists".to_string()),
                    Just("isActive".to_string()),
                    Just("roomId".to_string()),
                    Just("participantCount".to_string()),
                    Just("hasTeacher".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
