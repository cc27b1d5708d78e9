//! Polling without a budget: each room's own loop at the fixed interval.

use super::{schedule, Auth, PollOutcome, Poller, Slot};
use crate::room::RoomId;
use crate::upstream::PollError;
use std::time::Duration;
use tokio::time::Instant;

impl Poller {
    /// One room's life: wait for its phase, then poll once per interval,
    /// backing off while it fails.
    pub(super) async fn room_loop(&self, room: RoomId, slot: &Slot, first: Duration) {
        let s = &self.inner.settings;
        let mut due = Instant::now() + first;
        loop {
            let wake = schedule::on_tick(due, self.inner.origin, schedule::WAKE_TICK);
            tokio::time::sleep_until(wake).await;
            if self.inner.auth.get() == Auth::Rejected {
                // One probe for everyone: the other rooms wait for its verdict.
                self.inner.auth.wait_not_rejected().await;
            }
            self.inner.pause.wait().await;
            self.inner.limiter.acquire().await;
            // Boxed: a poll's state (its permit, fetch and commit) exists
            // only while it runs, not in each of 10,000 sleeping tasks.
            let outcome = Box::pin(self.poll_at(&room, slot)).await;
            let failures = slot.failures();
            let error = match &outcome {
                PollOutcome::Failed(e) => Some(e),
                PollOutcome::NotWatched => {
                    if self.inner.ownership.is_some() {
                        // Unwatched, or its lease is gone: the next round
                        // starts it again if this instance wins it back.
                        self.stop_room(room.as_str());
                    }
                    return;
                }
                _ => None,
            };
            if matches!(error, Some(PollError::Unauthorized)) {
                // The gate holds this room until the probe sees the id accepted.
                continue;
            }
            let wait = schedule::next_wait(
                error,
                failures,
                s.interval,
                s.backoff_max,
                &mut rand::thread_rng(),
            );
            // Keep the room's phase while healthy; restart it after a failure.
            due = if error.is_none() {
                (due + wait).max(Instant::now())
            } else {
                Instant::now() + wait
            };
            slot.set_next_poll(due);
        }
    }
}
