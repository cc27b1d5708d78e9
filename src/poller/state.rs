//! What the poller knows of each room and what one poll came to.

use crate::upstream::PollError;
use chrono::{DateTime, Utc};
use serde::Serialize;

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
}

impl Default for RoomRuntime {
    fn default() -> Self {
        Self {
            last_polled_at: None,
            health: Health::Ok,
            failures: 0,
            last_error: None,
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
