//! The test harness: the real relay and a simulated upstream, both on port 0,
//! with a temporary data dir, plus helpers that await conditions with a deadline.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use verriflo_relay::config::{Config, Sources};
use verriflo_relay::mock::MockUpstream;
use verriflo_relay::room::RoomStatus;

pub const TOKEN: &str = "test-admin-token-0123456789";
pub const ORG: &str = "org-test";
/// Every wait in the tests ends here at the latest; nothing waits for a fixed time.
pub const DEADLINE: Duration = Duration::from_secs(15);

pub struct Upstream {
    pub mock: MockUpstream,
    pub url: String,
    _stop: oneshot::Sender<()>,
}

pub async fn spawn_upstream() -> Upstream {
    let mock = MockUpstream::new(Some(ORG.to_string()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(mock.clone().serve(listener, async move {
        let _ = rx.await;
    }));
    Upstream {
        mock,
        url,
        _stop: tx,
    }
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub data_dir: Arc<TempDir>,
    pub settings: Vec<(&'static str, String)>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The settings every test starts from: fast polls, short backoff.
pub fn fast_settings(upstream: &Upstream) -> Vec<(&'static str, String)> {
    vec![
        ("VERRIFLO_ORG_ID", ORG.into()),
        ("VERRIFLO_API_URL", upstream.url.clone()),
        ("RELAY_ADMIN_TOKEN", TOKEN.into()),
        ("RELAY_POLL_INTERVAL", "25ms".into()),
        ("RELAY_POLL_BACKOFF_MAX", "100ms".into()),
        ("RELAY_UPSTREAM_TIMEOUT", "300ms".into()),
        ("RELAY_ALLOW_PRIVATE_TARGETS", "true".into()),
        ("RELAY_RETRY_SCHEDULE", "20ms,40ms,60ms".into()),
        ("RELAY_DELIVERY_TIMEOUT", "1s".into()),
        ("RELAY_SHUTDOWN_GRACE", "2s".into()),
    ]
}

/// The database standing in for `dir` in cluster mode, made on first use.
async fn database_for(dir: &std::path::Path) -> String {
    static MADE: std::sync::Mutex<Vec<(std::path::PathBuf, String)>> =
        std::sync::Mutex::new(Vec::new());
    if let Some((_, url)) = MADE.lock().unwrap().iter().find(|(d, _)| d == dir) {
        return url.clone();
    }
    let url = crate::cluster::fresh_database().await;
    MADE.lock().unwrap().push((dir.to_path_buf(), url.clone()));
    url
}

impl TestApp {
    pub async fn spawn(upstream: &Upstream) -> Self {
        Self::spawn_with(fast_settings(upstream), Arc::new(TempDir::new().unwrap())).await
    }

    pub async fn spawn_with(settings: Vec<(&'static str, String)>, data_dir: Arc<TempDir>) -> Self {
        let mut sources = Sources::default();
        for (k, v) in &settings {
            sources.set(k, v.clone());
        }
        sources.set(
            "RELAY_DATA_DIR",
            data_dir.path().to_string_lossy().to_string(),
        );
        // E2E_BACKEND=postgres: the same tests in cluster mode, a database
        // per data dir (a restart on the same dir finds its state).
        if std::env::var("E2E_BACKEND").as_deref() == Ok("postgres") {
            sources.set("RELAY_DATABASE_URL", database_for(data_dir.path()).await);
            sources.set("RELAY_INSTANCE_ID", "e2e".to_string());
        }
        let config = Config::from_sources(&sources).expect("test settings are valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(verriflo_relay::app::run(config, listener, async move {
            let _ = rx.await;
        }));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            base,
            http,
            data_dir,
            settings,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// Shut down gracefully and wait until the store is closed.
    pub async fn stop(mut self) -> (Vec<(&'static str, String)>, Arc<TempDir>) {
        self.stop.take().unwrap().send(()).ok();
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(DEADLINE, handle)
            .await
            .expect("shutdown within the deadline")
            .expect("the app task does not panic")
            .expect("the app shuts down cleanly");
        (std::mem::take(&mut self.settings), self.data_dir.clone())
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("the relay answers");
        let status = res.status();
        let text = res.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text}));
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, None).await
    }

    pub async fn put(&self, path: &str) -> (StatusCode, Value) {
        self.request(Method::PUT, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::PATCH, path, Some(body)).await
    }

    /// Replay a subscription's events since `since` (any JSON the API
    /// takes); returns how many deliveries it queued.
    pub async fn replay(&self, sub: &str, since: Value) -> u64 {
        let (status, body) = self
            .post(
                &format!("/v1/subscriptions/{sub}/replay"),
                json!({ "since": since }),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["data"]["queued"].as_u64().expect("a count")
    }

    /// Create a subscription; returns `(id, secret)`.
    pub async fn subscribe(&self, body: Value) -> (String, String) {
        let (status, created) = self.post("/v1/subscriptions", body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let d = &created["data"];
        (
            d["id"].as_str().unwrap().to_string(),
            d["secret"].as_str().unwrap().to_string(),
        )
    }

    /// Every delivery of a subscription, newest first.
    pub async fn deliveries(&self, sub: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/v1/subscriptions/{sub}/deliveries?limit=1000"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"]["deliveries"].as_array().unwrap().clone()
    }

    pub async fn watch(&self, room: &str) {
        let (status, body) = self.put(&format!("/v1/rooms/{}", enc(room))).await;
        assert!(status.is_success(), "{status} {body}");
    }

    pub async fn room(&self, room: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/rooms/{}", enc(room))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].clone()
    }

    /// Every stored event of `room`, following the cursor.
    pub async fn events(&self, room: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let room_q: String = url::form_urlencoded::byte_serialize(room.as_bytes()).collect();
            let path = format!("/v1/events?roomId={room_q}&limit=50{after}");
            let (status, body) = self.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            out.extend(body["data"]["events"].as_array().unwrap().iter().cloned());
            match body["data"]["next"].as_str() {
                Some(next) => after = format!("&after={next}"),
                None => return out,
            }
        }
    }

    pub async fn event_types(&self, room: &str) -> Vec<String> {
        self.events(room)
            .await
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    }

    /// Wait until the relay's snapshot of `room` equals `status`.
    pub async fn until_snapshot(&self, room: &str, status: &RoomStatus) {
        let want = serde_json::to_value(status).unwrap();
        eventually(&format!("snapshot of {room}"), || async {
            (self.room(room).await["status"] == want).then_some(())
        })
        .await
    }

    /// Set the upstream's state of a room, then wait until the relay has seen it.
    pub async fn apply(&self, upstream: &Upstream, status: RoomStatus) {
        let room = status.room_id.clone();
        upstream.mock.set_room(status.clone());
        self.until_snapshot(&room, &status).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A room id as one percent-encoded path segment.
pub fn enc(room: &str) -> String {
    let mut url = url::Url::parse("http://x/").unwrap();
    url.path_segments_mut().unwrap().pop_if_empty().push(room);
    url.path().trim_start_matches('/').to_string()
}

/// Await `check` until it yields Some, failing the test at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `relay_deliveries_pending` from a relay's `/metrics`.
pub async fn pending_deliveries(base: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("relay_deliveries_pending "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

/// A room that exists and is idle.
pub fn idle(room: &str) -> RoomStatus {
    RoomStatus {
        exists: true,
        is_active: false,
        room_id: room.into(),
        title: Some("Calculus I".into()),
        participant_count: Some(0),
        has_teacher: Some(false),
        is_recording: Some(false),
        created_at: Some("2024-01-15T09:00:00.000Z".into()),
        started_at: None,
    }
}

/// A room in class with its teacher.
pub fn taught(room: &str) -> RoomStatus {
    RoomStatus {
        is_active: true,
        has_teacher: Some(true),
        ..idle(room)
    }
}

pub fn not_found(room: &str) -> RoomStatus {
    RoomStatus::not_found(room)
}

/// A short class: created, started, teacher in, recording, a crowd, ended.
pub fn class_steps(room: &str) -> Vec<RoomStatus> {
    let created = idle(room);
    let started = RoomStatus {
        is_active: true,
        started_at: Some("2024-01-15T09:02:30.000Z".into()),
        ..created.clone()
    };
    let teacher = RoomStatus {
        has_teacher: Some(true),
        ..started.clone()
    };
    let recording = RoomStatus {
        is_recording: Some(true),
        ..teacher.clone()
    };
    let crowd = RoomStatus {
        participant_count: Some(9),
        ..recording.clone()
    };
    let ended = RoomStatus {
        is_active: false,
        has_teacher: Some(false),
        is_recording: Some(false),
        participant_count: Some(0),
        ..crowd.clone()
    };
    vec![created, started, teacher, recording, crowd, ended]
}
