//! The admin API takes arbitrary requests without a 5xx or a panic: random
//! methods, paths, headers and bodies against the running relay.

use crate::support::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const TEMPLATES: &[&str] = &[
    "/v1/rooms",
    "/v1/rooms/{}",
    "/v1/room/{}/status",
    "/v1/events",
    "/v1/events/{}",
    "/v1/subscriptions",
    "/v1/subscriptions/{}",
    "/v1/subscriptions/{}/secret",
    "/v1/subscriptions/{}/rotate-secret",
    "/v1/subscriptions/{}/test",
    "/v1/subscriptions/{}/deliveries",
    "/v1/subscriptions/{}/deliveries/{}/retry",
    "/v1/subscriptions/{}/replay",
    "/v1/subscriptions/{}/stats",
    "/v1/dashboard/login-link",
    "/ui/",
    "/ui/login",
    "/ui/login/{}",
    "/ui/logout",
    "/ui/app.js",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/{}",
];

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: String,
    query: String,
    content_type: Option<&'static str>,
    authed: bool,
    body: Vec<u8>,
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_-]{1,12}",
        "\\PC{1,8}",
        Just("sub_01ARZ3NDEKTSV4RRFFQ69G5FAV".to_string()),
        Just("evt_01ARZ3NDEKTSV4RRFFQ69G5FAV".to_string()),
        Just("x".repeat(5000)),
    ]
    .prop_map(|s| {
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        Just(b"{}".to_vec()),
        Just(b"{\"url\": \"http://127.0.0.1:9/h\", \"events\": [\"room.*\"]}".to_vec()),
        Just(b"{\"since\": \"2024-01-01T00:00:00Z\"}".to_vec()),
        Just(b"{\"enabled\": true, \"url\": 7}".to_vec()),
        Just(b"[1,2,3]".to_vec()),
        Just(b"{\"token\": \"test-admin-token-0123456789\"}".to_vec()),
        Just(
            b"{\"url\": \"http://127.0.0.1:9/h\", \"rooms\": [\"a\",\"b\"], \"description\": null}"
                .to_vec()
        ),
    ]
}

fn request() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(vec!["GET", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"]),
        prop::sample::select(TEMPLATES.to_vec()),
        segment(),
        segment(),
        prop_oneof![
            Just(String::new()),
            "[a-zA-Z]{1,6}=[a-z0-9%]{0,8}(&limit=[0-9-]{1,4})?"
        ],
        prop::option::of(prop::sample::select(vec![
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
        ])),
        any::<bool>(),
        body(),
    )
        .prop_map(
            |(method, template, a, b, query, content_type, authed, body)| Req {
                method,
                path: template.replacen("{}", &a, 1).replacen("{}", &b, 1),
                query,
                content_type,
                authed,
                body,
            },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_never_get_a_5xx() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: 1500,
        failure_persistence: None,
        ..Config::default()
    });
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::new());
    // The runner's error carries the failing input; only its text is kept.
    let result: Result<(), String> = tokio::task::block_in_place(|| {
        runner
            .run(&request(), |req| {
                let status = handle.block_on(async {
                    let url = if req.query.is_empty() {
                        format!("{}{}", app.base, req.path)
                    } else {
                        format!("{}{}?{}", app.base, req.path, req.query)
                    };
                    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
                    let mut r = app.http.request(method, url).body(req.body.clone());
                    if let Some(ct) = req.content_type {
                        r = r.header("content-type", ct);
                    }
                    if req.authed {
                        r = r.bearer_auth(TOKEN);
                    }
                    let res = r.send().await.expect("the relay answers");
                    let status = res.status();
                    let text = res.text().await.unwrap_or_default();
                    (status, text)
                });
                let (status, text) = status;
                *seen.lock().unwrap().entry(status.as_u16()).or_insert(0) += 1;
                prop_assert!(status.as_u16() < 500, "{req:?} got {status}: {text}");
                Ok(())
            })
            .map_err(|e| e.to_string())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Still healthy afterwards, and the statuses were varied.
    assert_eq!(app.get("/healthz").await.0, reqwest::StatusCode::OK);
    let seen = seen.into_inner().unwrap();
    assert!(seen.len() >= 4, "{seen:?}");
    eprintln!("fuzzed the admin API: {seen:?}");
}

/// Schemathesis, driven by `/openapi.json`, finds no 5xx. `scripts/test.sh`
/// installs it and runs this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs schemathesis: run scripts/test.sh"]
async fn schemathesis_finds_no_server_error() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let bin = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| {
        format!(
            "{}/target/xlang/py/bin/schemathesis",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    let out = tokio::process::Command::new(&bin)
        .args(["run", &format!("{}/openapi.json", app.base)])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        // The event stream never ends by design; its bad inputs are tested
        // in `stream.rs`.
        .args(["--exclude-path", "/v1/events/stream"])
        .args([
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "40",
            "--seed",
            "7",
        ])
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{bin}: {e}: run scripts/test.sh, which installs schemathesis"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = text
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or("")
        .trim()
        .to_string();
    assert!(summary.contains("passed"), "{text}");
    eprintln!("schemathesis: {summary}");
}
