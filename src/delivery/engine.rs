//! The delivery engine: a thin dispatcher loop around the single step
//! ([`Engine::attempt`], [`Engine::record`]). It alone decides what is sent
//! when, so lane order needs no locks.

use super::step::Attempted;
use super::{DeliveryStatus, Verdict};
use crate::store::{ms, Store};
use chrono::Utc;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::sender::Sender;

#[derive(Clone)]
pub struct Engine {
    pub(super) store: Store,
    pub(super) sender: Sender,
    pub(super) schedule: Arc<Vec<Duration>>,
    concurrency: usize,
    /// Woken when deliveries may have become due (new events, API actions).
    wake: Arc<Notify>,
    pub(super) metrics: Arc<crate::metrics::Metrics>,
}

/// A delivery lane: (subscription id, room id).
type Lane = (String, String);

/// A finished attempt, reported back to the dispatcher.
struct Done {
    key: [u8; 16],
    lane: Lane,
    /// None when the delivery, its subscription or its event vanished.
    attempted: Option<Attempted>,
}

impl Engine {
    pub fn new(
        store: Store,
        sender: Sender,
        schedule: Vec<Duration>,
        concurrency: usize,
        wake: Arc<Notify>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            metrics,
            store,
            sender,
            schedule: Arc::new(schedule),
            concurrency: concurrency.max(1),
            wake,
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
        // Lanes whose head just finished: their next delivery goes out directly.
        let mut advanced: Vec<Lane> = Vec::new();
        loop {
            let mut batch = Vec::new();
            while let Ok(done) = done_rx.try_recv() {
                batch.push(done);
            }
            self.finished(batch, &mut in_flight, &mut busy_lanes, &mut advanced);
            if shutdown.is_cancelled() {
                // Take no new work; record what is in flight so that a clean
                // stop sends nothing twice. The app bounds this by its grace.
                while !in_flight.is_empty() {
                    let Some(done) = done_rx.recv().await else {
                        break;
                    };
                    self.finished(vec![done], &mut in_flight, &mut busy_lanes, &mut advanced);
                }
                return;
            }
            let mut launch = self.next_in_lanes(&mut advanced, &in_flight, &mut busy_lanes);
            match self.pick(&in_flight, launch.len(), &mut busy_lanes) {
                Ok(l) => launch.extend(l),
                Err(e) => warn!(error = %e, "could not read the outbox"),
            };
            if !launch.is_empty() {
                // Sent only once durable: a crash may send again, never invent.
                if let Err(e) = self.store.ensure_durable().await {
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
                        let attempted = engine.attempt(&key).await;
                        let _ = tx.send(Done {
                            key,
                            lane,
                            attempted,
                        });
                    });
                }
            }
            let wait = self.idle_wait(&in_flight);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                Some(done) = done_rx.recv() => self.finished(vec![done], &mut in_flight, &mut busy_lanes, &mut advanced),
                _ = self.wake.notified() => {}
                _ = sleep_or_forever(wait) => {}
            }
        }
    }

    /// Record finished attempts together (one transaction for the batch)
    /// and free their slots and lanes.
    fn finished(
        &self,
        batch: Vec<Done>,
        in_flight: &mut HashSet<[u8; 16]>,
        busy: &mut HashSet<Lane>,
        advanced: &mut Vec<Lane>,
    ) {
        if batch.is_empty() {
            return;
        }
        let attempted: Vec<Attempted> = batch.iter().filter_map(|d| d.attempted.clone()).collect();
        self.record(&attempted);
        for done in batch {
            in_flight.remove(&done.key);
            busy.remove(&done.lane);
            // The lane moves on when its head is finished either way (or vanished).
            let verdict = done.attempted.map(|a| a.verdict);
            if !matches!(verdict, Some(Verdict::RetryAt(_)) | Some(Verdict::Hold)) {
                advanced.push(done.lane);
            }
        }
    }

    /// The next delivery of each advanced lane, sent directly while slots are
    /// free (no trip through the due index); otherwise made due now. A crash
    /// before it finishes is covered by the lane recovery at start-up.
    fn next_in_lanes(
        &self,
        advanced: &mut Vec<Lane>,
        in_flight: &HashSet<[u8; 16]>,
        busy: &mut HashSet<Lane>,
    ) -> Vec<([u8; 16], Lane)> {
        let mut launch = Vec::new();
        for lane in advanced.drain(..) {
            let free = self
                .concurrency
                .saturating_sub(in_flight.len() + launch.len());
            let direct = free > 0 && !busy.contains(&lane) && {
                match self.store.lane_head(&lane.0, &lane.1) {
                    Ok(Some(key)) if !in_flight.contains(&key) => {
                        let ready = self
                            .store
                            .delivery_at(&key)
                            .ok()
                            .flatten()
                            .is_some_and(|d| {
                                d.status == DeliveryStatus::Pending && d.next_attempt_at.is_none()
                            })
                            && self.store.subscription(&lane.0).is_some_and(|s| s.enabled);
                        if ready {
                            busy.insert(lane.clone());
                            launch.push((key, lane.clone()));
                        }
                        ready
                    }
                    _ => false,
                }
            };
            if !direct {
                if let Err(e) = self.store.wake_lane(&lane.0, &lane.1, Utc::now()) {
                    warn!(error = %e, "could not advance a delivery lane");
                }
            }
        }
        launch
    }

    /// Choose what to send now. Entries that are stale are dropped; those
    /// that must wait for their lane or their subscription are parked.
    fn pick(
        &self,
        in_flight: &HashSet<[u8; 16]>,
        launching: usize,
        busy: &mut HashSet<Lane>,
    ) -> crate::store::Result<Vec<([u8; 16], Lane)>> {
        let free = self.concurrency.saturating_sub(in_flight.len() + launching);
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
