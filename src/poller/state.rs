//! What the poller knows of each room and what one poll came to.

use crate::room::RoomId;
use crate::upstream::PollError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
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

/// What the poller remembers of each room's polls.
impl super::Poller {
    /// Watched rooms by health, for `/metrics`.
    pub fn health_counts(&self) -> HashMap<Health, u64> {
        let rooms: Vec<String> = self.inner.tasks.lock().unwrap().keys().cloned().collect();
        let mut counts = HashMap::new();
        for r in rooms {
            *counts.entry(self.runtime(&r).health).or_insert(0) += 1;
        }
        counts
    }

    /// Failures in a row of a room's polls, without cloning its record.
    pub(super) fn failures(&self, room: &str) -> u32 {
        let map = self.inner.runtime.lock().unwrap();
        map.get(room).map_or(0, |rt| rt.failures)
    }

    /// Without a budget: when the room's own task polls it next.
    pub(super) fn set_next_poll(&self, room: &RoomId, due: tokio::time::Instant) {
        let wait = due.saturating_duration_since(tokio::time::Instant::now());
        let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        if let Some(rt) = self.inner.runtime.lock().unwrap().get_mut(room.as_str()) {
            rt.next_poll_at = Some(at);
        }
    }

    pub(super) fn record_runtime(&self, room: &RoomId, now: DateTime<Utc>, outcome: &PollOutcome) {
        let mut map = self.inner.runtime.lock().unwrap();
        if outcome == &PollOutcome::NotWatched {
            map.remove(room.as_str());
            return;
        }
        if !map.contains_key(room.as_str()) {
            map.insert(room.to_string(), RoomRuntime::default());
        }
        let rt = map.get_mut(room.as_str()).expect("just ensured");
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
                    ..RoomRuntime::default()
                };
            }
        }
    }
}
