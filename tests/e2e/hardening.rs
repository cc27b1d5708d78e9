//! The edges, hardened: proxies cannot carry webhooks past the SSRF guard,
//! the bearer scheme is case-insensitive, and settings that would hurt
//! later stop start-up naming the setting, never showing a secret.

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
        let created = api(
            &relay.base,
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(json!({"url": by_name})),
        )
        .await;
        assert_eq!(created["error"]["code"], "target_refused", "{created}");
        drop(relay);
    }

    // Allowed targets go straight to the receiver: the variables are ignored.
    let relay = start(&up, dir.path(), &proxy_vars(&proxy)).await;
    let created = api(
        &relay.base,
        reqwest::Method::POST,
        "/v1/subscriptions",
        Some(json!({"url": by_name})),
    )
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_slow_clients_do_not_starve_the_api() {
    let up = spawn_upstream().await;
    let mut settings = fast_settings(&up);
    settings.push(("RELAY_HEADER_TIMEOUT", "2s".into()));
    let app = TestApp::spawn_with(settings, Arc::new(tempfile::TempDir::new().unwrap())).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    // 250 connections that say nothing, 250 that stop mid-headers.
    let mut slow = Vec::new();
    for i in 0..500 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET /v1/rooms HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
        }
        slow.push(s);
    }
    let started = tokio::time::Instant::now();
    // The API keeps answering, each within a second, while they hang on.
    for _ in 0..5 {
        for path in ["/healthz", "/v1/rooms"] {
            let t = tokio::time::Instant::now();
            let (status, _) = app.get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(
                t.elapsed() < std::time::Duration::from_secs(1),
                "{path} took {:?}",
                t.elapsed()
            );
        }
    }
    // A partial request is closed by the header deadline: a read ends.
    let mut partial = slow.swap_remove(1);
    let mut buf = [0u8; 512];
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match partial.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the partial request was never closed");
    // Closed by the 2 s deadline, not by the test's own (15 s).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_public_listener_serves_only_the_drop_in_route_and_cors_is_for_it_alone() {
    let up = spawn_upstream().await;
    up.mock.set_room(idle("pub"));
    let public_port = crate::child::free_port();
    let public = format!("http://127.0.0.1:{public_port}");
    let mut settings = fast_settings(&up);
    settings.push(("RELAY_PUBLIC_LISTEN", format!("127.0.0.1:{public_port}")));
    settings.push(("RELAY_CORS_ORIGINS", "https://lms.example.com".into()));
    let app = TestApp::spawn_with(settings, Arc::new(tempfile::TempDir::new().unwrap())).await;
    app.watch("pub").await;
    app.until_snapshot("pub", &idle("pub")).await;
    let http = reqwest::Client::new();
    let drop_in = "/v1/room/pub/status";
    // The public listener: the drop-in route and health checks, nothing else.
    let got = http
        .get(format!("{public}{drop_in}"))
        .header("VF-ORG-ID", ORG)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(
        http.get(format!("{public}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    for path in [
        "/v1/rooms",
        "/v1/subscriptions",
        "/metrics",
        "/openapi.json",
    ] {
        let r = http
            .get(format!("{public}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "{path} on the public listener"
        );
    }
    let preflight = |base: String, path: &'static str, origin: &'static str| {
        let http = http.clone();
        async move {
            http.request(reqwest::Method::OPTIONS, format!("{base}{path}"))
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "GET")
                .header("Access-Control-Request-Headers", "vf-org-id")
                .send()
                .await
                .unwrap()
        }
    };
    // A preflight from an allowed origin to the drop-in route is answered, on both listeners.
    for base in [public.clone(), app.base.clone()] {
        let r = preflight(base.clone(), drop_in, "https://lms.example.com").await;
        assert!(
            r.status().is_success(),
            "{base} (public {public}): {}",
            r.status()
        );
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://lms.example.com"
        );
        let r = preflight(base.clone(), drop_in, "https://evil.example.com").await;
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{base}"
        );
    }
    // Admin routes never send CORS headers.
    let r = preflight(app.base.clone(), "/v1/rooms", "https://lms.example.com").await;
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = http
        .get(format!("{}/v1/rooms", app.base))
        .bearer_auth(TOKEN)
        .header("Origin", "https://lms.example.com")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // A simple GET from the allowed origin gets the header it needs.
    let r = http
        .get(format!("{public}{drop_in}"))
        .header("VF-ORG-ID", ORG)
        .header("Origin", "https://lms.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://lms.example.com"
    );
}

#[tokio::test]
async fn without_cors_origins_a_browser_preflight_gets_no_permission() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let r = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/room/x/status", app.base),
        )
        .header("Origin", "https://lms.example.com")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}
