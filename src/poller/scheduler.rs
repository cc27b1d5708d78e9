//! The budget scheduler: every room's next poll from its weight in the
//! budget ([`super::budget`]), the most overdue room first (pure; time is
//! seconds since the epoch).

use super::budget::{rate, share, Phase, Reason, Signals, Window};
use super::history::History;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;

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
