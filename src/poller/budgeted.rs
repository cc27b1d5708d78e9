//! The budget's thin loop: one task takes a budget slot, asks the pure
//! scheduler ([`super::budget`]) for the most overdue room, and polls it.

use super::budget::{Reason, Scheduler, Seen, Settings, Window};
use super::history::History;
use super::{schedule, Auth, PollOutcome, Poller};
use crate::metrics::Why;
use crate::room::RoomId;
use crate::store::ClassWindow;
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tracing::warn;

/// The scheduler shared by the loop, the poll tasks and the API.
pub struct Budgeted {
    sched: Mutex<Scheduler<Arc<str>>>,
    /// Woken when a room is added or a poll comes back.
    wake: Notify,
}

/// How far ahead a room counts as due: the timer's resolution. Sleeping
/// for less rounds up to a whole millisecond, which would cap the budget
/// near 1,000 polls a second.
const LOOKAHEAD: f64 = 0.001;

/// Now, in the scheduler's seconds since the epoch.
fn now_secs() -> f64 {
    Utc::now().timestamp_micros() as f64 / 1e6
}

fn to_time(secs: f64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros((secs * 1e6) as i64).unwrap_or_default()
}

pub fn windows(schedule: &[ClassWindow]) -> Vec<Window> {
    let secs = |t: DateTime<Utc>| t.timestamp_micros() as f64 / 1e6;
    schedule
        .iter()
        .map(|w| Window {
            start: secs(w.start),
            end: secs(w.end),
        })
        .collect()
}

impl Budgeted {
    pub fn new(settings: Settings) -> Self {
        Self {
            sched: Mutex::new(Scheduler::new(settings)),
            wake: Notify::new(),
        }
    }

    pub fn insert(&self, room: &RoomId, hints: Vec<Window>, history: History) {
        self.sched
            .lock()
            .unwrap()
            .insert(room.as_str().into(), hints, history, now_secs());
        self.wake.notify_one();
    }

    pub fn remove(&self, room: &str) {
        self.sched.lock().unwrap().remove(&Arc::from(room));
    }

    pub fn set_hints(&self, room: &str, hints: Vec<Window>) {
        self.sched
            .lock()
            .unwrap()
            .set_hints(&Arc::from(room), hints, now_secs());
        self.wake.notify_one();
    }

    pub fn next_poll(&self, room: &str) -> Option<(DateTime<Utc>, Reason)> {
        let (at, why) = self.sched.lock().unwrap().next_poll(&Arc::from(room))?;
        Some((to_time(at), why))
    }
}

impl Poller {
    /// Poll the most overdue room at every budget slot, until shutdown.
    pub(super) async fn drive_budget(self) {
        let Some(b) = self.inner.budget.as_ref() else {
            return;
        };
        let shutdown = self.inner.shutdown.clone();
        loop {
            if self.inner.auth.get() == Auth::Rejected {
                // The probe asks for everyone until the org id is accepted.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.inner.auth.wait_not_rejected() => {}
                }
            }
            self.inner.pause.wait().await;
            let wait = {
                let mut sched = b.sched.lock().unwrap();
                sched.next_due().map(|due| due - now_secs())
            };
            match wait {
                Some(w) if w <= LOOKAHEAD => {}
                Some(w) => {
                    let w = std::time::Duration::from_secs_f64(w.min(3600.0));
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(w) => {}
                        _ = b.wake.notified() => {}
                    }
                    continue;
                }
                None => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = b.wake.notified() => {}
                    }
                    continue;
                }
            }
            // The budget's slot: every upstream request takes one.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.inner.limiter.acquire() => {}
            }
            let picked = b.sched.lock().unwrap().pick(now_secs() + LOOKAHEAD);
            let Some((key, reason)) = picked else {
                continue;
            };
            self.inner
                .metrics
                .polls_by_reason
                .get_or_create(&Why {
                    reason: reason.as_str(),
                })
                .inc();
            let Ok(room) = RoomId::parse(key.to_string()) else {
                continue;
            };
            let this = self.clone();
            self.spawn_poll(async move {
                let outcome = this.poll_once(&room).await;
                this.observe(&room, key, outcome).await;
            });
        }
    }

    /// Tell the scheduler what a poll saw, and keep what it learned.
    async fn observe(&self, room: &RoomId, key: Arc<str>, outcome: PollOutcome) {
        let Some(b) = self.inner.budget.as_ref() else {
            return;
        };
        let s = &self.inner.settings;
        let seen = match &outcome {
            PollOutcome::NotWatched => return,
            PollOutcome::Unchanged | PollOutcome::Baseline | PollOutcome::Changed(_) => {
                let Some((exists, live)) = self.known_state(room.as_str()) else {
                    return;
                };
                Seen::Answer {
                    exists,
                    live,
                    events: match outcome {
                        PollOutcome::Changed(n) => n,
                        _ => 0,
                    },
                }
            }
            PollOutcome::Failed(e) => {
                let failures = self.failures(room.as_str());
                let wait = schedule::next_wait(
                    Some(e),
                    failures,
                    s.interval,
                    s.backoff_max,
                    &mut rand::thread_rng(),
                );
                Seen::Failed {
                    backoff: wait.as_secs_f64(),
                }
            }
            PollOutcome::StoreFailed | PollOutcome::Stale => Seen::Failed {
                backoff: s.interval.as_secs_f64(),
            },
        };
        let learned = {
            let mut sched = b.sched.lock().unwrap();
            sched
                .observe(&key, now_secs(), seen)
                .then(|| sched.history(&key).cloned())
                .flatten()
        };
        b.wake.notify_one();
        if let Some(history) = learned {
            if let Err(e) = self
                .inner
                .store
                .save_poll_history(room.as_str(), &history)
                .await
            {
                warn!(room = %room, error = %e, "could not keep what the scheduler learned");
            }
        }
    }
}
