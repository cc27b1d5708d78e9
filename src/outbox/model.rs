//! Deliveries and their attempts, as stored and as the API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
}

/// One HTTP attempt: when, what came back (or why nothing did), how long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    /// The first bytes of the receiver's answer, for debugging.
    pub response: Option<String>,
}

/// One event on its way to one subscription.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: String,
    pub subscription_id: String,
    pub event_id: String,
    pub event_type: String,
    /// The room whose order this delivery keeps; None for `webhook.test`.
    pub room_id: Option<String>,
    /// The event's place in its room: a lane is sent in this order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    pub status: DeliveryStatus,
    pub attempts: Vec<Attempt>,
    /// Attempts before this index belong to an earlier run of the retry
    /// schedule (a manual retry starts it again).
    #[serde(default)]
    pub schedule_start: usize,
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due; None when finished or waiting its turn.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl Delivery {
    /// Its place in the lane: the room's `sequence`; for test events (one
    /// to a lane), the event id.
    pub fn lane_order(&self) -> u128 {
        super::order_of(self.sequence, &self.event_id)
    }
}

/// What the engine decided after an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Succeeded,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// The schedule is spent.
    Failed,
    /// Keep pending but wait for the subscription to be enabled again (410).
    Hold,
}
