//! Webhook delivery end to end: signatures, filters, outages, order, 410,
//! rotation and the SSRF guard (a spent schedule is in `spent`).

use crate::receiver::{Received, Receiver};
use crate::support::*;
use axum::http::StatusCode as AxStatus;
use axum::response::IntoResponse;
use base64::Engine as _;
use hmac::Mac;
use reqwest::StatusCode;
use serde_json::json;
use verriflo_relay::signing::{verify, Secret, DEFAULT_TOLERANCE};

/// The signature, computed here from the published scheme, not by the library.
fn independent_signature(secret: &str, r: &Received) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    let ts = r.headers["webhook-timestamp"].to_str().unwrap();
    mac.update(format!("{}.{}.", r.id(), ts).as_bytes());
    mac.update(&r.body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

async fn run_class(app: &TestApp, up: &Upstream, room: &str) {
    for step in class_steps(room) {
        app.apply(up, step).await;
    }
}

pub(crate) async fn received_at_least(rx: &Receiver, n: usize) -> Vec<Received> {
    eventually(&format!("{n} webhooks"), || async {
        let got = rx.hooks();
        (got.len() >= n).then_some(got)
    })
    .await
}

/// First arrival of each event id, in arrival order.
fn first_arrivals(got: &[Received]) -> Vec<Received> {
    let mut seen = std::collections::HashSet::new();
    got.iter()
        .filter(|r| seen.insert(r.id()))
        .cloned()
        .collect()
}

#[tokio::test]
async fn every_event_arrives_signed_and_equal_to_the_stored_event() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let rx = Receiver::spawn().await;
    let (sub, secret) = app
        .subscribe(json!({"url": rx.url, "rooms": ["math-101"]}))
        .await;
    // Naming the room watched it.
    app.until_snapshot("math-101", &not_found("math-101")).await;
    run_class(&app, &up, "math-101").await;
    let events = app.events("math-101").await;
    assert_eq!(events.len(), 9);
    let got = received_at_least(&rx, events.len()).await;
    assert_eq!(got.len(), events.len());

    let secret_obj = Secret::parse(&secret).unwrap();
    for (r, e) in got.iter().zip(&events) {
        assert_eq!(r.id(), e["id"], "in order");
        assert_eq!(r.headers["content-type"], "application/json");
        assert!(r.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("verriflo-relay/"));
        let now = chrono::Utc::now().timestamp();
        verify(&secret_obj, &r.headers, &r.body, now, DEFAULT_TOLERANCE)
            .expect("the library verifies it");
        assert_eq!(
            r.headers["webhook-signature"].to_str().unwrap(),
            independent_signature(&secret, r)
        );
        let (status, by_id) = app.get(&format!("/v1/events/{}", r.id())).await;
        assert_eq!(status, StatusCode::OK);
        let mut stored = by_id["data"].clone();
        assert_eq!(&stored, e);
        stored.as_object_mut().unwrap().remove("id");
        assert_eq!(r.json(), stored);
    }
    eventually("deliveries to be recorded", || async {
        let ds = app.deliveries(&sub).await;
        (ds.len() == events.len() && ds.iter().all(|d| d["status"] == "succeeded")).then_some(())
    })
    .await;
    let ds = app.deliveries(&sub).await;
    assert_eq!(
        ds[0]["eventId"],
        events.last().unwrap()["id"],
        "newest first"
    );
    assert_eq!(ds[0]["attempts"][0]["statusCode"], 200);
}

#[tokio::test]
async fn filters_deliver_exactly_the_matching_subset() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let (all, rooms_only, teacher_only, disabled, deleted) = (
        Receiver::spawn().await,
        Receiver::spawn().await,
        Receiver::spawn().await,
        Receiver::spawn().await,
        Receiver::spawn().await,
    );
    app.watch("r1").await;
    app.watch("r2").await;
    app.subscribe(json!({"url": all.url})).await;
    app.subscribe(json!({"url": rooms_only.url, "rooms": ["r2"]}))
        .await;
    app.subscribe(json!({"url": teacher_only.url, "events": ["teacher.*", "room.started"]}))
        .await;
    let (off, _) = app.subscribe(json!({"url": disabled.url})).await;
    let (gone, _) = app.subscribe(json!({"url": deleted.url})).await;
    let (status, body) = app
        .patch(
            &format!("/v1/subscriptions/{off}"),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["enabled"], false);
    let (status, _) = app
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/subscriptions/{gone}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    app.until_snapshot("r1", &not_found("r1")).await;
    app.until_snapshot("r2", &not_found("r2")).await;
    run_class(&app, &up, "r1").await;
    run_class(&app, &up, "r2").await;
    let total = app.events("r1").await.len() + app.events("r2").await.len();
    let r2 = app.events("r2").await.len();
    let got = received_at_least(&all, total).await;
    received_at_least(&rooms_only, r2).await;
    // room.started + teacher.joined + teacher.left, in each room.
    received_at_least(&teacher_only, 6).await;
    // Let the engine finish with whatever it has: the "all" receiver has everything.
    assert_eq!(got.len(), total);
    assert!(rooms_only
        .hooks()
        .iter()
        .all(|r| r.json()["data"]["roomId"] == "r2"));
    assert_eq!(rooms_only.hooks().len(), r2);
    let types: Vec<String> = teacher_only
        .hooks()
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_string())
        .collect();
    assert!(
        types
            .iter()
            .all(|t| t.starts_with("teacher.") || t == "room.started"),
        "{types:?}"
    );
    assert_eq!(types.len(), 6);
    assert!(disabled.all().is_empty());
    assert!(deleted.all().is_empty());
    let (status, _) = app.get(&format!("/v1/subscriptions/{gone}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_outage_is_retried_in_order_and_a_stuck_room_holds_back_no_other() {
    let up = spawn_upstream().await;
    let mut settings = fast_settings(&up);
    settings.retain(|(k, _)| *k != "RELAY_RETRY_SCHEDULE");
    settings.push(("RELAY_RETRY_SCHEDULE", vec!["30ms"; 200].join(",")));
    let app = TestApp::spawn_with(
        settings,
        std::sync::Arc::new(tempfile::TempDir::new().unwrap()),
    )
    .await;
    let rx = Receiver::spawn().await;
    let stuck = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = stuck.clone();
    // Room "a" is refused while stuck; every request's first try also fails.
    rx.answer(move |_, r| {
        let body = r.json();
        if body["data"]["roomId"] == "a" && flag.load(std::sync::atomic::Ordering::SeqCst) {
            return AxStatus::INTERNAL_SERVER_ERROR.into_response();
        }
        AxStatus::OK.into_response()
    });
    let (sub, _) = app
        .subscribe(json!({"url": rx.url, "rooms": ["a", "b"]}))
        .await;
    app.until_snapshot("a", &not_found("a")).await;
    app.until_snapshot("b", &not_found("b")).await;
    run_class(&app, &up, "a").await;
    run_class(&app, &up, "b").await;
    let b_events = app.events("b").await;
    // Every event of "b" arrives while "a" is still stuck on its first event.
    eventually("room b to be delivered", || async {
        let ok_b: Vec<String> = rx
            .hooks()
            .iter()
            .filter(|r| r.json()["data"]["roomId"] == "b")
            .map(|r| r.id())
            .collect();
        (ok_b.len() >= b_events.len()).then_some(())
    })
    .await;
    let a_events = app.events("a").await;
    let a_tries: Vec<String> = rx
        .hooks()
        .iter()
        .filter(|r| r.json()["data"]["roomId"] == "a")
        .map(|r| r.id())
        .collect();
    assert!(a_tries.len() >= 2, "room a was retried");
    assert!(
        a_tries.iter().all(|id| *id == a_events[0]["id"]),
        "room a waits on its first event, same webhook-id on every retry"
    );

    stuck.store(false, std::sync::atomic::Ordering::SeqCst);
    let total = a_events.len() + b_events.len();
    eventually("everything delivered", || async {
        (first_arrivals(&rx.hooks()).len() >= total).then_some(())
    })
    .await;
    // Per room, first arrivals come in emission order.
    let firsts = first_arrivals(&rx.hooks());
    for (room, events) in [("a", &a_events), ("b", &b_events)] {
        let order: Vec<String> = firsts
            .iter()
            .filter(|r| r.json()["data"]["roomId"] == room)
            .map(|r| r.id())
            .collect();
        let want: Vec<String> = events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(order, want, "room {room}");
    }
    eventually("all deliveries succeeded", || async {
        let ds = app.deliveries(&sub).await;
        ds.iter().all(|d| d["status"] == "succeeded").then_some(())
    })
    .await;
}

#[tokio::test]
async fn gone_disables_and_enabling_resumes() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let rx = Receiver::spawn().await;
    rx.answer(|n, _| {
        if n == 0 {
            AxStatus::GONE.into_response()
        } else {
            AxStatus::OK.into_response()
        }
    });
    let (sub, _) = app.subscribe(json!({"url": rx.url, "rooms": ["r"]})).await;
    app.until_snapshot("r", &not_found("r")).await;
    app.apply(&up, idle("r")).await;
    let disabled = eventually("the subscription to be disabled", || async {
        let (_, s) = app.get(&format!("/v1/subscriptions/{sub}")).await;
        (s["data"]["enabled"] == false).then_some(s)
    })
    .await;
    assert!(disabled["data"]["disabledReason"]
        .as_str()
        .unwrap()
        .contains("410"));
    // Events while disabled are not queued for it.
    app.apply(&up, class_steps("r")[1].clone()).await;
    assert_eq!(rx.hooks().len(), 1);

    let (status, _) = app
        .patch(
            &format!("/v1/subscriptions/{sub}"),
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let got = received_at_least(&rx, 2).await;
    assert_eq!(
        got[1].id(),
        got[0].id(),
        "the held event goes out again once enabled"
    );
    app.apply(&up, class_steps("r")[2].clone()).await;
    let got = received_at_least(&rx, 3).await;
    assert_eq!(got[2].json()["type"], "teacher.joined");
}

#[tokio::test]
async fn after_rotation_both_secrets_sign() {
    let up = spawn_upstream().await;
    let app = TestApp::spawn(&up).await;
    let rx = Receiver::spawn().await;
    // A secret of one's own (from a deployment's secret store) is accepted.
    let own = Secret::generate().expose();
    let (sub, old) = app.subscribe(json!({"url": rx.url, "secret": own})).await;
    assert_eq!(old, own);
    let (status, body) = app.get(&format!("/v1/subscriptions/{sub}/secret")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["secret"], old.as_str());
    let (status, body) = app
        .post(&format!("/v1/subscriptions/{sub}/rotate-secret"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = body["data"]["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(body["data"]["previousSecretExpiresAt"].is_string());
    // Secrets never show in the listing.
    let (_, listed) = app.get("/v1/subscriptions").await;
    assert!(!listed.to_string().contains(&old) && !listed.to_string().contains(&new));

    let (status, body) = app
        .post(&format!("/v1/subscriptions/{sub}/test"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let got = received_at_least(&rx, 1).await;
    let r = &got[0];
    assert_eq!(r.json()["type"], "webhook.test");
    let header = r.headers["webhook-signature"].to_str().unwrap().to_string();
    let sigs: Vec<&str> = header.split(' ').collect();
    assert_eq!(sigs.len(), 2);
    let now = chrono::Utc::now().timestamp();
    for (secret, sig) in [(&new, sigs[0]), (&old, sigs[1])] {
        let mut one = r.headers.clone();
        one.insert("webhook-signature", sig.parse().unwrap());
        verify(
            &Secret::parse(secret).unwrap(),
            &one,
            &r.body,
            now,
            DEFAULT_TOLERANCE,
        )
        .expect("each signature verifies under its secret");
        assert_eq!(independent_signature(secret, r), sig);
    }
}

/// A receiver that holds every webhook until the test lets one go, and
/// counts how many it holds at once.
struct Gate {
    held: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    answered: std::sync::atomic::AtomicUsize,
    permits: tokio::sync::Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            held: Default::default(),
            most: Default::default(),
            answered: Default::default(),
            permits: tokio::sync::Semaphore::new(0),
        }
    }
}

impl Gate {
    async fn spawn(self: &std::sync::Arc<Self>) -> String {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let gate = self.clone();
        let app = axum::Router::new().fallback(move || {
            let gate = gate.clone();
            async move {
                let now = gate.held.fetch_add(1, SeqCst) + 1;
                gate.most.fetch_max(now, SeqCst);
                gate.permits.acquire().await.unwrap().forget();
                gate.held.fetch_sub(1, SeqCst);
                gate.answered.fetch_add(1, SeqCst);
                AxStatus::OK
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }
}

#[tokio::test]
async fn no_more_webhooks_are_in_flight_than_the_delivery_concurrency() {
    use std::sync::atomic::Ordering::SeqCst;
    let up = spawn_upstream().await;
    let mut settings = fast_settings(&up);
    settings.retain(|(k, _)| *k != "RELAY_DELIVERY_TIMEOUT");
    settings.push(("RELAY_DELIVERY_TIMEOUT", "60s".into()));
    settings.push(("RELAY_DELIVERY_CONCURRENCY", "2".into()));
    let app = TestApp::spawn_with(
        settings,
        std::sync::Arc::new(tempfile::TempDir::new().unwrap()),
    )
    .await;
    let gate = std::sync::Arc::new(Gate::default());
    let url = gate.spawn().await;
    let rooms = ["a", "b", "c", "d"];
    app.subscribe(json!({"url": url, "rooms": rooms})).await;
    for room in rooms {
        app.until_snapshot(room, &not_found(room)).await;
    }
    for room in rooms {
        run_class(&app, &up, room).await;
    }
    let mut total = 0;
    for room in rooms {
        total += app.events(room).await.len();
    }
    // Let the webhooks go one at a time, each once the relay has filled
    // its two slots again (or has nothing more to send): every arrival is
    // counted, so the most held at once is exact.
    while gate.answered.load(SeqCst) < total {
        eventually("the slots to fill again", || async {
            let (held, answered) = (gate.held.load(SeqCst), gate.answered.load(SeqCst));
            (held >= 2 || held + answered == total).then_some(())
        })
        .await;
        assert!(
            gate.most.load(SeqCst) <= 2,
            "more in flight than the concurrency"
        );
        gate.permits.add_permits(1);
        let before = gate.answered.load(SeqCst);
        eventually("a webhook to be let go", || async {
            (gate.answered.load(SeqCst) > before).then_some(())
        })
        .await;
    }
    assert_eq!(gate.most.load(SeqCst), 2, "both slots were used");
}
