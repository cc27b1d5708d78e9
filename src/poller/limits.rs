//! What every room's poll shares: the requests-per-second cap, the pause a
//! 429 imposes, and whether the upstream accepts our org id.

use super::schedule::{on_tick, WAKE_TICK};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Spaces requests at least `1/rps` apart (no bursts), and never grants
/// more than `rps` in any second of real time; no cap when rps is 0.
pub struct RateLimiter {
    spacing: Option<Duration>,
    next: Mutex<Instant>,
    origin: Instant,
    /// When the last `rps` requests were let go. Spacing alone keeps the
    /// cap only while the relay keeps time: after a stall (a loaded host),
    /// the slots it missed would go out together. Held against this ledger,
    /// a grant waits until the one `rps` grants before it is [`LEDGER`] old.
    granted: Mutex<VecDeque<Instant>>,
    cap: usize,
}

/// How far behind its slots the limiter may run and still catch up: a
/// shared wake-up tick, and the timer's lateness beyond it.
const CATCH_UP: Duration = WAKE_TICK.saturating_add(Duration::from_millis(10));

/// How long `rps` grants must span: a second, and a tick to spare. Slots
/// exactly `1/rps` apart put the next second's first request exactly a
/// second after this one's, where the timer's jitter alone would decide
/// which second it falls in; the upstream sees at most `rps` in any second
/// all the same, for a 2% smaller share of each at full rate.
const LEDGER: Duration = Duration::from_secs(1).saturating_add(WAKE_TICK);

impl RateLimiter {
    pub fn new(rps: u32) -> Self {
        Self {
            spacing: (rps > 0).then(|| Duration::from_secs(1) / rps),
            next: Mutex::new(Instant::now()),
            origin: Instant::now(),
            granted: Mutex::new(VecDeque::with_capacity(rps as usize)),
            cap: rps as usize,
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
        while let Some(until) = self.grant(Instant::now()) {
            tokio::time::sleep_until(until).await;
        }
    }

    /// Grant a request at `now` unless `rps` were granted within [`LEDGER`]
    /// before it; else say when the oldest of them leaves that span.
    fn grant(&self, now: Instant) -> Option<Instant> {
        let mut granted = self.granted.lock().unwrap();
        while granted.front().is_some_and(|t| now - *t >= LEDGER) {
            granted.pop_front();
        }
        if granted.len() < self.cap {
            granted.push_back(now);
            return None;
        }
        granted.front().map(|t| *t + LEDGER)
    }

    /// Requests let go in the second before now (0 when uncapped): read
    /// from the ledger, which holds every grant of the last second.
    pub fn spent_last_second(&self) -> u32 {
        let now = Instant::now();
        let granted = self.granted.lock().unwrap();
        granted
            .iter()
            .filter(|t| now - **t < Duration::from_secs(1))
            .count() as u32
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

    /// A stall (here: time jumping while nothing ran) sends the slots it
    /// missed together; the ledger holds the later ones back, so no second
    /// of real time holds more than the cap.
    #[tokio::test(start_paused = true)]
    async fn no_second_holds_more_than_the_cap_even_after_a_stall() {
        let l = std::sync::Arc::new(RateLimiter::new(10));
        let start = Instant::now();
        let spawn = |l: &std::sync::Arc<RateLimiter>| {
            let l = l.clone();
            tokio::spawn(async move {
                l.acquire().await;
                Instant::now() - start
            })
        };
        // Ten requests take their slots (0 to 900 ms) and wait for them...
        let first: Vec<_> = (0..10).map(|_| spawn(&l)).collect();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // ...while the process stalls until 950 ms: nine go out at once.
        tokio::time::advance(Duration::from_millis(950)).await;
        let mut sent = Vec::new();
        for t in first {
            sent.push(t.await.unwrap());
        }
        // Ten more, one after another, on slots from 1 s on.
        for _ in 0..10 {
            sent.push(spawn(&l).await.unwrap());
        }
        sent.sort();
        for (i, at) in sent.iter().enumerate() {
            let within = sent[i..]
                .iter()
                .take_while(|t| **t - *at < Duration::from_secs(1))
                .count();
            assert!(
                within <= 10,
                "{within} requests in the second from {at:?}: {sent:?}"
            );
        }
        // The gauge reads the same ledger: the grants of the second before now.
        let last = *sent.last().unwrap();
        let recent = sent
            .iter()
            .filter(|t| last - **t < Duration::from_secs(1))
            .count();
        assert_eq!(l.spent_last_second() as usize, recent);
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
