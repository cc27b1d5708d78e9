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
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;

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
/// Allocation is redone this often (and for a room whenever it is polled),
/// and at most once a second when rooms come, go or change phase.
const RECOMPUTE: f64 = 15.0;
const RECOMPUTE_SOON: f64 = 1.0;
/// Part of the budget planned for: the rest absorbs retries, probes and
/// rooms watched between two recomputes.
const PLANNED: f64 = 0.95;
/// Part of the longest interval planned for: the rest absorbs waiting for
/// a slot behind rooms due at the same time.
const MAX_PLANNED: f64 = 0.9;

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

#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Polls per second in all.
    pub budget: f64,
    /// Shortest and longest interval, seconds.
    pub min: f64,
    pub max: f64,
}

impl Settings {
    /// The lowest rate a room may get: once per longest interval, planned
    /// with slack.
    fn lowest(&self) -> f64 {
        1.0 / (self.max * MAX_PLANNED).max(self.min)
    }
}

/// One room in the scheduler.
struct Slot {
    phase: Phase,
    since: f64,
    last_poll: Option<f64>,
    retry_at: Option<f64>,
    hints: Vec<Window>,
    history: History,
    weight: f64,
    reason: Reason,
    due: f64,
    in_flight: bool,
    generation: u64,
}

impl Slot {
    /// The room's weight (√λ) and why, as of `now`.
    fn judge(&mut self, now: f64) {
        let (lambda, reason) = rate(
            &Signals {
                phase: self.phase,
                in_phase: now - self.since,
                hints: &self.hints,
                history: &self.history,
            },
            now,
        );
        self.weight = lambda.sqrt();
        self.reason = if self.phase == Phase::Unknown {
            Reason::New
        } else {
            reason
        };
    }
}

/// The budget scheduler: every room's next poll, the most overdue first.
pub struct Scheduler<K> {
    settings: Settings,
    rooms: HashMap<K, Slot>,
    queue: BinaryHeap<Reverse<(u64, u64, K)>>,
    c: f64,
    /// The rate of rooms about to start (the shortest interval, unless
    /// there are too many of them for the budget).
    fast: f64,
    last_recompute: f64,
    next_recompute: f64,
    generation: u64,
}

/// What one poll of a room saw.
pub enum Seen {
    /// An answer: whether the room exists and is live, and how many events
    /// it produced.
    Answer {
        exists: bool,
        live: bool,
        events: usize,
    },
    /// No answer; try again no sooner than this many seconds.
    Failed { backoff: f64 },
}

impl<K: Clone + Eq + Hash + Ord> Scheduler<K> {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            rooms: HashMap::new(),
            queue: BinaryHeap::new(),
            c: 0.0,
            fast: 1.0 / settings.min,
            last_recompute: f64::NEG_INFINITY,
            next_recompute: f64::NEG_INFINITY,
            generation: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Watch a room (again): polled at once.
    pub fn insert(&mut self, key: K, hints: Vec<Window>, history: History, now: f64) {
        let slot = Slot {
            phase: Phase::Unknown,
            since: now,
            last_poll: None,
            retry_at: None,
            hints,
            history,
            weight: f64::INFINITY,
            reason: Reason::New,
            due: now,
            in_flight: false,
            generation: 0,
        };
        self.rooms.insert(key.clone(), slot);
        self.requeue(&key, now);
        self.recompute_soon();
    }

    pub fn remove(&mut self, key: &K) {
        self.rooms.remove(key);
        self.recompute_soon();
    }

    /// The rooms' weights changed: share the budget anew within a second.
    fn recompute_soon(&mut self) {
        self.next_recompute = self
            .next_recompute
            .min(self.last_recompute + RECOMPUTE_SOON);
    }

    pub fn set_hints(&mut self, key: &K, hints: Vec<Window>, now: f64) {
        if let Some(slot) = self.rooms.get_mut(key) {
            slot.hints = hints;
            self.requeue(key, now);
        }
    }

    /// The most overdue room, if one is due: it is in flight until
    /// [`Self::observe`].
    pub fn pick(&mut self, now: f64) -> Option<(K, Reason)> {
        if now >= self.next_recompute {
            self.recompute(now);
        }
        while let Some(Reverse((due, generation, key))) = self.queue.peek().cloned() {
            let Some(slot) = self.rooms.get_mut(&key) else {
                self.queue.pop();
                continue;
            };
            if slot.generation != generation || slot.in_flight {
                self.queue.pop();
                continue;
            }
            if f64::from_bits(due) > now {
                return None;
            }
            self.queue.pop();
            slot.in_flight = true;
            return Some((key, slot.reason));
        }
        None
    }

    /// When the next room falls due, if any is queued.
    pub fn next_due(&mut self) -> Option<f64> {
        while let Some(Reverse((due, generation, key))) = self.queue.peek() {
            match self.rooms.get(key) {
                Some(s) if s.generation == *generation && !s.in_flight => {
                    return Some(f64::from_bits(*due).min(self.next_recompute));
                }
                _ => {
                    self.queue.pop();
                }
            }
        }
        None
    }

    /// A poll of `key` came back. Returns true when its history learned
    /// something worth keeping.
    pub fn observe(&mut self, key: &K, now: f64, seen: Seen) -> bool {
        let Some(slot) = self.rooms.get_mut(key) else {
            return false;
        };
        slot.in_flight = false;
        let mut learned = false;
        let mut moved = false;
        match seen {
            Seen::Answer {
                exists,
                live,
                events,
            } => {
                if let Some(last) = slot.last_poll {
                    slot.history
                        .dwell(slot.phase, (now - last).max(0.0), events as f64);
                }
                let phase = slot.phase.after(exists, live);
                // A room that appears marks a class beginning in its week.
                let began = matches!(slot.phase, Phase::Absent | Phase::Ended)
                    && matches!(phase, Phase::Waiting | Phase::Live);
                if began {
                    slot.history.record_start(now);
                    learned = true;
                }
                moved = phase != slot.phase;
                if moved {
                    slot.phase = phase;
                    slot.since = now;
                }
                slot.last_poll = Some(now);
                slot.retry_at = None;
            }
            Seen::Failed { backoff } => {
                slot.retry_at = Some(now + backoff);
                slot.last_poll.get_or_insert(now);
            }
        }
        self.requeue(key, now);
        if moved {
            self.recompute_soon();
        }
        learned
    }

    /// When `key` is next polled and why.
    pub fn next_poll(&self, key: &K) -> Option<(f64, Reason)> {
        let slot = self.rooms.get(key)?;
        Some((slot.due, slot.reason))
    }

    pub fn history(&self, key: &K) -> Option<&History> {
        self.rooms.get(key).map(|s| &s.history)
    }

    /// Share the budget anew: every room's weight, then the multiplier.
    fn recompute(&mut self, now: f64) {
        self.last_recompute = now;
        self.next_recompute = now + RECOMPUTE;
        let mut weights = Vec::with_capacity(self.rooms.len());
        let mut fastest = 0usize;
        for slot in self.rooms.values_mut() {
            slot.judge(now);
            if slot.weight.is_finite() {
                weights.push(slot.weight);
            } else if slot.phase != Phase::Unknown {
                fastest += 1;
            }
        }
        let s = self.settings;
        // Rooms about to start take their shortest interval off the top,
        // as far as the others can still be seen within the longest.
        let planned = s.budget * PLANNED;
        let floor = weights.len() as f64 * s.lowest();
        self.fast = if fastest == 0 {
            1.0 / s.min
        } else {
            ((planned - floor) / fastest as f64).clamp(s.lowest(), 1.0 / s.min)
        };
        let left = (planned - fastest as f64 * self.fast).max(0.0);
        self.c = share(&weights, left, s.lowest(), 1.0 / s.min);
        let keys: Vec<K> = self.rooms.keys().cloned().collect();
        self.queue.clear();
        for k in keys {
            self.queue_at_due(&k);
        }
    }

    /// Judge a room afresh and queue it.
    fn requeue(&mut self, key: &K, now: f64) {
        if let Some(slot) = self.rooms.get_mut(key) {
            slot.judge(now);
        }
        self.queue_at_due(key);
    }

    /// Set a room's due time from its weight and queue it.
    fn queue_at_due(&mut self, key: &K) {
        let s = self.settings;
        let (c, fast) = (self.c, self.fast);
        self.generation += 1;
        let generation = self.generation;
        let Some(slot) = self.rooms.get_mut(key) else {
            return;
        };
        if slot.in_flight {
            return;
        }
        slot.due = match (slot.last_poll, slot.retry_at) {
            (_, Some(retry)) => {
                slot.reason = Reason::Retry;
                retry
            }
            // Never polled: keeps the time it was watched, so rooms polled
            // since cannot overtake it.
            (None, None) => slot.due,
            (Some(last), None) => {
                let per_sec = if slot.weight.is_finite() {
                    (c * slot.weight).clamp(s.lowest(), 1.0 / s.min)
                } else {
                    fast
                };
                last + (1.0 / per_sec).max(s.min)
            }
        };
        slot.generation = generation;
        self.queue.push(Reverse((
            slot.due.max(0.0).to_bits(),
            generation,
            key.clone(),
        )));
    }
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
