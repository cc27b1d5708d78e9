//! The admin CLI against a running relay: each command's happy path, its
//! `--json` output, and its errors.

use crate::receiver::Receiver;
use crate::support::*;
use serde_json::Value;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn cli(app: &TestApp, token: &str, args: &[&str]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_verriflo-relay"))
        .args(args)
        .env("RELAY_URL", &app.base)
        .env("RELAY_ADMIN_TOKEN", token)
        .output()
        .await
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn ok(app: &TestApp, args: &[&str]) -> String {
    let out = cli(app, TOKEN, args).await;
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    out.stdout
}

async fn json(app: &TestApp, args: &[&str]) -> Value {
    let mut with = args.to_vec();
    with.push("--json");
    let text = ok(app, &with).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

#[tokio::test]
async fn every_command_works_prints_json_and_reports_errors() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let rx = Receiver::spawn().await;

    // Rooms.
    assert!(ok(&app, &["rooms", "watch", "grade 7/a"])
        .await
        .contains("watching grade 7/a"));
    app.until_snapshot("grade 7/a", &not_found("grade 7/a"))
        .await;
    let table = ok(&app, &["rooms", "list"]).await;
    assert!(
        table.starts_with("ROOM") && table.contains("grade 7/a"),
        "{table}"
    );
    let rooms = json(&app, &["rooms", "list"]).await;
    assert_eq!(rooms[0]["roomId"], "grade 7/a");
    assert_eq!(
        json(&app, &["rooms", "show", "grade 7/a"]).await["health"],
        "ok"
    );

    // Subscriptions.
    let created = json(
        &app,
        &[
            "subs",
            "add",
            &rx.url,
            "--events",
            "room.*",
            "--rooms",
            "grade 7/a",
            "--description",
            "lms",
        ],
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert!(ok(&app, &["subs", "list"]).await.contains(&id));
    assert_eq!(json(&app, &["subs", "list"]).await[0]["description"], "lms");
    assert_eq!(
        json(&app, &["subs", "show", &id]).await["events"][0],
        "room.*"
    );
    assert!(ok(&app, &["subs", "disable", &id])
        .await
        .contains("disabled"));
    assert_eq!(json(&app, &["subs", "show", &id]).await["enabled"], false);
    assert!(ok(&app, &["subs", "enable", &id]).await.contains("enabled"));
    let secret = json(&app, &["subs", "secret", &id]).await["secret"].clone();
    assert_eq!(secret, created["secret"]);
    let rotated = json(&app, &["subs", "rotate", &id]).await;
    assert_ne!(rotated["secret"], secret);
    assert!(ok(&app, &["subs", "test", &id])
        .await
        .contains("test event queued"));
    eventually("the test event", || async {
        (!rx.hooks().is_empty()).then_some(())
    })
    .await;

    // Events and deliveries.
    app.apply(&up, idle("grade 7/a")).await;
    let events = json(&app, &["events", "list", "--room", "grade 7/a"]).await;
    let event_id = events["events"][0]["id"].as_str().unwrap().to_string();
    assert!(ok(&app, &["events", "list"]).await.contains("room.created"));
    assert_eq!(
        json(&app, &["events", "show", &event_id]).await["type"],
        "room.created"
    );
    let deliveries = eventually("two deliveries", || async {
        let d = json(&app, &["subs", "deliveries", &id]).await;
        (d["deliveries"].as_array().unwrap().len() == 2).then_some(d)
    })
    .await;
    assert!(ok(&app, &["subs", "deliveries", &id])
        .await
        .contains("room.created"));
    let delivery = deliveries["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Retrying a delivery that did not fail is refused with the API's reason.
    let refused = cli(&app, TOKEN, &["subs", "retry", &id, &delivery]).await;
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("only a failed one"),
        "{}",
        refused.stderr
    );
    let replay = json(
        &app,
        &["subs", "replay", &id, "--since", "2000-01-01T00:00:00Z"],
    )
    .await;
    assert_eq!(replay["queued"], 1);

    // Errors: wrong token, unknown id, bad input, unreachable relay.
    let wrong = cli(&app, "wrong-token-0123456789", &["rooms", "list"]).await;
    assert_ne!(wrong.code, 0);
    assert!(wrong.stderr.contains("bearer token"), "{}", wrong.stderr);
    let unknown = cli(&app, TOKEN, &["subs", "show", "sub_nope"]).await;
    assert_ne!(unknown.code, 0);
    assert!(
        unknown.stderr.contains("no subscription"),
        "{}",
        unknown.stderr
    );
    let unknown_room = cli(&app, TOKEN, &["rooms", "unwatch", "never"]).await;
    assert!(
        unknown_room.code != 0 && unknown_room.stderr.contains("not watched"),
        "{}",
        unknown_room.stderr
    );
    let bad = cli(&app, TOKEN, &["subs", "add", "ftp://nowhere"]).await;
    assert!(
        bad.code != 0 && bad.stderr.contains("http or https"),
        "{}",
        bad.stderr
    );

    assert!(ok(&app, &["subs", "delete", &id]).await.contains("deleted"));
    assert!(ok(&app, &["rooms", "unwatch", "grade 7/a"])
        .await
        .contains("no longer watching"));
    assert_eq!(json(&app, &["subs", "list"]).await, serde_json::json!([]));
}

#[tokio::test]
async fn an_unreachable_relay_is_a_clear_error() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_verriflo-relay"))
        .args(["rooms", "list", "--url", "http://127.0.0.1:1"])
        .env("RELAY_ADMIN_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the relay"));
    drop(app);
}
