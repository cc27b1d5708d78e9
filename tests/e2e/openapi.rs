//! `/openapi.json`: generated from the code, parses as OpenAPI 3.1, covers
//! every `/v1` route of the router, and routes to nothing that isn't there.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::Value;

/// Every `/v1` route SPEC.md names (method, path).
const SPEC_ROUTES: &[(&str, &str)] = &[
    ("put", "/v1/rooms/{room_id}"),
    ("delete", "/v1/rooms/{room_id}"),
    ("get", "/v1/rooms"),
    ("get", "/v1/rooms/{room_id}"),
    ("get", "/v1/room/{room_id}/status"),
    ("post", "/v1/subscriptions"),
    ("get", "/v1/subscriptions"),
    ("get", "/v1/subscriptions/{id}"),
    ("patch", "/v1/subscriptions/{id}"),
    ("delete", "/v1/subscriptions/{id}"),
    ("get", "/v1/subscriptions/{id}/secret"),
    ("post", "/v1/subscriptions/{id}/rotate-secret"),
    ("post", "/v1/subscriptions/{id}/test"),
    ("get", "/v1/subscriptions/{id}/deliveries"),
    (
        "post",
        "/v1/subscriptions/{id}/deliveries/{delivery_id}/retry",
    ),
    ("post", "/v1/subscriptions/{id}/replay"),
    ("get", "/v1/subscriptions/{id}/stats"),
    ("post", "/v1/dashboard/login-link"),
    ("get", "/v1/events"),
    ("get", "/v1/events/{id}"),
    ("get", "/v1/events/stream"),
];

#[tokio::test]
async fn the_openapi_document_is_valid_and_matches_the_router() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let res = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "served without a token");
    let text = res.text().await.unwrap();
    let spec = oas3::from_json(&text).expect("parses as OpenAPI 3.1");
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);
    let doc: Value = serde_json::from_str(&text).unwrap();

    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.push((method.clone(), path.clone()));
            assert!(
                op["responses"]["200"].is_object()
                    || op["responses"]["201"].is_object()
                    || op["responses"]["202"].is_object(),
                "{method} {path}: no success answer"
            );
            let error = &op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(
                error, "#/components/schemas/ErrorEnvelope",
                "{method} {path}: no error envelope"
            );
        }
    }
    for (method, path) in SPEC_ROUTES {
        assert!(
            documented.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is not documented"
        );
    }
    assert_eq!(
        documented.len(),
        SPEC_ROUTES.len(),
        "undocumented extras or duplicates: {documented:?}"
    );
    for schema in [
        "CreateBody",
        "PatchBody",
        "ReplayBody",
        "ErrorEnvelope",
        "RoomStatus",
        "Event",
        "Delivery",
        "SubscriptionView",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "no schema {schema}"
        );
    }

    // Every documented operation reaches a handler, not the fallback.
    for (method, path) in &documented {
        let concrete = path
            .replace("{room_id}", "r")
            .replace("{id}", "x")
            .replace("{delivery_id}", "y");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let res = app
            .http
            .request(method.clone(), format!("{}{concrete}", app.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = res.status();
        // The event stream's body never ends: only a JSON answer is read.
        let json = res
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let body: Value = if json {
            res.json().await.unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {concrete}"
        );
        assert_ne!(body["message"], "no such route", "{method} {concrete}");
        assert!(status.as_u16() < 500, "{method} {concrete}: {status}");
    }
}
