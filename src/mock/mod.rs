//! The simulated Verriflo upstream: the same endpoint, shapes and errors as the
//! real one, with rooms and faults scripted in-process or over `/_control`.

mod control;
mod scenario;

pub use scenario::Scenario;

use crate::room::RoomStatus;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A misbehaviour of the upstream, for one room or for all of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this status and a small JSON error body.
    Status { status: u16 },
    /// 429, with `Retry-After` in seconds when given.
    RateLimited {
        #[serde(default, rename = "retryAfter")]
        retry_after: Option<u64>,
    },
    /// 401, as for a wrong organization id.
    Unauthorized,
    /// Hold the answer this long before giving it.
    Slow {
        #[serde(rename = "delayMs")]
        delay_ms: u64,
    },
    /// 200 with a body that is not the documented JSON.
    Garbage,
    /// 200 with the documented JSON, but about another room (a lie).
    WrongRoom,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Only this room; every room when absent.
    #[serde(default)]
    pub room_id: Option<String>,
    /// How many answers it spoils before it ends; forever when absent.
    #[serde(default)]
    pub count: Option<u64>,
    /// The share of matching answers it spoils (0 to 1); all when absent.
    #[serde(default)]
    pub chance: Option<f64>,
}

/// The simulated upstream's whole state. Cheap to clone; clones share it.
#[derive(Clone, Default)]
pub struct MockUpstream {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    org_id: Option<String>,
    rooms: Mutex<HashMap<String, RoomStatus>>,
    faults: Mutex<Vec<Fault>>,
    requests: AtomicU64,
    faults_served: AtomicU64,
    by_room: Mutex<HashMap<String, u64>>,
    /// Every good answer, when a test asks for the log (see [`MockUpstream::log_served`]).
    served: Mutex<Option<Vec<Served>>>,
}

/// One good answer: which state of which room went out, and when.
#[derive(Clone, Debug)]
pub struct Served {
    pub status: RoomStatus,
    pub at: std::time::Instant,
}

impl MockUpstream {
    /// A simulated upstream that accepts only `org_id` (any org id when None).
    pub fn new(org_id: Option<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                org_id,
                ..Inner::default()
            }),
        }
    }

    /// Set a room's whole state; `room_id` is taken from the status.
    pub fn set_room(&self, status: RoomStatus) {
        let mut rooms = self.inner.rooms.lock().unwrap();
        rooms.insert(status.room_id.clone(), status);
    }

    /// Change a room in place (it is created, not existing, when unknown).
    pub fn update_room(&self, room: &str, f: impl FnOnce(&mut RoomStatus)) {
        let mut rooms = self.inner.rooms.lock().unwrap();
        let status = rooms.entry(room.to_string()).or_insert_with(|| RoomStatus {
            room_id: room.to_string(),
            ..RoomStatus::not_found(room)
        });
        f(status);
    }

    /// The room vanishes: the upstream answers "Room not found" again.
    pub fn remove_room(&self, room: &str) {
        self.inner.rooms.lock().unwrap().remove(room);
    }

    pub fn room(&self, room: &str) -> Option<RoomStatus> {
        self.inner.rooms.lock().unwrap().get(room).cloned()
    }

    pub fn rooms(&self) -> Vec<RoomStatus> {
        let mut all: Vec<_> = self.inner.rooms.lock().unwrap().values().cloned().collect();
        all.sort_by(|a, b| a.room_id.cmp(&b.room_id));
        all
    }

    pub fn inject(&self, fault: Fault) {
        self.inner.faults.lock().unwrap().push(fault);
    }

    pub fn clear_faults(&self) {
        self.inner.faults.lock().unwrap().clear();
    }

    /// Status requests answered so far, in all and for one room.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Answers spoiled by a fault so far.
    pub fn faults_served(&self) -> u64 {
        self.inner.faults_served.load(Ordering::Relaxed)
    }

    pub fn requests_for(&self, room: &str) -> u64 {
        self.inner
            .by_room
            .lock()
            .unwrap()
            .get(room)
            .copied()
            .unwrap_or(0)
    }

    /// Keep a log of every good answer from now on: tests judge what the
    /// relay must have seen by what it was actually served.
    pub fn log_served(&self) {
        *self.inner.served.lock().unwrap() = Some(Vec::new());
    }

    pub fn served(&self) -> Vec<Served> {
        self.inner
            .served
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_default()
    }

    /// The fault that spoils this answer, if any, using up one of its count.
    fn take_fault(&self, room: &str) -> Option<FaultKind> {
        let mut faults = self.inner.faults.lock().unwrap();
        let i = faults.iter().position(|f| {
            f.room_id.as_deref().is_none_or(|r| r == room)
                && f.chance.is_none_or(|p| rand::random::<f64>() < p)
        })?;
        self.inner.faults_served.fetch_add(1, Ordering::Relaxed);
        let kind = faults[i].kind.clone();
        if let Some(n) = faults[i].count.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                faults.remove(i);
            }
        }
        Some(kind)
    }

    /// The upstream endpoint plus the `/_control` API.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/room/{room_id}/status", get(status))
            .route("/v1/room//status", get(missing_room))
            .merge(control::router())
            .with_state(self.clone())
    }

    /// Serve on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"success": false, "message": message}))).into_response()
}

async fn missing_room() -> Response {
    error(StatusCode::BAD_REQUEST, "Missing roomId")
}

async fn status(
    State(mock): State<MockUpstream>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    mock.inner.requests.fetch_add(1, Ordering::Relaxed);
    *mock
        .inner
        .by_room
        .lock()
        .unwrap()
        .entry(room.clone())
        .or_default() += 1;
    if room.trim().is_empty() {
        return missing_room().await;
    }
    let org = headers.get("vf-org-id").and_then(|v| v.to_str().ok());
    let org_ok = match (&mock.inner.org_id, org) {
        (_, None) => false,
        (Some(want), Some(got)) => want == got,
        (None, Some(_)) => true,
    };
    if !org_ok {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let fault = mock.take_fault(&room);
    // A slowed answer may come after the relay gave up on it: not logged as served.
    let slowed = matches!(fault, Some(FaultKind::Slow { .. }));
    match fault {
        Some(FaultKind::Status { status }) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(code, "Simulated failure");
        }
        Some(FaultKind::RateLimited { retry_after }) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
            if let Some(secs) = retry_after {
                r.headers_mut().insert("retry-after", secs.into());
            }
            return r;
        }
        Some(FaultKind::Unauthorized) => return error(StatusCode::UNAUTHORIZED, "Unauthorized"),
        Some(FaultKind::WrongRoom) => {
            let other = RoomStatus {
                room_id: format!("{room}-other"),
                ..RoomStatus::not_found(&room)
            };
            let body = json!({"success": true, "message": "Room not found", "data": other});
            return Json(body).into_response();
        }
        Some(FaultKind::Garbage) => {
            return (StatusCode::OK, "<html><body>502 Bad Gateway</body></html>").into_response()
        }
        Some(FaultKind::Slow { delay_ms }) => {
            // The simulated latency itself, not a wait for a result.
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        None => {}
    }
    let data = mock
        .room(&room)
        .unwrap_or_else(|| RoomStatus::not_found(&room));
    if let Some(log) = mock
        .inner
        .served
        .lock()
        .unwrap()
        .as_mut()
        .filter(|_| !slowed)
    {
        log.push(Served {
            status: data.clone(),
            at: std::time::Instant::now(),
        });
    }
    let body = json!({"success": true, "message": data.upstream_message(), "data": data});
    Json(body).into_response()
}
