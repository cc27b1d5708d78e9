//! What every room's poll shares: the requests-per-second cap, the pause a
//! 429 imposes, and whether the upstream accepts our org id.

use super::schedule::{on_tick, WAKE_TICK};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Spaces requests at least `1/rps` apart (no bursts), so no window of one
/// second ever holds more than `rps`; no cap when rps is 0.
pub struct RateLimiter {
    spacing: Option<Duration>,
    next: Mutex<Instant>,
    origin: Instant,
    spent: Mutex<Spent>,
}

/// How far behind its slots the limiter may run and still catch up: a
/// shared wake-up tick, and the timer's lateness beyond it.
const CATCH_UP: Duration = WAKE_TICK.saturating_add(Duration::from_millis(10));

/// Slots handed out, per second since the limiter started.
#[derive(Default)]
struct Spent {
    second: u64,
    this: u32,
    last: u32,
}

impl RateLimiter {
    pub fn new(rps: u32) -> Self {
        Self {
            spacing: (rps > 0).then(|| Duration::from_secs(1) / rps),
            next: Mutex::new(Instant::now()),
            origin: Instant::now(),
            spent: Mutex::default(),
        }
    }

    /// Wait for this request's slot.
    pub async fn acquire(&self) {
        let Some(spacing) = self.spacing else { return };
        let slot = {
            let mut next = self.next.lock().unwrap();
            // A slot missed by a late wake-up (the timer rounds to whole
            // milliseconds) is still taken, or high rates would lose a
            // share of every millisecond; after a real pause, no burst.
            let now = Instant::now();
            let slot = if *next + CATCH_UP < now { now } else { *next };
            *next = slot + spacing;
            slot
        };
        // A slot due within the timer's resolution is taken at once:
        // sleeping would round it up to the next whole millisecond and cap
        // the rate near 1,000/s. Slots still advance by `spacing`, so no
        // second holds more than its share.
        if slot > Instant::now() + Duration::from_millis(1) {
            // Woken on the shared tick, with every slot due before it: the
            // sends of one tick go together. A whole second is a whole
            // number of ticks, so no second holds more than its share.
            tokio::time::sleep_until(on_tick(slot, self.origin, WAKE_TICK)).await;
        }
        self.count(Instant::now());
    }

    fn count(&self, at: Instant) {
        let second = (at - self.origin).as_secs();
        let mut spent = self.spent.lock().unwrap();
        if second != spent.second {
            spent.last = if second == spent.second + 1 {
                spent.this
            } else {
                0
            };
            spent.second = second;
            spent.this = 0;
        }
        spent.this += 1;
    }

    /// Requests sent in the last full second (0 when uncapped).
    pub fn spent_last_second(&self) -> u32 {
        let now = (Instant::now() - self.origin).as_secs();
        let spent = self.spent.lock().unwrap();
        match now.checked_sub(spent.second) {
            Some(0) => spent.last,
            Some(1) => spent.this,
            _ => 0,
        }
    }
}

/// A pause every room honours after a 429.
#[derive(Default)]
pub struct Pause {
    until: Mutex<Option<Instant>>,
}

impl Pause {
    pub fn extend(&self, wait: Duration) {
        let target = Instant::now() + wait;
        let mut until = self.until.lock().unwrap();
        if until.is_none_or(|u| u < target) {
            *until = Some(target);
        }
    }

    pub async fn wait(&self) {
        let until = *self.until.lock().unwrap();
        if let Some(t) = until {
            tokio::time::sleep_until(t).await;
        }
    }
}

/// The upstream's view of our org id, as of the last answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No answer yet.
    Unknown,
    Accepted,
    Rejected,
}

pub struct AuthGate {
    tx: watch::Sender<Auth>,
}

impl Default for AuthGate {
    fn default() -> Self {
        Self {
            tx: watch::channel(Auth::Unknown).0,
        }
    }
}

impl AuthGate {
    pub fn get(&self) -> Auth {
        *self.tx.borrow()
    }

    /// Record an answer; returns true when this changes the state, so the
    /// caller logs a transition once rather than once per room.
    pub fn set(&self, auth: Auth) -> bool {
        self.tx.send_if_modified(|cur| {
            let changed = *cur != auth;
            *cur = auth;
            changed
        })
    }

    /// Resolve once the org id is not known to be rejected.
    pub async fn wait_not_rejected(&self) {
        let mut rx = self.tx.subscribe();
        // An error means the gate is gone, which only happens at shutdown.
        let _ = rx.wait_for(|a| *a != Auth::Rejected).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limiter_spaces_requests() {
        let l = RateLimiter::new(10);
        let start = Instant::now();
        for _ in 0..5 {
            l.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn pause_holds_until_it_ends() {
        let p = Pause::default();
        p.extend(Duration::from_secs(3));
        p.extend(Duration::from_secs(1));
        let start = Instant::now();
        p.wait().await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[test]
    fn auth_reports_transitions_once() {
        let g = AuthGate::default();
        assert!(g.set(Auth::Rejected));
        assert!(!g.set(Auth::Rejected));
        assert!(g.set(Auth::Accepted));
        assert_eq!(g.get(), Auth::Accepted);
    }
}
