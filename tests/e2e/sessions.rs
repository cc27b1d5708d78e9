//! The dashboard's sessions over HTTP: opened with the token or a link,
//! and writing only from the relay's own origin.

use crate::support::*;
use serde_json::{json, Value};

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
