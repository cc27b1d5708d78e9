//! What the budget scheduler keeps per room: the LMS's schedule hints (in
//! the room's record) and what it learned of the room's week.

use super::{Result, Store};
use crate::db::{decode, encode};
use crate::poller::history::History;
use crate::room::RoomId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One class an LMS expects in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClassWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Store {
    /// Replace a watched room's schedule; false when it is not watched.
    pub fn set_schedule(&self, room: &RoomId, schedule: &[ClassWindow]) -> Result<bool> {
        let mut found = false;
        self.rooms
            .fetch_and_update(room.as_str().as_bytes(), |old| {
                let bytes = old?;
                match decode::<super::RoomRecord>("rooms", bytes) {
                    Ok(mut r) if r.watched_since.is_some() => {
                        found = true;
                        r.schedule = schedule.to_vec();
                        Some(encode(&r))
                    }
                    _ => Some(bytes.to_vec()),
                }
            })?;
        Ok(found)
    }

    /// What the scheduler learned of a room, or nothing yet.
    pub fn poll_history(&self, room: &str) -> Result<History> {
        Ok(match self.poll_history.get(room.as_bytes())? {
            Some(b) => decode("poll_history", &b)?,
            None => History::default(),
        })
    }

    pub fn save_poll_history(&self, room: &str, history: &History) -> Result<()> {
        self.poll_history.insert(room.as_bytes(), encode(history))?;
        Ok(())
    }
}
