//! Watching rooms: a scripted class, combined changes, restarts, odd room ids,
//! and the drop-in status route.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::json;
use verriflo_relay::room::RoomStatus;

#[tokio::test]
async fn a_scripted_class_yields_exactly_the_spec_events_in_order() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    up.mock.set_room(idle("quiet-1"));
    up.mock.set_room(RoomStatus {
        is_active: true,
        ..idle("quiet-2")
    });
    for room in ["math-101", "quiet-1", "quiet-2"] {
        app.watch(room).await;
    }
    app.until_snapshot("math-101", &not_found("math-101")).await;

    let created = idle("math-101");
    let started = RoomStatus {
        is_active: true,
        started_at: Some("2024-01-15T09:02:30.000Z".into()),
        ..created.clone()
    };
    let teacher = RoomStatus {
        has_teacher: Some(true),
        ..started.clone()
    };
    let recording = RoomStatus {
        is_recording: Some(true),
        ..teacher.clone()
    };
    let crowd = RoomStatus {
        participant_count: Some(12),
        ..recording.clone()
    };
    let renamed = RoomStatus {
        title: Some("Calculus I (moved)".into()),
        ..crowd.clone()
    };
    let stopped = RoomStatus {
        is_recording: Some(false),
        ..renamed.clone()
    };
    let left = RoomStatus {
        has_teacher: Some(false),
        ..stopped.clone()
    };
    let ended = RoomStatus {
        is_active: false,
        participant_count: Some(0),
        ..left.clone()
    };
    for step in [
        created, started, teacher, recording, crowd, renamed, stopped, left, ended,
    ] {
        app.apply(&up, step).await;
    }
    up.mock.remove_room("math-101");
    app.until_snapshot("math-101", &not_found("math-101")).await;

    let events = app.events("math-101").await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "room.created",
            "room.started",
            "teacher.joined",
            "recording.started",
            "participants.changed",
            "room.updated",
            "recording.stopped",
            "teacher.left",
            "room.ended",
            "participants.changed",
            "room.deleted",
        ]
    );
    let sequences: Vec<u64> = events
        .iter()
        .map(|e| e["data"]["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=11).collect::<Vec<_>>());
    assert!(events
        .iter()
        .all(|e| e["data"]["roomId"] == "math-101" && e["data"].get("inferred").is_none()));
    assert_eq!(
        events[4]["data"]["changes"]["participantCount"],
        json!({"previous": 0, "current": 12})
    );
    assert!(app.events("quiet-1").await.is_empty());
    assert!(app.events("quiet-2").await.is_empty());

    // An event is served alone by its id, exactly as listed.
    let id = events[0]["id"].as_str().unwrap();
    let (status, one) = app.get(&format!("/v1/events/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["data"], events[0]);
}

#[tokio::test]
async fn several_changes_between_two_polls_come_in_spec_order_with_inferred_flags() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let live = RoomStatus {
        is_active: true,
        has_teacher: Some(true),
        is_recording: Some(true),
        participant_count: Some(8),
        started_at: Some("2024-01-15T09:02:30.000Z".into()),
        ..idle("r")
    };
    up.mock.set_room(live.clone());
    app.watch("r").await;
    app.until_snapshot("r", &live).await;
    // One class ended and the next began between two polls: new startedAt,
    // no recording yet, a different crowd.
    let next = RoomStatus {
        started_at: Some("2024-01-15T11:00:00.000Z".into()),
        is_recording: Some(false),
        participant_count: Some(3),
        ..live.clone()
    };
    app.apply(&up, next).await;
    let events = app.events("r").await;
    let got: Vec<(String, bool)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["data"]["inferred"] == true,
            )
        })
        .collect();
    let want = [
        ("recording.stopped", false),
        ("teacher.left", true),
        ("room.ended", true),
        ("room.started", true),
        ("teacher.joined", true),
        ("participants.changed", false),
    ];
    let want: Vec<(String, bool)> = want.iter().map(|(t, i)| (t.to_string(), *i)).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn initial_events_diff_the_first_poll_against_nothing() {
    let up = spawn_upstream().await;
    let mut settings = fast_settings(&up);
    settings.push(("RELAY_INITIAL_EVENTS", "true".into()));
    let app = TestApp::spawn_with(
        settings,
        std::sync::Arc::new(tempfile::TempDir::new().unwrap()),
    )
    .await;
    let live = taught("r");
    up.mock.set_room(live.clone());
    app.watch("r").await;
    app.until_snapshot("r", &live).await;
    assert_eq!(
        app.event_types("r").await,
        ["room.created", "room.started", "teacher.joined"]
    );
}

#[tokio::test]
async fn a_restart_re_emits_nothing_and_catches_up_once() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    up.mock.set_room(idle("steady"));
    up.mock.set_room(idle("moving"));
    app.watch("steady").await;
    app.watch("moving").await;
    app.until_snapshot("steady", &idle("steady")).await;
    app.until_snapshot("moving", &idle("moving")).await;
    let live = RoomStatus {
        is_active: true,
        ..idle("moving")
    };
    app.apply(&up, live.clone()).await;
    assert_eq!(app.event_types("moving").await, ["room.started"]);

    let (settings, dir) = app.stop().await;
    // Changed while the relay was down.
    let taught = RoomStatus {
        has_teacher: Some(true),
        ..live
    };
    up.mock.set_room(taught.clone());
    let app = TestApp::spawn_with(settings, dir).await;
    app.until_snapshot("moving", &taught).await;
    let polls_before = up.mock.requests_for("steady");
    eventually("several polls after the restart", || async {
        (up.mock.requests_for("steady") >= polls_before + 5).then_some(())
    })
    .await;
    assert_eq!(
        app.event_types("moving").await,
        ["room.started", "teacher.joined"]
    );
    let seqs: Vec<u64> = app
        .events("moving")
        .await
        .iter()
        .map(|e| e["data"]["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2]);
    assert!(app.events("steady").await.is_empty());
    // The watch list itself survived.
    let (_, rooms) = app.get("/v1/rooms").await;
    assert_eq!(rooms["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn odd_room_ids_work_end_to_end() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let odd = ["math 101", "grade/7/a", "数学-101", "ü ✓ %20 ?#&"];
    for room in odd {
        up.mock.set_room(idle(room));
        app.watch(room).await;
    }
    for room in odd {
        app.until_snapshot(room, &idle(room)).await;
        app.apply(
            &up,
            RoomStatus {
                is_active: true,
                ..idle(room)
            },
        )
        .await;
        assert_eq!(app.event_types(room).await, ["room.started"], "{room}");
        assert_eq!(app.room(room).await["roomId"], room);
        // The upstream saw the id itself, not a mangled one.
        assert!(up.mock.requests_for(room) > 0, "{room}");
    }
    let (_, listed) = app.get("/v1/rooms").await;
    let mut ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["roomId"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = odd.to_vec();
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn watch_and_unwatch_take_effect_without_restart() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    up.mock.set_room(idle("r"));
    let (status, body) = app.put("/v1/rooms/r").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["data"]["watchedSince"].is_string());
    let (status, _) = app.put("/v1/rooms/r").await;
    assert_eq!(status, StatusCode::OK);
    app.until_snapshot("r", &idle("r")).await;
    app.apply(
        &up,
        RoomStatus {
            is_active: true,
            ..idle("r")
        },
    )
    .await;

    let (status, _) = app
        .request(reqwest::Method::DELETE, "/v1/rooms/r", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.get("/v1/rooms/r").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let seen = up.mock.requests_for("r");
    // Once unwatched, polls stop (at most one was already in flight).
    eventually("polls to stop", || async {
        let now = up.mock.requests_for("r");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        (up.mock.requests_for("r") == now).then_some(())
    })
    .await;
    assert!(up.mock.requests_for("r") <= seen + 1);
    // Its history stays.
    assert_eq!(app.event_types("r").await, ["room.started"]);
    let (status, _) = app
        .request(reqwest::Method::DELETE, "/v1/rooms/r", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_drop_in_status_route_answers_in_the_upstream_shape() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let live = taught("math-101");
    up.mock.set_room(live.clone());
    app.watch("math-101").await;
    app.watch("later").await;
    app.until_snapshot("math-101", &live).await;
    app.until_snapshot("later", &not_found("later")).await;

    let direct = reqwest::Client::new();
    let ask = |room: &str, org: &str| {
        direct
            .get(format!("{}/v1/room/{}/status", app.base, enc(room)))
            .header("VF-ORG-ID", org)
            .send()
    };
    let upstream_answer: serde_json::Value = direct
        .get(format!("{}/v1/room/math-101/status", up.url))
        .header("VF-ORG-ID", ORG)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let res = ask("math-101", ORG).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let ours: serde_json::Value = res.json().await.unwrap();
    assert_eq!(ours, upstream_answer);

    // A watched room the upstream has never seen: the upstream's "not found" shape.
    let ours: serde_json::Value = ask("later", ORG).await.unwrap().json().await.unwrap();
    assert_eq!(
        ours,
        json!({"success": true, "message": "Room not found", "data": {"exists": false, "isActive": false, "roomId": "later"}})
    );
    // A room this relay does not watch, and a wrong org id.
    let res = ask("never-seen", ORG).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["success"], false);
    let res = ask("math-101", "wrong-org").await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["message"],
        "Unauthorized"
    );
    // The bearer token is accepted too.
    let res = direct
        .get(format!("{}/v1/room/math-101/status", app.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Served from snapshots: asking about a room never reaches the upstream.
    assert_eq!(up.mock.requests_for("never-seen"), 0);
}
