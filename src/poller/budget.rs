//! Where a poll budget goes: each room's expected change rate from its
//! state, schedule hints and learned week, and polls shared in proportion
//! to the square root of those rates (pure; time is seconds since the epoch).
//!
//! The model is the one of Cho and Garcia-Molina, "Effective page refresh
//! policies for web crawlers" (ACM TODS 2003): changes arrive as a Poisson
//! process of rate λᵢ. Polling room i every Iᵢ seconds detects a change
//! Iᵢ/2 late on average, so the expected delay summed over all changes is
//! Σ λᵢ Iᵢ / 2, to be minimised subject to Σ 1/Iᵢ = budget. The Lagrange
//! condition gives Iᵢ ∝ 1/√λᵢ: the square-root rule (also the optimum of
//! Azar et al., "Tractable near-optimal policies for crawling", PNAS 2018).
//! As Sia, Cho and Cho ("Efficient monitoring algorithm for fast news
//! alerts", IEEE TKDE 2007) do with time-of-day patterns, λᵢ is not a
//! constant: it rises around a room's expected start (from an LMS's hints
//! or the weeks it has been watched) and with its state, because Verriflo's
//! teachers create a room when they join, so a room that exists but is not
//! live is about to start.

use super::history::History;

pub use super::scheduler::{Scheduler, Seen, Settings};

const MIN: f64 = 60.0;

/// How long after a room appears its start is expected: the teacher
/// created it on joining.
const IMMINENT: f64 = 20.0 * MIN;
/// How long after a class ends its room is expected to be deleted.
const WINDING_DOWN: f64 = 45.0 * MIN;
/// Around an expected start: from before the earliest creation to after
/// the latest start.
const BEFORE_START: f64 = 20.0 * MIN;
const AFTER_START: f64 = 15.0 * MIN;
/// Around an expected end.
const BEFORE_END: f64 = 5.0 * MIN;
const AFTER_END: f64 = 15.0 * MIN;

/// A room's state as the scheduler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Not polled successfully yet: poll at once.
    Unknown,
    /// Does not exist.
    Absent,
    /// Exists, not live, not live since it appeared: about to start.
    Waiting,
    Live,
    /// Exists, not live any more.
    Ended,
}

impl Phase {
    /// The phase an answer puts a room in, given the phase it was in.
    pub fn after(self, exists: bool, live: bool) -> Phase {
        match (exists, live) {
            (_, true) => Phase::Live,
            (false, false) => Phase::Absent,
            (true, false) if matches!(self, Phase::Live | Phase::Ended) => Phase::Ended,
            (true, false) => Phase::Waiting,
        }
    }

    /// Index into learned per-phase rates.
    pub fn slot(self) -> usize {
        match self {
            Phase::Unknown | Phase::Absent => 0,
            Phase::Waiting => 1,
            Phase::Live => 2,
            Phase::Ended => 3,
        }
    }
}

/// Why a room's next poll is when it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Its share of the budget by its state.
    State,
    /// A schedule hint says a class begins or ends about now.
    Schedule,
    /// Its past weeks say a class begins about now.
    History,
    /// The last poll failed: backing off.
    Retry,
    /// Never polled yet.
    New,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::State => "state",
            Reason::Schedule => "schedule",
            Reason::History => "history",
            Reason::Retry => "retry",
            Reason::New => "new",
        }
    }
}

/// A class an LMS expects, in seconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub start: f64,
    pub end: f64,
}

/// Prior change rates (per second) by phase, before a room has history.
///
/// These weigh each kind of event alike rather than each event: a live
/// room's many `participants.changed` would otherwise draw the whole budget
/// and leave a room's appearance, rarer but as important, found late.
fn prior(phase: Phase, in_phase: f64) -> f64 {
    match phase {
        Phase::Unknown => f64::INFINITY,
        Phase::Absent => 1.0 / 900.0,
        // Off the scale: polled at the shortest interval, before any share.
        Phase::Waiting if in_phase < IMMINENT => f64::INFINITY,
        Phase::Waiting => 1.0 / 1800.0,
        Phase::Live => 1.0 / 1800.0,
        Phase::Ended if in_phase < WINDING_DOWN => 1.0 / 1800.0,
        Phase::Ended => 1.0 / 3600.0,
    }
}

/// What is known of one room when its rate is judged.
pub struct Signals<'a> {
    pub phase: Phase,
    /// Seconds since it entered its phase.
    pub in_phase: f64,
    pub hints: &'a [Window],
    pub history: &'a History,
}

/// A room's expected change rate now, and what set it.
pub fn rate(s: &Signals, now: f64) -> (f64, Reason) {
    let base = match s.phase {
        // Waiting and winding down hang on the clock, not on the room.
        Phase::Waiting | Phase::Ended | Phase::Unknown => prior(s.phase, s.in_phase),
        // What the room taught moves its prior by at most a factor of two
        // either way: enough to tell a busy class from a quiet one, never
        // enough to starve the rarer kinds of event.
        _ => {
            let p = prior(s.phase, s.in_phase);
            s.history.learned_rate(s.phase, p).clamp(p / 2.0, p * 2.0)
        }
    };
    let mut best = (base, Reason::State);
    let mut boost = |lambda: f64, why: Reason| {
        if lambda > best.0 {
            best = (lambda, why);
        }
    };
    let before_start = matches!(s.phase, Phase::Absent | Phase::Ended);
    for w in s.hints {
        if before_start && now >= w.start - BEFORE_START && now <= w.start + AFTER_START {
            boost(1.0 / 300.0, Reason::Schedule);
        }
        if s.phase == Phase::Live && now >= w.end - BEFORE_END && now <= w.end + AFTER_END {
            boost(1.0 / 15.0, Reason::Schedule);
        }
    }
    if before_start && s.history.expects_start(now, BEFORE_START, AFTER_START) {
        boost(1.0 / 300.0, Reason::History);
    }
    // A room whose weeks are known and quiet now is polled least.
    let knows_its_week = !s.hints.is_empty() || s.history.knows_its_week();
    if best.1 == Reason::State && s.phase == Phase::Absent && knows_its_week {
        best.0 /= 2.0;
    }
    best
}

/// The multiplier `c` such that Σ clamp(c·wᵢ, lo, hi) = target, for
/// weights wᵢ = √λᵢ (the square-root rule within the interval bounds).
pub fn share(weights: &[f64], target: f64, lo: f64, hi: f64) -> f64 {
    let total = |c: f64| -> f64 { weights.iter().map(|w| (c * w).clamp(lo, hi)).sum() };
    if weights.is_empty() || total(f64::MAX) <= target {
        return f64::MAX;
    }
    if total(0.0) >= target {
        return 0.0;
    }
    let (mut a, mut b) = (0.0_f64, 1.0_f64);
    while total(b) < target {
        b *= 2.0;
    }
    // To a part in a million of the multiplier: far finer than a poll.
    while b - a > b * 1e-6 {
        let m = (a + b) / 2.0;
        if total(m) < target {
            a = m;
        } else {
            b = m;
        }
    }
    b
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
