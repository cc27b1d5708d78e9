//! Events: what the diff emits, what the store keeps and what webhooks carry.

use crate::changes::Changes;
use crate::room::RoomStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Every event type, in SPEC's order within one poll (closing, opening, counts).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum EventType {
    #[serde(rename = "recording.stopped")]
    RecordingStopped,
    #[serde(rename = "teacher.left")]
    TeacherLeft,
    #[serde(rename = "room.ended")]
    RoomEnded,
    #[serde(rename = "room.deleted")]
    RoomDeleted,
    #[serde(rename = "room.created")]
    RoomCreated,
    #[serde(rename = "room.started")]
    RoomStarted,
    #[serde(rename = "teacher.joined")]
    TeacherJoined,
    #[serde(rename = "recording.started")]
    RecordingStarted,
    #[serde(rename = "participants.changed")]
    ParticipantsChanged,
    #[serde(rename = "room.updated")]
    RoomUpdated,
    #[serde(rename = "webhook.test")]
    WebhookTest,
}

impl EventType {
    pub const ALL: [EventType; 11] = [
        Self::RecordingStopped,
        Self::TeacherLeft,
        Self::RoomEnded,
        Self::RoomDeleted,
        Self::RoomCreated,
        Self::RoomStarted,
        Self::TeacherJoined,
        Self::RecordingStarted,
        Self::ParticipantsChanged,
        Self::RoomUpdated,
        Self::WebhookTest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RecordingStopped => "recording.stopped",
            Self::TeacherLeft => "teacher.left",
            Self::RoomEnded => "room.ended",
            Self::RoomDeleted => "room.deleted",
            Self::RoomCreated => "room.created",
            Self::RoomStarted => "room.started",
            Self::TeacherJoined => "teacher.joined",
            Self::RecordingStarted => "recording.started",
            Self::ParticipantsChanged => "participants.changed",
            Self::RoomUpdated => "room.updated",
            Self::WebhookTest => "webhook.test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A room event before it has an id: the pure diff's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomChange {
    pub kind: EventType,
    /// Deduced rather than seen (a new `startedAt` or `createdAt`).
    pub inferred: bool,
}

/// A stored event. The webhook body is exactly this without `id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When the change was seen (RFC 3339).
    pub timestamp: DateTime<Utc>,
    /// For room events: `roomId`, `sequence`, `previous`, `current`,
    /// `changes` and, when deduced, `inferred`.
    #[schema(value_type = Object)]
    pub data: EventData,
}

/// An event's `data`: typed for room events, so the poll that makes them
/// serializes without building a JSON tree; as sent for the rest
/// (`webhook.test`).
#[derive(Clone, Debug, PartialEq)]
pub enum EventData {
    Room(Box<RoomEventData>),
    Other(serde_json::Value),
}

/// The `data` of a room event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomEventData {
    pub room_id: String,
    pub sequence: u64,
    /// Null when the room had no snapshot before (initial events).
    pub previous: Option<RoomStatus>,
    pub current: RoomStatus,
    /// Field name → `{"previous": .., "current": ..}` for every field that differs.
    pub changes: Changes,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inferred: bool,
}

impl EventData {
    /// The data as a JSON value (for tests and tools that index into it).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("event data serializes")
    }
}

impl From<serde_json::Value> for EventData {
    fn from(v: serde_json::Value) -> Self {
        match RoomEventData::deserialize(&v) {
            Ok(room) => Self::Room(Box::new(room)),
            Err(_) => Self::Other(v),
        }
    }
}

impl Serialize for EventData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Room(d) => d.serialize(s),
            Self::Other(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for EventData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(Self::from)
    }
}

/// Serialize the webhook body of `event`: the event without its id.
pub fn webhook_body(event: &Event) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(rename = "type")]
        kind: EventType,
        timestamp: &'a DateTime<Utc>,
        data: &'a EventData,
    }
    serde_json::to_vec(&Body {
        kind: event.kind,
        timestamp: &event.timestamp,
        data: &event.data,
    })
    .expect("an event always serializes")
}

impl Event {
    /// An event from its stored form, the webhook body, and its id. A room
    /// event's data is read typed; anything else is kept as sent.
    pub fn from_body(id: String, body: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Body<D> {
            #[serde(rename = "type")]
            kind: EventType,
            timestamp: DateTime<Utc>,
            data: D,
        }
        let b = match serde_json::from_slice::<Body<RoomEventData>>(body) {
            Ok(b) => Body {
                kind: b.kind,
                timestamp: b.timestamp,
                data: EventData::Room(Box::new(b.data)),
            },
            Err(_) => {
                let b: Body<serde_json::Value> = serde_json::from_slice(body)?;
                Body {
                    kind: b.kind,
                    timestamp: b.timestamp,
                    data: EventData::Other(b.data),
                }
            }
        };
        Ok(Self {
            id,
            kind: b.kind,
            timestamp: b.timestamp,
            data: b.data,
        })
    }

    /// The room this event belongs to, if it is a room event.
    pub fn room_id(&self) -> Option<&str> {
        match &self.data {
            EventData::Room(d) => Some(&d.room_id),
            EventData::Other(v) => v.get("roomId").and_then(|v| v.as_str()),
        }
    }

    pub fn sequence(&self) -> Option<u64> {
        match &self.data {
            EventData::Room(d) => Some(d.sequence),
            EventData::Other(v) => v.get("sequence").and_then(|v| v.as_u64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
    }

    #[test]
    fn webhook_body_is_event_without_id() {
        let event = Event {
            id: "evt_1".into(),
            kind: EventType::RoomStarted,
            timestamp: "2024-01-15T09:02:30Z".parse().unwrap(),
            data: serde_json::json!({"roomId": "r", "sequence": 1}).into(),
        };
        let body: serde_json::Value = serde_json::from_slice(&webhook_body(&event)).unwrap();
        let mut expected = serde_json::to_value(&event).unwrap();
        expected.as_object_mut().unwrap().remove("id");
        assert_eq!(body, expected);
    }
}
