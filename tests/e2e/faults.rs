//! Upstream faults: none is ever a room state; rooms recover; a 401 is one
//! readiness failure and one log line.

use crate::support::*;
use reqwest::StatusCode;
use std::sync::{Arc, Mutex};
use verriflo_relay::mock::{Fault, FaultKind};
use verriflo_relay::room::RoomStatus;

#[tokio::test]
async fn each_fault_yields_no_event_keeps_the_snapshot_and_recovers() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let live = taught("r");
    up.mock.set_room(live.clone());
    app.watch("r").await;
    app.until_snapshot("r", &live).await;

    let faults = [
        FaultKind::Status { status: 500 },
        FaultKind::Status { status: 503 },
        FaultKind::RateLimited { retry_after: None },
        FaultKind::Garbage,
        FaultKind::Slow { delay_ms: 1_500 },
        FaultKind::Status { status: 400 },
    ];
    for kind in faults {
        up.mock.inject(Fault {
            kind: kind.clone(),
            room_id: Some("r".into()),
            count: None,
            chance: None,
        });
        let failing = eventually(&format!("{kind:?} to show"), || async {
            let room = app.room("r").await;
            (room["consecutiveFailures"].as_u64().unwrap() >= 3).then_some(room)
        })
        .await;
        let want = if matches!(kind, FaultKind::Status { status: 400 }) {
            "invalid"
        } else {
            "failing"
        };
        assert_eq!(failing["health"], want, "{kind:?}");
        assert!(failing["lastError"].is_string());
        assert_eq!(
            failing["status"],
            serde_json::to_value(&live).unwrap(),
            "{kind:?}"
        );
        assert!(app.events("r").await.is_empty(), "{kind:?} made an event");

        up.mock.clear_faults();
        eventually(&format!("recovery from {kind:?}"), || async {
            (app.room("r").await["health"] == "ok").then_some(())
        })
        .await;
    }
    // After all that, a real change is still seen, once.
    app.apply(
        &up,
        RoomStatus {
            has_teacher: Some(false),
            ..live
        },
    )
    .await;
    assert_eq!(app.event_types("r").await, ["teacher.left"]);
}

#[tokio::test]
async fn a_vanishing_answer_during_faults_is_still_not_a_deletion() {
    // Garbage for one room must not read as "room gone" while others stay healthy.
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    up.mock.set_room(idle("a"));
    up.mock.set_room(idle("b"));
    app.watch("a").await;
    app.watch("b").await;
    app.until_snapshot("a", &idle("a")).await;
    app.until_snapshot("b", &idle("b")).await;
    up.mock.inject(Fault {
        kind: FaultKind::Garbage,
        room_id: Some("a".into()),
        count: Some(5),
        chance: None,
    });
    app.apply(
        &up,
        RoomStatus {
            is_active: true,
            ..idle("b")
        },
    )
    .await;
    eventually("the faults to be used up", || async {
        (app.room("a").await["health"] == "ok" && up.mock.requests_for("a") > 6).then_some(())
    })
    .await;
    assert!(app.events("a").await.is_empty());
    assert_eq!(app.event_types("b").await, ["room.started"]);
}

/// A writer that keeps what the logs said, for the 401 test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// A current-thread runtime: every task of the relay runs on this thread, so
// the thread's log subscriber sees all of them.
#[tokio::test(flavor = "current_thread")]
async fn a_401_fails_readiness_and_is_logged_once() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let rooms = ["a", "b", "c", "d"];
    for r in rooms {
        up.mock.set_room(idle(r));
        app.watch(r).await;
    }
    for r in rooms {
        app.until_snapshot(r, &idle(r)).await;
    }
    let ready = || async {
        app.http
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(ready().await.status(), StatusCode::OK);

    up.mock.inject(Fault {
        kind: FaultKind::Unauthorized,
        room_id: None,
        count: None,
        chance: None,
    });
    let res = eventually("readyz to fail", || async {
        let r = ready().await;
        (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(r)
    })
    .await;
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("organization id"),
        "{body}"
    );
    for r in rooms {
        assert_eq!(app.room(r).await["health"], "unauthorized");
    }
    // Let every room hit its poll time several times while rejected.
    let before = up.mock.requests();
    eventually("the slow probe to ask again", || async {
        (up.mock.requests() >= before + 2).then_some(())
    })
    .await;
    up.mock.clear_faults();
    eventually("readyz to recover", || async {
        (ready().await.status() == StatusCode::OK).then_some(())
    })
    .await;
    for r in rooms {
        eventually("rooms to be ok again", || async {
            (app.room(r).await["health"] == "ok").then_some(())
        })
        .await;
        assert!(app.events(r).await.is_empty());
    }
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let rejected = text
        .lines()
        .filter(|l| l.contains("rejects the organization id"))
        .count();
    assert_eq!(rejected, 1, "{text}");
    assert!(!text.contains(ORG), "the org id leaked into the logs");
    assert!(
        !text.contains(TOKEN),
        "the admin token leaked into the logs"
    );
}
