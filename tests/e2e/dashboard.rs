//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (`browser`). Screenshots of each step are kept in `target/ui-screenshots/`.

use crate::browser::{attacker_page, Browser, BROWSER_WAIT};
use crate::receiver::Receiver;
use crate::support::*;
use axum::http::StatusCode as AxumStatus;
use axum::response::IntoResponse;
use fantoccini::Locator;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tempfile::TempDir;

#[tokio::test]
#[ignore = "needs chromium and chromedriver: run scripts/test.sh"]
async fn an_operator_works_the_dashboard_in_a_real_browser() {
    let up = spawn_upstream().await;
    let room = "math-101";
    up.mock.set_room(idle(room));
    let quiet = ["chem-lab", "history-7b"];
    up.mock.set_room(idle(quiet[0]));
    up.mock.set_room(not_found(quiet[1]));
    let receiver = Receiver::spawn().await;
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    receiver.answer(move |_, _| {
        if flag.load(Ordering::SeqCst) {
            AxumStatus::OK.into_response()
        } else {
            AxumStatus::INTERNAL_SERVER_ERROR.into_response()
        }
    });
    let mut settings = fast_settings(&up);
    settings.push(("RELAY_POLL_INTERVAL", "200ms".into()));
    let app = TestApp::spawn_with(settings, Arc::new(TempDir::new().unwrap())).await;
    app.watch(room).await;
    for r in quiet {
        app.watch(r).await;
    }
    let (sub, _) = app.subscribe(json!({"url": receiver.url})).await;
    app.until_snapshot(room, &idle(room)).await;

    let browser = Browser::start().await;
    let b = &browser.client;

    // A wrong token: the form says so, and the route answers the API's own 401.
    b.goto(&format!("{}/ui/", app.base)).await.unwrap();
    browser
        .wait_for("#token")
        .await
        .send_keys("not-the-token")
        .await
        .unwrap();
    browser.click("#login button[type=submit]").await;
    let said = browser.text_of("#error").await;
    assert!(said.contains("Wrong token"), "{said}");
    let wrong = app
        .http
        .post(format!("{}/ui/login", app.base))
        .header("origin", &app.base)
        .json(&json!({"token": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    browser.shot("1-login").await;

    // Log in: the board shows the room; the cookie is out of the page's reach.
    let token = browser.wait_for("#token").await;
    token.clear().await.unwrap();
    token.send_keys(TOKEN).await.unwrap();
    browser.click("#login button[type=submit]").await;
    browser
        .wait_for(&format!("#rooms tr[data-room='{room}']"))
        .await;
    browser.wait_for("#live.on").await;
    assert_eq!(browser.js("return document.cookie").await, json!(""));

    // The class starts: the board shows it live without a reload.
    browser.js("window.__sameDocument = true").await;
    app.apply(&up, taught(room)).await;
    browser
        .wait_for(&format!("#rooms tr.is-live[data-room='{room}']"))
        .await;
    assert_eq!(
        browser
            .text_of(&format!("tr[data-room='{room}'] .c-teacher"))
            .await,
        "yes"
    );
    assert_eq!(
        browser.js("return window.__sameDocument === true").await,
        json!(true),
        "the page was not reloaded"
    );
    browser.shot("2-rooms-live").await;

    // The room's timeline shows the start with its changes; the tail on the
    // Events page shows the next change as it happens.
    b.goto(&format!("{}/ui/#/room/{room}", app.base))
        .await
        .unwrap();
    let started = browser.text_of(".timeline > li").await;
    assert!(started.contains("teacher.joined"), "{started}");
    b.goto(&format!("{}/ui/#/events", app.base)).await.unwrap();
    browser.wait_for("#tail").await;
    let recording = verriflo_relay::room::RoomStatus {
        is_recording: Some(true),
        ..taught(room)
    };
    app.apply(&up, recording).await;
    browser
        .client
        .wait()
        .at_most(BROWSER_WAIT)
        .for_element(Locator::XPath(
            "//ol[@id='tail']/li[contains(., 'recording.started')]",
        ))
        .await
        .expect("the change in the live tail");
    browser.shot("2b-events-tail").await;

    // Its webhooks failed (the receiver answered 500 until the schedule ran
    // out); the receiver recovers and one is retried from the Deliveries page.
    let failed = eventually("a failed delivery", || async {
        app.deliveries(&sub)
            .await
            .into_iter()
            .find(|d| d["status"] == "failed")
            .map(|d| d["id"].as_str().unwrap().to_string())
    })
    .await;
    healthy.store(true, Ordering::SeqCst);
    b.goto(&format!(
        "{}/ui/#/deliveries?sub={sub}&status=failed",
        app.base
    ))
    .await
    .unwrap();
    browser.shot("3-deliveries-failed").await;
    browser
        .click(&format!(
            "tr[data-delivery='{failed}'] button[data-action=retry]"
        ))
        .await;
    b.goto(&format!("{}/ui/#/deliveries?sub={sub}", app.base))
        .await
        .unwrap();
    browser
        .wait_for(&format!(
            "tr[data-delivery='{failed}'][data-status=succeeded]"
        ))
        .await;
    browser.shot("4-deliveries-retried").await;

    // Rotate the secret: the page shows the new one, and it is the one in force.
    b.goto(&format!("{}/ui/#/subscriptions", app.base))
        .await
        .unwrap();
    browser
        .click(&format!("tr[data-sub='{sub}'] button[data-action=rotate]"))
        .await;
    let shown = browser
        .client
        .wait()
        .at_most(BROWSER_WAIT)
        .for_element(Locator::XPath(
            "//output[contains(@class,'secret') and contains(., 'whsec_')]",
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (_, secret) = app.get(&format!("/v1/subscriptions/{sub}/secret")).await;
    let current = secret["data"]["secret"].as_str().unwrap();
    assert!(shown.contains(current), "{shown} shows {current}");
    browser.shot("5-subscriptions-rotated").await;

    // A page on another origin of the same site posts to the relay with the
    // session cookie: refused, and nothing is queued.
    let before = app.deliveries(&sub).await.len();
    let target = format!("{}/v1/subscriptions/{sub}/test", app.base);
    b.goto(&attacker_page(target).await).await.unwrap();
    let refused = eventually("the relay's answer to the cross-origin form", || async {
        let text = b.source().await.ok()?;
        text.contains("forbidden").then_some(text)
    })
    .await;
    assert!(refused.contains("cross-origin"), "{refused}");
    assert_eq!(app.deliveries(&sub).await.len(), before, "nothing queued");

    // Log out: back to the form, and the old session opens nothing.
    b.goto(&format!("{}/ui/", app.base)).await.unwrap();
    browser.click("#logout").await;
    browser.wait_for("#login").await;
    let after = browser
        .js("return fetch('/v1/rooms').then(r => r.status)")
        .await;
    assert_eq!(after, json!(401));

    // The demo's way in: a one-time link logs the browser in by itself.
    let (_, link) = app.post("/v1/dashboard/login-link", json!({})).await;
    let path = link["data"]["path"].as_str().unwrap();
    b.goto(&format!("{}{path}", app.base)).await.unwrap();
    browser
        .wait_for(&format!("#rooms tr[data-room='{room}']"))
        .await;

    browser.client.clone().close().await.unwrap();
}

/// What the dashboard reads: a subscription's figures, deliveries by status,
/// and a stream that starts at now.
#[tokio::test]
async fn stats_status_filters_and_a_stream_from_now() {
    let up = spawn_upstream().await;
    let room = "stats-room";
    up.mock.set_room(idle(room));
    let receiver = Receiver::spawn().await;
    receiver.answer(|n, _| {
        if n == 0 {
            AxumStatus::OK.into_response()
        } else {
            AxumStatus::INTERNAL_SERVER_ERROR.into_response()
        }
    });
    let app = TestApp::spawn(&up).await;
    app.watch(room).await;
    let (sub, _) = app.subscribe(json!({"url": receiver.url})).await;
    app.until_snapshot(room, &idle(room)).await;
    app.apply(&up, taught(room)).await;
    // One success; the other fails through the (short) retry schedule.
    let stats = eventually("both deliveries settled", || async {
        let (_, s) = app.get(&format!("/v1/subscriptions/{sub}/stats")).await;
        (s["data"]["recentSucceeded"] == 1 && s["data"]["recentFailed"] == 1)
            .then_some(s["data"].clone())
    })
    .await;
    assert_eq!(stats["successRate"], json!(0.5));
    assert_eq!(stats["pending"], json!(0));
    let (_, failed) = app
        .get(&format!("/v1/subscriptions/{sub}/deliveries?status=failed"))
        .await;
    let failed = failed["data"]["deliveries"].as_array().unwrap().clone();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["status"], "failed");
    let (status, _) = app
        .get(&format!("/v1/subscriptions/{sub}/deliveries?status=lost"))
        .await;
    assert_eq!(status, 400);
    let (status, _) = app.get("/v1/subscriptions/nope/stats").await;
    assert_eq!(status, 404);

    // `after=latest` skips the two stored events and sends the next one.
    // Lists are gzipped when asked; a stream never is, so it stays live.
    let listed = app
        .http
        .get(format!("{}/v1/events", app.base))
        .bearer_auth(TOKEN)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.headers()["content-encoding"], "gzip");
    let mut stream = app
        .http
        .get(format!("{}/v1/events/stream?after=latest", app.base))
        .bearer_auth(TOKEN)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(!stream.headers().contains_key("content-encoding"));
    let recording = verriflo_relay::room::RoomStatus {
        is_recording: Some(true),
        ..taught(room)
    };
    up.mock.set_room(recording);
    let first = tokio::time::timeout(DEADLINE, async {
        let mut text = String::new();
        while !text.contains("\n\n") {
            let chunk = stream.chunk().await.unwrap().expect("the stream goes on");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    })
    .await
    .expect("an event within the deadline");
    assert!(first.contains("event: recording.started"), "{first}");
}
