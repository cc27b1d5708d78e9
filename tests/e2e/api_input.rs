//! Bad admin input: the error envelope with an honest status, never a 5xx, a
//! panic, or a change in stored state.

use crate::support::*;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn bad_requests_get_the_envelope_and_change_nothing() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    up.mock.set_room(idle("r"));
    app.watch("r").await;
    app.until_snapshot("r", &idle("r")).await;
    let (_, before) = app.get("/v1/rooms").await;

    let raw = |method: Method, path: String, token: Option<&str>| {
        let mut req = app.http.request(method, format!("{}{}", app.base, path));
        if let Some(t) = token {
            req = req.header("authorization", t);
        }
        req.send()
    };
    let long_id = "x".repeat(10_000);
    let cases = [
        (
            Method::GET,
            "/v1/rooms".to_string(),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/v1/rooms".to_string(),
            Some("Bearer wrong-token-0123456789".to_string()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::PUT,
            "/v1/rooms/new".to_string(),
            Some(format!("Basic {TOKEN}")),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::PUT,
            "/v1/rooms/new".to_string(),
            Some("Bearer ".to_string()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/v1/nope".to_string(),
            Some(format!("Bearer {TOKEN}")),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/nope".to_string(),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PUT,
            format!("/v1/rooms/{long_id}"),
            Some(format!("Bearer {TOKEN}")),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/v1/rooms/a%0Ab".to_string(),
            Some(format!("Bearer {TOKEN}")),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/v1/rooms/%FF%FE".to_string(),
            Some(format!("Bearer {TOKEN}")),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PATCH,
            "/v1/rooms/r".to_string(),
            Some(format!("Bearer {TOKEN}")),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::GET,
            "/v1/events?limit=abc".to_string(),
            Some(format!("Bearer {TOKEN}")),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/events?limit=0".to_string(),
            Some(format!("Bearer {TOKEN}")),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/events?type=room.exploded".to_string(),
            Some(format!("Bearer {TOKEN}")),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/events?colour=red".to_string(),
            Some(format!("Bearer {TOKEN}")),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/events/evt_nope".to_string(),
            Some(format!("Bearer {TOKEN}")),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/v1/rooms/unknown".to_string(),
            Some(format!("Bearer {TOKEN}")),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, path, token, want) in cases {
        let shown = format!("{method} {}", &path[..path.len().min(60)]);
        let res = raw(method, path, token.as_deref()).await.unwrap();
        assert_eq!(res.status(), want, "{shown}");
        let body: serde_json::Value = res.json().await.unwrap_or_else(|e| panic!("{shown}: {e}"));
        assert_eq!(body["success"], false, "{shown}");
        assert!(body["message"].is_string(), "{shown}");
        assert!(body["error"]["code"].is_string(), "{shown}");
    }
    let (_, after) = app.get("/v1/rooms").await;
    let ids = |v: &serde_json::Value| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["roomId"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&before), ids(&after));
}

#[tokio::test]
async fn health_routes_need_no_token() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    for path in ["/healthz", "/readyz"] {
        let res = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
}
