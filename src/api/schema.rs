//! Typed shapes of the API's bodies: what handlers serialize, and what the
//! OpenAPI document describes.

use crate::room::RoomStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every success: the upstream's own envelope.
#[derive(Serialize, ToSchema)]
pub struct Envelope<T> {
    pub success: bool,
    pub message: String,
    pub data: T,
}

/// Every error, with an honest status code.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Always false.
    pub success: bool,
    pub message: String,
    pub error: ErrorBody,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// `unauthorized`, `not_found`, `validation_failed`, `invalid_json`,
    /// `unsupported_media_type`, `payload_too_large`, `conflict`,
    /// `limit_reached`, `invalid_url`, `target_refused`, `request_timeout`,
    /// `method_not_allowed`, `internal_error`, …
    pub code: String,
}

/// A watched room: its stored snapshot plus what the poller knows.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomView {
    pub room_id: String,
    pub watched_since: Option<DateTime<Utc>>,
    pub last_polled_at: Option<DateTime<Utc>>,
    pub last_changed_at: Option<DateTime<Utc>>,
    pub health: crate::poller::Health,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// The last `sequence` this room's events used.
    pub sequence: u64,
    /// The last snapshot in the upstream's `data` shape; null before the first poll.
    pub status: Option<RoomStatus>,
    /// Classes the LMS expects here (schedule hints), as last PUT.
    pub schedule: Vec<crate::store::ClassWindow>,
    /// When the room is polled next, and why: `interval` (no budget), or
    /// with `RELAY_POLL_BUDGET` its `state`, a `schedule` hint, its learned
    /// `history`, a `retry`, or `new`.
    pub next_poll_at: Option<DateTime<Utc>>,
    pub next_poll_reason: Option<&'static str>,
    /// Cluster mode only: the instance that polls this room now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// `PUT /v1/rooms/{roomId}`'s optional body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRoomBody {
    /// When classes are expected, a hint for the poll budget; replaces the
    /// last one. Absent: the schedule stays as it was.
    pub schedule: Option<Vec<crate::store::ClassWindow>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomRef {
    pub room_id: String,
}

/// The drop-in status answer: exactly the upstream's shape.
#[derive(Serialize, ToSchema)]
pub struct UpstreamAnswer {
    pub success: bool,
    pub message: String,
    pub data: RoomStatus,
}

#[derive(Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<crate::event::Event>,
    /// Pass as `after` for the next page; null at the end.
    pub next: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    pub deliveries: Vec<crate::outbox::Delivery>,
    /// Pass as `before` for the next (older) page; null at the end.
    pub next: Option<String>,
}

/// A new subscription: its view plus the secret, shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedSubscription {
    #[serde(flatten)]
    pub subscription: crate::subscription::SubscriptionView,
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct SecretView {
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedSecret {
    pub secret: String,
    /// Until then the previous secret signs beside the new one.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionRef {
    pub id: String,
}

#[derive(Serialize, ToSchema)]
pub struct Queued {
    pub queued: usize,
}
