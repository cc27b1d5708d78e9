//! What a room's past weeks taught the budget scheduler: the times of week
//! its classes began, and how often it changed in each phase. Kept in the
//! store, so a restart does not forget a term's timetable.

use super::budget::Phase;
use serde::{Deserialize, Serialize};

const WEEK_MINUTES: i64 = 7 * 24 * 60;
/// Starts this close (minutes) are one slot of the timetable.
const SAME_SLOT: i64 = 20;
/// Slots kept per room: a full timetable, with room for a term's changes.
const MAX_SLOTS: usize = 64;
/// A room whose week is known: this many slots seen.
const KNOWN_WEEK: usize = 3;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Minutes of the week (0 = Thursday 00:00 UTC, the epoch's weekday)
    /// at which the room began, oldest first.
    starts: Vec<u16>,
    /// Per phase (see [`Phase::slot`]): seconds watched and events seen.
    seconds: [f64; 4],
    events: [f64; 4],
}

fn minute_of_week(t: f64) -> i64 {
    ((t / 60.0).floor() as i64).rem_euclid(WEEK_MINUTES)
}

/// Minutes from `a` forward to `b` around the week.
fn ahead(a: i64, b: i64) -> i64 {
    (b - a).rem_euclid(WEEK_MINUTES)
}

impl History {
    /// A class began at `t`: remember its slot in the week.
    pub fn record_start(&mut self, t: f64) {
        let m = minute_of_week(t);
        if let Some(i) = self
            .starts
            .iter()
            .position(|&s| ahead(s as i64, m).min(ahead(m, s as i64)) <= SAME_SLOT)
        {
            // The slot again: keep its latest time, newest last.
            self.starts.remove(i);
        }
        self.starts.push(m as u16);
        if self.starts.len() > MAX_SLOTS {
            self.starts.remove(0);
        }
    }

    /// Whether a class began in past weeks within `before`..`after` seconds
    /// around this time of week.
    pub fn expects_start(&self, now: f64, before: f64, after: f64) -> bool {
        let m = minute_of_week(now);
        let (before, after) = ((before / 60.0) as i64, (after / 60.0) as i64);
        self.starts
            .iter()
            .any(|&s| ahead(m, s as i64) <= before || ahead(s as i64, m) <= after)
    }

    /// Enough classes seen to call the rest of the week quiet.
    pub fn knows_its_week(&self) -> bool {
        self.starts.len() >= KNOWN_WEEK
    }

    /// `seconds` spent in `phase`, with `events` seen at its end.
    pub fn dwell(&mut self, phase: Phase, seconds: f64, events: f64) {
        if phase == Phase::Unknown {
            return;
        }
        self.seconds[phase.slot()] += seconds;
        self.events[phase.slot()] += events;
    }

    /// The change rate learned for `phase`: a Gamma-Poisson posterior mean
    /// that starts at `prior` (one pseudo-event) and follows the room.
    pub fn learned_rate(&self, phase: Phase, prior: f64) -> f64 {
        if !prior.is_finite() || prior <= 0.0 {
            return prior;
        }
        let i = phase.slot();
        (self.events[i] + 1.0) / (self.seconds[i] + 1.0 / prior)
    }

    pub fn starts(&self) -> usize {
        self.starts.len()
    }
}
