//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromedriver`; scripts/test.sh installs them).
//! Screenshots of each step are kept in `target/ui-screenshots/`.

use crate::receiver::Receiver;
use crate::support::*;
use axum::http::StatusCode as AxumStatus;
use axum::response::IntoResponse;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

/// Waits in the browser end here: a page update arrives through the stream
/// or a refresh of at most 15 s, so this bound holds on a busy machine.
const BROWSER_WAIT: Duration = Duration::from_secs(40);

/// chromedriver on a port it picks itself, and the browser session.
struct Browser {
    client: Client,
    _driver: Child,
    _profile: TempDir,
}

impl Browser {
    async fn start() -> Self {
        // fantoccini's TLS stack brings a second crypto provider; name one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver is installed (scripts/test.sh installs it)");
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        let port = tokio::time::timeout(DEADLINE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.split("on port ").nth(1) {
                    if let Ok(p) = rest.trim_end_matches('.').trim().parse::<u16>() {
                        if line.contains("successfully") {
                            return p;
                        }
                    }
                }
            }
            panic!("chromedriver ended before it listened");
        })
        .await
        .expect("chromedriver starts");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let profile = TempDir::new().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,860",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": "/usr/bin/chromium", "args": args}),
        );
        let client = ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        Self {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(BROWSER_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("waiting for {css}: {e}"))
    }

    /// Click, finding the element again if a refresh of the page replaced
    /// it between the find and the click.
    async fn click(&self, css: &str) {
        for _ in 0..5 {
            if self.wait_for(css).await.click().await.is_ok() {
                return;
            }
        }
        panic!("could not click {css}");
    }

    async fn text_of(&self, css: &str) -> String {
        self.wait_for(css).await.text().await.unwrap()
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }
}

/// A page on another port of the same host that submits a form to the
/// relay: same site (the cookie goes along), different origin.
async fn attacker_page(target: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let page = format!(
        "<!doctype html><form id=f method=post action=\"{target}\"></form><script>document.getElementById('f').submit()</script>"
    );
    let app = axum::Router::new().fallback(move || {
        let page = page.clone();
        async move { axum::response::Html(page) }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

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

/// The session's rules over plain HTTP, without a browser.
#[tokio::test]
async fn sessions_open_with_the_token_or_a_link_and_write_only_from_their_origin() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let http = &app.http;
    let base = &app.base;

    // Without a session the page is the login form; with one it is the app.
    let page = http.get(format!("{base}/ui/")).send().await.unwrap();
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    assert!(page.text().await.unwrap().contains("id=\"login\""));

    // The login itself must come from the relay's own origin.
    let login = |origin: &'static str| {
        let mut r = http
            .post(format!("{base}/ui/login"))
            .json(&json!({"token": TOKEN}));
        if !origin.is_empty() {
            r = r.header(
                "origin",
                if origin == "own" {
                    base.as_str()
                } else {
                    origin
                },
            );
        }
        r.send()
    };
    assert_eq!(login("").await.unwrap().status(), 403);
    assert_eq!(login("http://evil.example").await.unwrap().status(), 403);
    let ok = login("own").await.unwrap();
    assert_eq!(ok.status(), 204);
    let set = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();

    // The cookie reads; it writes only with the relay's own Origin.
    let rooms = http
        .get(format!("{base}/v1/rooms"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(rooms.status(), 200);
    let write = |origin: Option<&str>| {
        let mut r = http
            .put(format!("{base}/v1/rooms/r1"))
            .header("cookie", &cookie);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    let refused = write(None).await.unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(
        write(Some("http://127.0.0.1:1")).await.unwrap().status(),
        403
    );
    assert_eq!(
        app.get("/v1/rooms").await.1["data"],
        json!([]),
        "nothing watched"
    );
    assert_eq!(write(Some(base)).await.unwrap().status(), 201);
    let page = http
        .get(format!("{base}/ui/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(page.text().await.unwrap().contains("/ui/app.js"));

    // Logout ends the session for good.
    let out = http
        .post(format!("{base}/ui/logout"))
        .header("cookie", &cookie)
        .header("origin", base)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let after = http
        .get(format!("{base}/v1/rooms"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);

    // A one-time link opens a session once.
    let (status, link) = app.post("/v1/dashboard/login-link", json!({})).await;
    assert_eq!(status, 201);
    let path = link["data"]["path"].as_str().unwrap();
    let first = http.get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().contains_key("set-cookie"));
    let again = http.get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(again.status(), 401);
    assert!(!again.headers().contains_key("set-cookie"));
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
