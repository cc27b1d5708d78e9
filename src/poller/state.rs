//! What the poller knows of each room and what one poll came to.

use crate::room::RoomId;
use crate::store::Base;
use crate::upstream::{PollError, StatusTarget};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use tracing::{info, warn};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
    Failing,
    Unauthorized,
    Invalid,
}

/// What the poller knows of a room beyond its stored snapshot. Kept in
/// memory: an unchanged answer writes nothing to disk.
#[derive(Clone, Debug)]
pub struct RoomRuntime {
    pub last_polled_at: Option<DateTime<Utc>>,
    pub health: Health,
    pub failures: u32,
    pub last_error: Option<String>,
    /// Without a budget: when the room's task polls it next.
    pub next_poll_at: Option<DateTime<Utc>>,
}

impl Default for RoomRuntime {
    fn default() -> Self {
        Self {
            last_polled_at: None,
            health: Health::Ok,
            failures: 0,
            last_error: None,
            next_poll_at: None,
        }
    }
}

/// The outcome of one poll of one room.
#[derive(Debug, PartialEq)]
pub enum PollOutcome {
    Unchanged,
    Baseline,
    Changed(usize),
    NotWatched,
    /// The store moved under this poll twice running: nothing written;
    /// the next poll diffs against the store afresh.
    Stale,
    Failed(PollError),
    StoreFailed,
}

impl PollOutcome {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Baseline => "baseline",
            Self::Changed(_) => "changed",
            Self::NotWatched => "not_watched",
            Self::Stale => "stale",
            Self::StoreFailed => "store_failed",
            Self::Failed(e) => e.label(),
        }
    }
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failing => "failing",
            Self::Unauthorized => "unauthorized",
            Self::Invalid => "invalid",
        }
    }
}

/// What the poller last stored of a room: the state its next answer is
/// diffed against (with the version its commit must find), and the body
/// that state was parsed from (empty before the baseline).
pub(super) struct Known {
    pub base: Base,
    pub body: Vec<u8>,
}

/// One watched room as this instance holds it, shared by whatever polls
/// it and by the API: found once when the room is watched, so a poll
/// touches no shared map and no shared lock.
pub(super) struct Slot {
    /// The room's status URL, built once.
    pub target: StatusTarget,
    known: Mutex<Option<Known>>,
    runtime: Mutex<RoomRuntime>,
    task: Mutex<Task>,
}

/// The room's own task (none under a budget: one loop polls every room).
#[derive(Default)]
struct Task {
    handle: Option<tokio::task::AbortHandle>,
    stopped: bool,
}

impl Slot {
    pub fn new(target: StatusTarget) -> Self {
        Self {
            target,
            known: Mutex::new(None),
            runtime: Mutex::new(RoomRuntime::default()),
            task: Mutex::new(Task::default()),
        }
    }

    pub fn set_task(&self, handle: tokio::task::AbortHandle) {
        let mut task = self.task.lock().unwrap();
        if task.stopped {
            // Stopped before its task was known: stop it now.
            handle.abort();
        }
        task.handle = Some(handle);
    }

    /// Stop the room's task, wherever it waits; for good.
    pub fn stop(&self) {
        let mut task = self.task.lock().unwrap();
        task.stopped = true;
        if let Some(handle) = task.handle.take() {
            handle.abort();
        }
    }

    /// Whether `body` is, byte for byte, the answer last stored.
    pub fn is_known_body(&self, body: &[u8]) -> bool {
        let known = self.known.lock().unwrap();
        known
            .as_ref()
            .is_some_and(|k| k.base.snapshot.is_some() && k.body == body)
    }

    /// What was last stored: exists, and is live.
    pub fn known_state(&self) -> Option<(bool, bool)> {
        let known = self.known.lock().unwrap();
        let snapshot = known.as_ref()?.base.snapshot.as_ref()?;
        Some((snapshot.exists, snapshot.is_active))
    }

    pub fn base(&self) -> Option<Base> {
        self.known.lock().unwrap().as_ref().map(|k| k.base.clone())
    }

    pub fn remember(&self, known: Known) {
        *self.known.lock().unwrap() = Some(known);
    }

    /// Read the base from the store again at the next change.
    pub fn forget(&self) {
        *self.known.lock().unwrap() = None;
    }

    pub fn runtime(&self) -> RoomRuntime {
        self.runtime.lock().unwrap().clone()
    }

    /// Failures in a row of the room's polls.
    pub fn failures(&self) -> u32 {
        self.runtime.lock().unwrap().failures
    }

    /// Without a budget: when the room's own task polls it next.
    pub fn set_next_poll(&self, due: tokio::time::Instant) {
        let wait = due.saturating_duration_since(tokio::time::Instant::now());
        let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        self.runtime.lock().unwrap().next_poll_at = Some(at);
    }

    pub fn record(&self, room: &RoomId, now: DateTime<Utc>, outcome: &PollOutcome) {
        if outcome == &PollOutcome::NotWatched {
            return;
        }
        let mut rt = self.runtime.lock().unwrap();
        rt.last_polled_at = Some(now);
        match outcome {
            PollOutcome::Failed(e) => {
                rt.failures = rt.failures.saturating_add(1);
                rt.last_error = Some(e.to_string());
                rt.health = match e {
                    PollError::BadRequest => Health::Invalid,
                    PollError::Unauthorized => Health::Unauthorized,
                    _ => Health::Failing,
                };
                if rt.failures == 1 {
                    warn!(room = %room, error = %e, "poll failed");
                }
            }
            PollOutcome::StoreFailed => {
                rt.failures = rt.failures.saturating_add(1);
                rt.last_error = Some("store write failed".into());
                rt.health = Health::Failing;
            }
            _ => {
                if rt.failures > 0 {
                    info!(room = %room, after = rt.failures, "poll recovered");
                }
                *rt = RoomRuntime {
                    last_polled_at: Some(now),
                    next_poll_at: rt.next_poll_at,
                    ..RoomRuntime::default()
                };
            }
        }
    }
}

impl super::Poller {
    /// Watched rooms by health, for `/metrics`.
    pub fn health_counts(&self) -> HashMap<Health, u64> {
        let rooms: Vec<String> = self.inner.rooms.lock().unwrap().keys().cloned().collect();
        let mut counts = HashMap::new();
        for r in rooms {
            *counts.entry(self.runtime(&r).health).or_insert(0) += 1;
        }
        counts
    }
}
