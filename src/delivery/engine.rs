//! The delivery engine: a thin dispatcher loop around [`Engine::deliver_once`].
//! It alone decides what is sent when, so lane order needs no locks.

use super::retry::{verdict, AttemptOutcome};
use super::{Delivery, DeliveryStatus, Verdict};
use crate::store::{ms, Store};
use crate::subscription::should_disable;
use chrono::Utc;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, instrument, warn};

use super::sender::Sender;

#[derive(Clone)]
pub struct Engine {
    store: Store,
    sender: Sender,
    schedule: Arc<Vec<Duration>>,
    concurrency: usize,
    /// Woken when deliveries may have become due (new events, API actions).
    wake: Arc<Notify>,
}

/// A delivery lane: (subscription id, room id).
type Lane = (String, String);

/// A finished attempt, reported back to the dispatcher.
struct Done {
    key: [u8; 16],
    lane: Lane,
    verdict: Option<Verdict>,
}

impl Engine {
    pub fn new(
        store: Store,
        sender: Sender,
        schedule: Vec<Duration>,
        concurrency: usize,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            sender,
            schedule: Arc::new(schedule),
            concurrency: concurrency.max(1),
            wake,
        }
    }

    /// Send one delivery once and record what happened. Returns None when the
    /// delivery, its subscription or its event is gone.
    #[instrument(skip(self), fields(delivery = %crate::store::delivery_id(*key)))]
    pub async fn deliver_once(&self, key: &[u8; 16]) -> Option<(Delivery, Verdict)> {
        let store = &self.store;
        let delivery = store.delivery_at(key).ok()??;
        let sub = store.subscription(&delivery.subscription_id)?;
        let event = store.event(&delivery.event_id).ok()??;
        let now = Utc::now();
        let (attempt, outcome) = self.sender.send(&sub, &event, now).await;
        let n = delivery.attempts.len() - delivery.schedule_start.min(delivery.attempts.len()) + 1;
        let verdict = verdict(&outcome, n, &self.schedule, Utc::now(), rand::random());
        let recorded = match store.finish_attempt(key, &attempt, &verdict) {
            Ok(d) => d?,
            Err(e) => {
                warn!(error = %e, "could not record an attempt; it will be made again");
                return None;
            }
        };
        match (&outcome, &verdict) {
            (AttemptOutcome::Success, _) => {
                info!(subscription = %sub.id, event = %event.id, status = ?attempt.status_code, ms = attempt.duration_ms, "delivered")
            }
            (_, Verdict::Failed) => {
                warn!(subscription = %sub.id, event = %event.id, "delivery failed: retry schedule spent")
            }
            _ => {
                info!(subscription = %sub.id, event = %event.id, status = ?attempt.status_code, error = ?attempt.error, "attempt failed")
            }
        }
        self.after_attempt(&sub.id, &outcome);
        Some((recorded, verdict))
    }

    /// Keep the subscription's health: 410 or five days of failure disable it.
    fn after_attempt(&self, sub_id: &str, outcome: &AttemptOutcome) {
        let now = Utc::now();
        let result = self.store.update_subscription(sub_id, |s| match outcome {
            AttemptOutcome::Success => s.failing_since = None,
            AttemptOutcome::Gone => {
                s.enabled = false;
                s.disabled_reason = Some("receiver answered 410 Gone".into());
                s.updated_at = now;
            }
            AttemptOutcome::Failure { .. } => {
                let since = *s.failing_since.get_or_insert(now);
                if s.enabled && should_disable(Some(since), now) {
                    s.enabled = false;
                    s.disabled_reason = Some("failing without a success for 5 days".into());
                    s.updated_at = now;
                }
            }
        });
        match result {
            Ok(Some(s))
                if !s.enabled
                    && s.disabled_reason.is_some()
                    && !matches!(outcome, AttemptOutcome::Success) =>
            {
                warn!(subscription = %s.id, reason = ?s.disabled_reason, "subscription disabled")
            }
            Err(e) => warn!(error = %e, "could not update the subscription"),
            _ => {}
        }
    }

    /// Run until `shutdown`: pick what is due, in lane order, within the
    /// concurrency limit; attempts in flight finish on `tracker`.
    pub async fn run(self, shutdown: CancellationToken, tracker: TaskTracker) {
        // A crash may fall between finishing a lane's head and waking the next.
        if let Err(e) = self.store.wake_lane_heads(b"", Utc::now()) {
            warn!(error = %e, "could not recover delivery lanes");
        }
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut in_flight: HashSet<[u8; 16]> = HashSet::new();
        let mut busy_lanes: HashSet<Lane> = HashSet::new();
        loop {
            while let Ok(done) = done_rx.try_recv() {
                self.finished(done, &mut in_flight, &mut busy_lanes);
            }
            if shutdown.is_cancelled() {
                return;
            }
            let launch = match self.pick(&in_flight, &mut busy_lanes) {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "could not read the outbox");
                    Vec::new()
                }
            };
            if !launch.is_empty() {
                // Sent only once durable: a crash may send again, never invent.
                if let Err(e) = self.store.flush().await {
                    warn!(error = %e, "could not flush the store; holding deliveries");
                    for (_, lane) in launch {
                        busy_lanes.remove(&lane);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                for (key, lane) in launch {
                    in_flight.insert(key);
                    let (engine, tx) = (self.clone(), done_tx.clone());
                    tracker.spawn(async move {
                        let verdict = engine.deliver_once(&key).await.map(|(_, v)| v);
                        let _ = tx.send(Done { key, lane, verdict });
                    });
                }
            }
            let wait = self.idle_wait(&in_flight);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(done) = done_rx.recv() => self.finished(done, &mut in_flight, &mut busy_lanes),
                _ = self.wake.notified() => {}
                _ = sleep_or_forever(wait) => {}
            }
        }
    }

    fn finished(&self, done: Done, in_flight: &mut HashSet<[u8; 16]>, busy: &mut HashSet<Lane>) {
        in_flight.remove(&done.key);
        busy.remove(&done.lane);
        // The lane moves on when its head is finished either way (or vanished).
        if !matches!(
            done.verdict,
            Some(Verdict::RetryAt(_)) | Some(Verdict::Hold)
        ) {
            let (sub, room) = &done.lane;
            if let Err(e) = self.store.wake_lane(sub, room, Utc::now()) {
                warn!(error = %e, "could not advance a delivery lane");
            }
        }
    }

    /// Choose what to send now. Entries that are stale are dropped; those
    /// that must wait for their lane or their subscription are parked.
    fn pick(
        &self,
        in_flight: &HashSet<[u8; 16]>,
        busy: &mut HashSet<Lane>,
    ) -> crate::store::Result<Vec<([u8; 16], Lane)>> {
        let free = self.concurrency.saturating_sub(in_flight.len());
        let mut launch = Vec::new();
        if free == 0 {
            return Ok(launch);
        }
        let store = &self.store;
        for (at, key) in store.due(ms(Utc::now()), in_flight.len() + free * 4)? {
            if launch.len() >= free {
                break;
            }
            if in_flight.contains(&key) {
                continue;
            }
            let Some(d) = store.delivery_at(&key)? else {
                store.drop_due(at, &key)?;
                continue;
            };
            if d.status != DeliveryStatus::Pending || d.next_attempt_at.map(ms) != Some(at) {
                store.drop_due(at, &key)?;
                continue;
            }
            let lane = (d.subscription_id.clone(), d.lane().to_string());
            let enabled = store.subscription(&d.subscription_id).map(|s| s.enabled);
            match enabled {
                None => {
                    store.drop_due(at, &key)?;
                    continue;
                }
                Some(false) => {
                    store.park(&key)?;
                    continue;
                }
                Some(true) => {}
            }
            if busy.contains(&lane) || store.lane_head(&lane.0, &lane.1)? != Some(key) {
                // Its turn comes when the lane's head finishes.
                store.park(&key)?;
                continue;
            }
            busy.insert(lane.clone());
            launch.push((key, lane));
        }
        Ok(launch)
    }

    /// How long to sleep when nothing more can be launched now.
    fn idle_wait(&self, in_flight: &HashSet<[u8; 16]>) -> Option<Duration> {
        if in_flight.len() >= self.concurrency {
            return None; // only a finished attempt frees a slot
        }
        let entries = self.store.due(u64::MAX, in_flight.len() + 1).ok()?;
        let next = entries
            .iter()
            .find(|(_, k)| !in_flight.contains(k))
            .map(|(t, _)| *t)?;
        let now = ms(Utc::now());
        Some(Duration::from_millis(next.saturating_sub(now)).min(Duration::from_secs(60)))
    }
}

async fn sleep_or_forever(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
