//! The edges, hardened: proxies cannot carry webhooks past the SSRF guard,
//! the bearer scheme is case-insensitive, settings that would hurt later
//! stop start-up, admin writes survive a crash, and concurrent admin calls
//! keep the rooms and caps consistent.

use crate::child::{api, start};
use crate::receiver::Receiver;
use crate::support::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A stand-in HTTP proxy: counts connections and answers 200 to anything.
async fn spawn_proxy() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (url, seen)
}

fn proxy_vars(proxy: &str) -> Vec<(&'static str, String)> {
    [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .into_iter()
    .map(|k| (k, proxy.to_string()))
    .collect()
}

async fn subscribe(base: &str, url: &str) -> Value {
    let body = json!({ "url": url });
    api(base, reqwest::Method::POST, "/v1/subscriptions", Some(body)).await
}

async fn send_test(base: &str, sub: &str) {
    let path = format!("/v1/subscriptions/{sub}/test");
    api(base, reqwest::Method::POST, &path, None).await;
}

/// Attempts of `sub` that the SSRF guard refused.
async fn refused_attempts(base: &str, sub: &str) -> usize {
    deliveries(base, sub)
        .await
        .iter()
        .flat_map(|d| d["attempts"].as_array().cloned().unwrap_or_default())
        .filter(|a| {
            a["error"]
                .as_str()
                .is_some_and(|e| e.contains("refused") || e.contains("private"))
        })
        .count()
}

async fn deliveries(base: &str, sub: &str) -> Vec<Value> {
    let v = api(
        base,
        reqwest::Method::GET,
        &format!("/v1/subscriptions/{sub}/deliveries"),
        None,
    )
    .await;
    v["data"]["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn proxy_variables_never_carry_a_webhook_past_the_guard() {
    let up = spawn_upstream().await;
    let (proxy, seen) = spawn_proxy().await;
    let rx = Receiver::spawn().await;
    let port = rx
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let by_name = format!("http://localhost:{port}/hook");
    let dir = tempfile::TempDir::new().unwrap();
    let strict = ("RELAY_ALLOW_PRIVATE_TARGETS", "false".to_string());

    // Strict mode refuses a name that resolves to loopback, proxy or not.
    for with_proxy in [false, true] {
        let mut settings = vec![strict.clone()];
        if with_proxy {
            settings.extend(proxy_vars(&proxy));
        }
        let relay = start(&up, dir.path(), &settings).await;
        let created = subscribe(&relay.base, &by_name).await;
        assert_eq!(created["error"]["code"], "target_refused", "{created}");
        drop(relay);
    }

    // Allowed targets go straight to the receiver: the variables are ignored.
    let relay = start(&up, dir.path(), &proxy_vars(&proxy)).await;
    let created = subscribe(&relay.base, &by_name).await;
    let sub = created["data"]["id"].as_str().unwrap().to_string();
    send_test(&relay.base, &sub).await;
    eventually("the test webhook", || async {
        (!rx.hooks().is_empty()).then_some(())
    })
    .await;
    drop(relay);

    // The subscription stored back then, now in strict mode with the
    // variables set: the attempt is refused and nothing reaches the proxy.
    let mut settings = vec![strict.clone()];
    settings.extend(proxy_vars(&proxy));
    let relay = start(&up, dir.path(), &settings).await;
    send_test(&relay.base, &sub).await;
    eventually("the refused attempt", || async {
        (refused_attempts(&relay.base, &sub).await >= 1).then_some(())
    })
    .await;
    assert_eq!(rx.hooks().len(), 1, "nothing more reached the receiver");
    assert_eq!(seen.load(Ordering::SeqCst), 0, "nothing reached the proxy");
    drop(relay);

    // An explicit webhook proxy still checks every target first...
    let mut settings = vec![strict, ("RELAY_WEBHOOK_PROXY", proxy.clone())];
    settings.extend(proxy_vars(&proxy));
    let relay = start(&up, dir.path(), &settings).await;
    send_test(&relay.base, &sub).await;
    eventually("a second refused attempt", || async {
        (refused_attempts(&relay.base, &sub).await >= 2).then_some(())
    })
    .await;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "a refused target never reaches the proxy"
    );
    drop(relay);

    // ...and carries what is allowed.
    let settings = vec![("RELAY_WEBHOOK_PROXY", proxy.clone())];
    let relay = start(&up, dir.path(), &settings).await;
    send_test(&relay.base, &sub).await;
    eventually("the proxy to carry a webhook", || async {
        (seen.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    assert_eq!(
        rx.hooks().len(),
        1,
        "it went through the proxy, not around it"
    );
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    for (header, want) in [
        (format!("Bearer {TOKEN}"), StatusCode::OK),
        (format!("bearer {TOKEN}"), StatusCode::OK),
        (format!("BEARER  {TOKEN}"), StatusCode::OK),
        (format!("Basic {TOKEN}"), StatusCode::UNAUTHORIZED),
        (format!("Bearer {TOKEN}x"), StatusCode::UNAUTHORIZED),
        (TOKEN.to_string(), StatusCode::UNAUTHORIZED),
    ] {
        let status = app
            .http
            .get(format!("{}/v1/rooms", app.base))
            .header("authorization", header.clone())
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, want, "{header}");
    }
}

#[test]
fn settings_that_would_hurt_stop_start_up_without_showing_secrets() {
    for (k, v, secret) in [
        ("RELAY_RETRY_SCHEDULE", "5s,400000years", ""),
        ("RELAY_DELIVERY_TIMEOUT", "20years", ""),
        ("VERRIFLO_ORG_ID", "org\u{e9}", "org\u{e9}"),
        (
            "VERRIFLO_API_URL",
            "https://me:hunter2@api.example.com",
            "hunter2",
        ),
        ("RELAY_ADMIN_TOKEN", "tooshort", "tooshort"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_verriflo-relay"))
            .arg("serve")
            .env("VERRIFLO_ORG_ID", ORG)
            .env("RELAY_ADMIN_TOKEN", TOKEN)
            .env("RELAY_DATA_DIR", tempfile::TempDir::new().unwrap().path())
            .env(k, v)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{k}: {text}");
        assert!(text.contains(k), "{k}: {text}");
        if !secret.is_empty() {
            assert!(!text.contains(secret), "{k} shows its value: {text}");
        }
    }
}

#[tokio::test]
async fn admin_writes_survive_a_sigkill_right_after_the_2xx() {
    let up = spawn_upstream().await;
    let dir = tempfile::TempDir::new().unwrap();
    let mut expected: Vec<(String, String, String)> = Vec::new();
    for i in 0..8 {
        let mut relay = start(&up, dir.path(), &[]).await;
        // Everything acknowledged before this kill must still be there.
        for (sub, secret, room) in &expected {
            let got = api(
                &relay.base,
                reqwest::Method::GET,
                &format!("/v1/subscriptions/{sub}/secret"),
                None,
            )
            .await;
            assert_eq!(got["data"]["secret"], secret.as_str(), "round {i}: {sub}");
            let r = api(
                &relay.base,
                reqwest::Method::GET,
                &format!("/v1/rooms/{room}"),
                None,
            )
            .await;
            assert_eq!(r["success"], true, "round {i}: room {room} was watched");
        }
        let room = format!("kept-{i}");
        let created = api(
            &relay.base,
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(json!({"url": "http://127.0.0.1:9/hook", "rooms": [room]})),
        )
        .await;
        let sub = created["data"]["id"].as_str().unwrap().to_string();
        let rotated = api(
            &relay.base,
            reqwest::Method::POST,
            &format!("/v1/subscriptions/{sub}/rotate-secret"),
            None,
        )
        .await;
        let secret = rotated["data"]["secret"].as_str().unwrap().to_string();
        relay.child.kill().expect("SIGKILL");
        relay.child.wait().unwrap();
        expected.push((sub, secret, room));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admin_calls_keep_every_watched_room_polled_and_the_caps() {
    let up = spawn_upstream().await;
    let mut settings = fast_settings(&up);
    settings.push(("RELAY_MAX_ROOMS", "6".into()));
    settings.push(("RELAY_MAX_SUBSCRIPTIONS", "3".into()));
    let app =
        Arc::new(TestApp::spawn_with(settings, Arc::new(tempfile::TempDir::new().unwrap())).await);
    let rooms: Vec<String> = (0..4).map(|i| format!("race-{i}")).collect();
    for r in &rooms {
        up.mock.set_room(idle(r));
    }
    // PUT and DELETE of the same rooms, hammered at once.
    let mut calls = Vec::new();
    for k in 0..200 {
        let (app, room) = (app.clone(), rooms[k % rooms.len()].clone());
        calls.push(tokio::spawn(async move {
            let method = if k % 3 == 0 {
                reqwest::Method::DELETE
            } else {
                reqwest::Method::PUT
            };
            app.request(method, &format!("/v1/rooms/{room}"), None)
                .await
                .0
        }));
    }
    for c in calls {
        let status = c.await.unwrap();
        assert!(
            status.is_success() || status == StatusCode::NOT_FOUND,
            "{status}"
        );
    }
    // Every room the API says is watched is being polled.
    let (_, listed) = app.get("/v1/rooms").await;
    let watched: Vec<String> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["roomId"].as_str().unwrap().to_string())
        .collect();
    for r in &watched {
        let before = up.mock.requests_for(r);
        eventually(&format!("{r} to be polled"), || async {
            (up.mock.requests_for(r) > before + 2).then_some(())
        })
        .await;
    }
    // The caps hold under concurrent creation too.
    let mut calls = Vec::new();
    for k in 0..30 {
        let a = app.clone();
        calls.push(tokio::spawn(async move {
            a.request(reqwest::Method::PUT, &format!("/v1/rooms/cap-{k}"), None)
                .await
                .0
        }));
        let a = app.clone();
        calls.push(tokio::spawn(async move {
            a.request(
                reqwest::Method::POST,
                "/v1/subscriptions",
                Some(json!({"url": "http://127.0.0.1:9/hook"})),
            )
            .await
            .0
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
    let (_, listed) = app.get("/v1/rooms").await;
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        6,
        "RELAY_MAX_ROOMS holds"
    );
    let (_, subs) = app.get("/v1/subscriptions").await;
    assert_eq!(
        subs["data"].as_array().unwrap().len(),
        3,
        "RELAY_MAX_SUBSCRIPTIONS holds"
    );
}
