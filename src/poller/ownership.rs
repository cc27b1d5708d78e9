//! Cluster mode: which rooms this instance polls. A loop renews its leases
//! three times per TTL, claims towards its fair share, and starts or stops
//! room tasks to match. Each task's commits carry the epoch it won the room
//! under, so a stale owner writes nothing. A clean stop hands every room
//! back at once.

use super::Poller;
use crate::backend::Backend;
use crate::cluster::lease::{Leases, Round};
use crate::room::RoomId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

pub(super) struct Ownership {
    ttl: Duration,
    /// The rooms held, with the epoch each was won under.
    epochs: Mutex<HashMap<String, i64>>,
    /// Wakes the loop for a round now (a room was just watched).
    soon: Notify,
}

impl Ownership {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            epochs: Mutex::default(),
            soon: Notify::new(),
        }
    }

    pub(super) fn round_soon(&self) {
        self.soon.notify_one();
    }

    /// The epoch `room` is held under; None when this instance does not hold it.
    pub(super) fn epoch(&self, room: &str) -> Option<i64> {
        self.epochs.lock().unwrap().get(room).copied()
    }

    pub(super) fn forget(&self, room: &str) {
        self.epochs.lock().unwrap().remove(room);
    }

    fn held(&self) -> Vec<(String, i64)> {
        let epochs = self.epochs.lock().unwrap();
        epochs.iter().map(|(r, e)| (r.clone(), *e)).collect()
    }
}

impl Poller {
    /// Hold this instance's share of the rooms until shutdown, then hand
    /// them back.
    pub(super) async fn hold_leases(self) {
        let (Some(o), Backend::Postgres(db)) = (&self.inner.ownership, &self.inner.store) else {
            return;
        };
        let leases = Leases::new(db.instance(), o.ttl);
        let every = o.ttl / 3;
        let mut renewed = Instant::now();
        loop {
            match db.lease_round(&leases).await {
                Ok(round) => {
                    renewed = Instant::now();
                    self.apply(o, round).await;
                }
                Err(e) => {
                    warn!(error = %e, "could not renew room leases");
                    if renewed.elapsed() >= o.ttl {
                        // Others may hold them by now: stop polling them.
                        self.apply(o, Round::default()).await;
                    }
                }
            }
            if let Ok(took) = db.ping().await {
                self.inner
                    .metrics
                    .database_latency_seconds
                    .set(took.as_secs_f64());
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
                _ = o.soon.notified() => {}
            }
        }
        match db.leave(&leases).await {
            Ok(n) => info!(rooms = n, "room leases handed back"),
            Err(e) => warn!(error = %e, "could not hand room leases back; they expire"),
        }
    }

    /// Start and stop room tasks to match what the round left this
    /// instance holding.
    async fn apply(&self, o: &Ownership, round: Round) {
        let _turn = self.inner.membership.lock().await;
        let m = &self.inner.metrics;
        m.lease_takeovers.inc_by(round.taken_over as u64);
        m.rooms_owned.set(round.owned.len() as i64);
        if round.taken_over > 0 {
            info!(
                rooms = round.taken_over,
                "took over rooms whose lease expired"
            );
        }
        let now: HashMap<String, i64> =
            round.owned.into_iter().map(|x| (x.room, x.epoch)).collect();
        for (room, epoch) in o.held() {
            if now.get(&room) != Some(&epoch) {
                self.stop_room(&room);
            }
        }
        for (room, epoch) in now {
            let running = o.epoch(&room) == Some(epoch) && self.is_watched_here(&room);
            if running {
                continue;
            }
            let Ok(id) = RoomId::parse(room.clone()) else {
                continue;
            };
            self.stop_room(&room);
            o.epochs.lock().unwrap().insert(room, epoch);
            self.spawn_room(id).await;
        }
    }

    fn is_watched_here(&self, room: &str) -> bool {
        self.inner.rooms.lock().unwrap().contains_key(room)
    }
}
