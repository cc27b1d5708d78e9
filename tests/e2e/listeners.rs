//! The listeners under pressure and from browsers: slow and idle clients do
//! not starve the API; the public listener and CORS expose the drop-in route
//! alone.

use crate::support::*;
use reqwest::StatusCode;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
