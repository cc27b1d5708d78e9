//! Room ids and room snapshots: the upstream's `data` shape, parsed once.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest room id accepted (bytes). Verriflo's ids are short slugs; this keeps
/// keys, URLs and logs bounded without rejecting any realistic id.
pub const MAX_ROOM_ID_LEN: usize = 256;

/// An opaque room identifier: any non-empty string without control characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoomIdError {
    #[error("room id is empty")]
    Empty,
    #[error("room id is longer than {MAX_ROOM_ID_LEN} bytes")]
    TooLong,
    #[error("room id contains a control character")]
    ControlChar,
}

impl RoomId {
    pub fn parse(s: impl Into<String>) -> Result<Self, RoomIdError> {
        let s = s.into();
        if s.is_empty() {
            return Err(RoomIdError::Empty);
        }
        if s.len() > MAX_ROOM_ID_LEN {
            return Err(RoomIdError::TooLong);
        }
        if s.chars().any(char::is_control) {
            return Err(RoomIdError::ControlChar);
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RoomId {
    type Error = RoomIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<RoomId> for String {
    fn from(id: RoomId) -> String {
        id.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// One answer of the upstream, in its own `data` shape. Fields other than
/// `exists`, `isActive` and `roomId` are absent when the room does not exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomStatus {
    pub exists: bool,
    pub is_active: bool,
    pub room_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_teacher: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_recording: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

impl RoomStatus {
    /// A live class with its teacher and `participants` (for tests).
    #[cfg(test)]
    pub fn live_for_tests(room: &str, participants: u64) -> Self {
        Self {
            exists: true,
            is_active: true,
            room_id: room.into(),
            title: Some("Calculus".into()),
            participant_count: Some(participants),
            has_teacher: Some(true),
            is_recording: Some(false),
            created_at: Some("2024-01-15T09:00:00.000Z".into()),
            started_at: Some("2024-01-15T09:02:30.000Z".into()),
        }
    }

    /// The upstream's "Room not found" answer for `room`.
    pub fn not_found(room: &str) -> Self {
        Self {
            exists: false,
            is_active: false,
            room_id: room.to_string(),
            title: None,
            participant_count: None,
            has_teacher: None,
            is_recording: None,
            created_at: None,
            started_at: None,
        }
    }

    /// The message the upstream sends beside this `data`.
    pub fn upstream_message(&self) -> &'static str {
        if self.exists {
            "Room status retrieved"
        } else {
            "Room not found"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_opaque_but_bounded() {
        assert!(RoomId::parse("math 101/ü·数学").is_ok());
        assert_eq!(RoomId::parse(""), Err(RoomIdError::Empty));
        assert_eq!(RoomId::parse("a".repeat(257)), Err(RoomIdError::TooLong));
        assert_eq!(RoomId::parse("a\nb"), Err(RoomIdError::ControlChar));
    }

    #[test]
    fn not_found_shape_omits_absent_fields() {
        let room = RoomId::parse("math-101").unwrap();
        let json = serde_json::to_value(RoomStatus::not_found(room.as_str())).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"exists": false, "isActive": false, "roomId": "math-101"})
        );
    }
}
