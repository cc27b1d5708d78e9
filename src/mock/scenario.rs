//! A self-running scenario for the simulated upstream: classes are created,
//! start, fill up, get recorded, and end, on a compressed clock.

use super::MockUpstream;
use crate::room::RoomStatus;
use rand::Rng;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TITLES: &[&str] = &[
    "Calculus I - Morning Session",
    "Organic Chemistry Lab",
    "World History: The Silk Road",
    "Intro to Programming",
    "Spanish Conversation B1",
];

/// Drives `rooms` through class lifecycles, one change every `tick`.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub rooms: Vec<String>,
    pub tick: Duration,
}

fn now_iso() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

impl Scenario {
    pub async fn run(self, mock: MockUpstream, shutdown: CancellationToken) {
        if self.rooms.is_empty() {
            return;
        }
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let room = {
                let mut rng = rand::thread_rng();
                self.rooms[rng.gen_range(0..self.rooms.len())].clone()
            };
            step(&mock, &room, &mut rand::thread_rng());
        }
    }
}

/// Move one room one plausible step along its class's life.
pub fn step(mock: &MockUpstream, room: &str, rng: &mut impl Rng) {
    let Some(s) = mock.room(room).filter(|s| s.exists) else {
        mock.set_room(RoomStatus {
            exists: true,
            is_active: false,
            room_id: room.to_string(),
            title: Some(TITLES[rng.gen_range(0..TITLES.len())].to_string()),
            participant_count: Some(0),
            has_teacher: Some(false),
            is_recording: Some(false),
            created_at: Some(now_iso()),
            started_at: None,
        });
        return;
    };
    let teacher = s.has_teacher.unwrap_or(false);
    let recording = s.is_recording.unwrap_or(false);
    let count = s.participant_count.unwrap_or(0);
    let roll: f64 = rng.gen();
    if !s.is_active {
        if roll < 0.8 {
            mock.update_room(room, |s| {
                s.is_active = true;
                s.started_at = Some(now_iso());
                s.participant_count = Some(rng.gen_range(1..6));
            });
        } else {
            mock.remove_room(room);
        }
        return;
    }
    mock.update_room(room, |s| match (teacher, recording) {
        (false, _) if count > 0 && roll < 0.35 => {
            s.is_active = false;
            s.has_teacher = Some(false);
            s.is_recording = Some(false);
            s.participant_count = Some(0);
        }
        (false, _) => {
            s.has_teacher = Some(true);
            s.participant_count = Some(count + 1);
        }
        (true, false) if roll < 0.4 => s.is_recording = Some(true),
        (true, false) if roll < 0.85 => s.participant_count = Some(wiggle(count, rng)),
        (true, false) if roll < 0.92 => {
            s.title = Some(TITLES[rng.gen_range(0..TITLES.len())].to_string())
        }
        (true, false) => {
            s.has_teacher = Some(false);
            s.participant_count = Some(count.saturating_sub(1));
        }
        (true, true) if roll < 0.7 => s.participant_count = Some(wiggle(count, rng)),
        (true, true) => s.is_recording = Some(false),
    });
}

fn wiggle(count: u64, rng: &mut impl Rng) -> u64 {
    let delta: i64 = rng.gen_range(-3..=4);
    (count as i64 + delta).clamp(1, 40) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_always_leave_a_documented_state() {
        let mock = MockUpstream::new(None);
        let mut rng = rand::thread_rng();
        let mut seen_active = false;
        for _ in 0..2_000 {
            step(&mock, "r", &mut rng);
            if let Some(s) = mock.room("r") {
                assert!(s.exists && (s.is_active || !s.has_teacher.unwrap_or(false)));
                seen_active |= s.is_active && s.has_teacher == Some(true);
            }
        }
        assert!(seen_active);
    }
}
