//! One poll of one room: fetch, settle an unchanged answer in place, diff and commit the rest; and the slow probe while the org id is rejected.

use super::limits::Auth;
use super::state::{Known, Slot};
use super::{PollOutcome, Poller};
use crate::metrics::Kind;
use crate::room::RoomId;
use crate::store::{Base, PollAnswer, PollCommit};
use crate::upstream::PollError;
use chrono::{DateTime, Utc};
use tracing::{info, instrument, warn};

impl Poller {
    /// Poll one room once: fetch, diff against the snapshot, store.
    pub async fn poll_once(&self, room: &RoomId) -> PollOutcome {
        let Some(slot) = self.slot(room.as_str()) else {
            return PollOutcome::NotWatched;
        };
        self.poll_at(room, &slot).await
    }

    /// [`Self::poll_once`] of the room `slot` holds, found by the caller.
    /// The span is at debug level: at info it would cost every poll.
    #[instrument(level = "debug", skip(self, slot), fields(room = %room))]
    pub(super) async fn poll_at(&self, room: &RoomId, slot: &Slot) -> PollOutcome {
        let _uncommitted = self
            .inner
            .uncommitted
            .acquire()
            .await
            .expect("never closed");
        let started = std::time::Instant::now();
        let result = {
            // The cap is on requests in flight: the commit below does not hold it.
            let _permit = self.inner.in_flight.acquire().await.expect("never closed");
            let known = |body: &[u8]| slot.is_known_body(body);
            self.inner.client.fetch_changed(&slot.target, known).await
        };
        let took = started.elapsed();
        let now = Utc::now();
        let result = result.and_then(|changed| {
            changed
                .map(|body| crate::upstream::parse_body(room, &body).map(|status| (status, body)))
                .transpose()
        });
        if result.is_ok() && self.inner.auth.set(Auth::Accepted) {
            info!("upstream accepts the organization id");
        }
        let outcome = match result {
            // The very bytes last parsed and stored: nothing changed.
            Ok(None) => PollOutcome::Unchanged,
            // Boxed, as the fetch is: a changed answer is rare, and its
            // commit's state would otherwise sit in every room's task.
            Ok(Some((status, body))) => {
                match Box::pin(self.commit(room, slot, status, body, now)).await {
                    Ok(PollCommit::Unchanged) => PollOutcome::Unchanged,
                    Ok(PollCommit::Baseline) => PollOutcome::Baseline,
                    Ok(PollCommit::NotWatched) => PollOutcome::NotWatched,
                    Ok(PollCommit::Stale) => PollOutcome::Stale,
                    Ok(PollCommit::Changed(events)) => {
                        for e in &events {
                            info!(room = %room, event_id = %e.id, kind = %e.kind, sequence = e.sequence(), "event");
                            let kind = Kind {
                                r#type: e.kind.as_str(),
                            };
                            self.inner.metrics.events.get_or_create(&kind).inc();
                        }
                        self.inner.events_stored.notify_one();
                        PollOutcome::Changed(events.len())
                    }
                    Err(e) => {
                        warn!(error = %e, "could not store the poll");
                        PollOutcome::StoreFailed
                    }
                }
            }
            Err(e) => {
                match &e {
                    // Logged on the transition only: once, not once per room.
                    PollError::Unauthorized if self.inner.auth.set(Auth::Rejected) => {
                        warn!("upstream rejects the organization id (401): polling paused to a slow probe until it is accepted; check VERRIFLO_ORG_ID");
                        self.spawn_probe(room.clone());
                    }
                    PollError::RateLimited { retry_after } => {
                        self.inner
                            .pause
                            .extend(retry_after.unwrap_or(self.inner.settings.interval));
                    }
                    _ => {}
                }
                PollOutcome::Failed(e)
            }
        };
        slot.record(room, now, &outcome);
        self.inner.metrics.poll(outcome.label(), took);
        outcome
    }

    /// The one-way flow: diff the answer in memory against what this
    /// room's task holds, and hand the store the result to commit only if
    /// the room's version is still the one diffed against. An unchanged
    /// answer touches no store. Durable when this returns.
    async fn commit(
        &self,
        room: &RoomId,
        slot: &Slot,
        status: crate::room::RoomStatus,
        body: Vec<u8>,
        now: DateTime<Utc>,
    ) -> Result<PollCommit, String> {
        // A stale base (the room re-watched meanwhile) is read afresh once.
        for _ in 0..2 {
            let base = match self.base(room, slot).await {
                Ok(Some(base)) => base,
                Ok(None) => return Ok(PollCommit::NotWatched),
                Err(e) => return Err(e),
            };
            let initial = self.inner.settings.initial_events;
            let Some(answer) = PollAnswer::diffed(room, &base, &status, now, initial) else {
                // The same answer in other bytes (fields reordered, say).
                slot.remember(Known { base, body });
                return Ok(PollCommit::Unchanged);
            };
            let version = answer.base_version + 1;
            // In a cluster a commit carries the lease epoch it polled under.
            let epoch = match &self.inner.ownership {
                Some(o) => match o.epoch(room.as_str()) {
                    Some(e) => Some(e),
                    None => return Ok(PollCommit::NotWatched),
                },
                None => None,
            };
            let outcome = self.inner.committer.commit(answer, epoch).await;
            let sequence = match &outcome {
                Ok(PollCommit::Changed(events)) => events
                    .last()
                    .and_then(|e| e.sequence())
                    .unwrap_or(base.sequence),
                Ok(PollCommit::Baseline) => base.sequence,
                Ok(PollCommit::Stale) => {
                    slot.forget();
                    continue;
                }
                _ => {
                    slot.forget();
                    return outcome;
                }
            };
            let snapshot = Some(status);
            let base = Base {
                snapshot,
                sequence,
                version,
            };
            slot.remember(Known { base, body });
            return outcome;
        }
        Ok(PollCommit::Stale)
    }

    /// What `room`'s next answer is diffed against: held in memory, or
    /// read from the store once (first poll, or after a stale commit).
    async fn base(&self, room: &RoomId, slot: &Slot) -> Result<Option<Base>, String> {
        if let Some(base) = slot.base() {
            return Ok(Some(base));
        }
        match self.inner.store.base(room).await {
            Ok(base) => Ok(base),
            Err(e) => {
                self.inner.store.report(&e);
                Err(e.to_string())
            }
        }
    }

    /// While the org id is rejected, one task asks again at a slow pace.
    fn spawn_probe(&self, room: RoomId) {
        let this = self.clone();
        let shutdown = self.inner.shutdown.clone();
        let every = (self.inner.settings.interval * 6)
            .min(self.inner.settings.backoff_max)
            .max(self.inner.settings.interval);
        self.spawn_poll(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if this.inner.auth.get() != Auth::Rejected {
                    return;
                }
                // Probes spend the budget (and RELAY_MAX_RPS) like any poll.
                this.inner.limiter.acquire().await;
                // Probe with a room that is still watched.
                let probe = this.inner.rooms.lock().unwrap().keys().next().cloned();
                let room = probe
                    .and_then(|r| RoomId::parse(r).ok())
                    .unwrap_or_else(|| room.clone());
                this.poll_once(&room).await;
            }
        });
    }
}
