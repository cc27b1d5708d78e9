//! The poller: one light task per watched room, each a thin loop around
//! [`Poller::poll_once`], sharing the upstream limits; or, with a poll
//! budget, one loop polling the room the budget scheduler picks.

pub mod budget;
mod budgeted;
mod commit;
mod fixed;
pub mod history;
mod limits;
mod ownership;
mod poll;
pub mod schedule;
mod scheduler;
mod state;
mod thread;

pub use limits::{Auth, AuthGate};
use state::Slot;
pub use state::{Health, PollOutcome, RoomRuntime};

use crate::backend::Backend;
use crate::metrics::Metrics;
use crate::room::RoomId;
use crate::upstream::UpstreamClient;
use chrono::{DateTime, Utc};
use limits::{Pause, RateLimiter};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// At most this many polls are between their request and their commit.
/// When every room changes at once the committer falls behind; the rest
/// then wait before asking, rather than each holding its answer, snapshot
/// and diff (about 2 KiB) until the committer reaches it: 10,000 rooms
/// held 25 MiB. 2,048 answers are still 32 full batches for the committer.
const COMMIT_SLOTS: usize = 2048;

/// A watch refused because `RELAY_MAX_ROOMS` rooms are watched.
#[derive(Debug, PartialEq, Eq)]
pub struct RoomCapReached;

#[derive(Clone, Debug)]
pub struct PollSettings {
    pub interval: Duration,
    pub backoff_max: Duration,
    pub max_in_flight: usize,
    pub max_rps: u32,
    pub initial_events: bool,
    /// Upstream requests per second the budget scheduler spends; 0 polls
    /// every room once per `interval`.
    pub budget: u32,
    /// With a budget, the longest a room goes unpolled.
    pub interval_max: Duration,
    /// Cluster mode: how long a room's lease outlives its last renewal.
    pub lease_ttl: Duration,
}

#[derive(Clone)]
pub struct Poller {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the shared wake-up ticks are counted from.
    origin: Instant,
    client: UpstreamClient,
    store: Backend,
    committer: commit::Committer,
    settings: PollSettings,
    /// Every room polled here. Each slot holds the room's last stored
    /// snapshot and the body it was parsed from, so an unchanged answer is
    /// settled by comparing bytes (no parse, no store), and what its polls
    /// came to. Only the room's own poll writes them; unwatching removes it.
    rooms: Mutex<HashMap<String, Arc<Slot>>>,
    /// Held across a watch or unwatch: the store and the task map change
    /// together, so concurrent PUT and DELETE of a room cannot leave it
    /// watched but unpolled, and the room cap is checked and used at once.
    membership: tokio::sync::Mutex<()>,
    /// Cluster mode: the leases that say which rooms this instance polls.
    ownership: Option<ownership::Ownership>,
    in_flight: Semaphore,
    /// Polls between their request and their commit (see [`COMMIT_SLOTS`]).
    uncommitted: Semaphore,
    /// `RELAY_MAX_RPS`, or the budget when one is set (the lower of both).
    limiter: RateLimiter,
    /// The budget scheduler, when `RELAY_POLL_BUDGET` is set.
    budget: Option<budgeted::Budgeted>,
    pause: Pause,
    auth: AuthGate,
    next_slot: AtomicU64,
    /// Woken whenever events were stored (the delivery engine listens).
    events_stored: Arc<Notify>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Where the rooms' polls run: their own thread on sled (see
    /// [`thread`]). In a cluster they stay on the relay's runtime: the
    /// database pool's connections run where they are first opened, and
    /// some are opened by polls; they must not end with a poll thread.
    polls: tokio::runtime::Handle,
}

impl Poller {
    pub fn new(
        client: UpstreamClient,
        store: Backend,
        settings: PollSettings,
        events_stored: Arc<Notify>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        let rps = match (settings.budget, settings.max_rps) {
            (0, cap) | (cap, 0) => cap,
            (budget, cap) => budget.min(cap),
        };
        let budget = (settings.budget > 0).then(|| {
            budgeted::Budgeted::new(budget::Settings {
                budget: rps as f64,
                min: settings.interval.as_secs_f64(),
                max: settings.interval_max.as_secs_f64(),
            })
        });
        metrics.poll_budget.set(settings.budget as i64);
        let polls = match &store {
            Backend::Sled(_) => thread::start(&shutdown).unwrap_or_else(|e| {
                warn!(error = %e, "could not start the polls' thread; they share the runtime");
                tokio::runtime::Handle::current()
            }),
            Backend::Postgres(_) => tokio::runtime::Handle::current(),
        };
        let poller = Self {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                client,
                committer: commit::Committer::start(store.clone()),
                in_flight: Semaphore::new(settings.max_in_flight),
                uncommitted: Semaphore::new(COMMIT_SLOTS),
                limiter: RateLimiter::new(rps),
                budget,
                rooms: Mutex::default(),
                membership: Default::default(),
                ownership: store
                    .postgres()
                    .map(|_| ownership::Ownership::new(settings.lease_ttl)),
                settings,
                pause: Pause::default(),
                auth: AuthGate::default(),
                next_slot: AtomicU64::new(0),
                store,
                events_stored,
                metrics,
                shutdown,
                tracker,
                polls,
            }),
        };
        // At shutdown every room's task stops where it waits.
        let inner = Arc::downgrade(&poller.inner);
        let shutdown = poller.inner.shutdown.clone();
        poller.inner.tracker.spawn(async move {
            shutdown.cancelled().await;
            if let Some(inner) = inner.upgrade() {
                for slot in inner.rooms.lock().unwrap().values() {
                    slot.stop();
                }
            }
        });
        poller
    }

    /// Start a task for every room the store says is watched; in a
    /// cluster, for every room this instance wins the lease of.
    pub async fn start(&self) -> crate::store::Result<usize> {
        let rooms = self.inner.store.watched_rooms().await?;
        let n = rooms.len();
        if self.inner.budget.is_some() {
            let s = &self.inner.settings;
            if n as f64 > s.budget as f64 * s.interval_max.as_secs_f64() {
                warn!(rooms = n, budget = s.budget, "RELAY_POLL_BUDGET is too small to poll every room within RELAY_POLL_INTERVAL_MAX");
            }
            self.spawn_poll(self.clone().drive_budget());
        }
        if self.inner.ownership.is_some() {
            self.inner.tracker.spawn(self.clone().hold_leases());
            return Ok(n);
        }
        for r in rooms {
            if let Ok(room) = RoomId::parse(r.room_id) {
                self.spawn_room(room).await;
            }
        }
        Ok(n)
    }

    /// Replace a watched room's schedule hints; false when not watched.
    pub async fn set_schedule(
        &self,
        room: &RoomId,
        schedule: &[crate::store::ClassWindow],
    ) -> crate::store::Result<bool> {
        let _turn = self.inner.membership.lock().await;
        let found = self.inner.store.set_schedule(room, schedule).await?;
        if let (true, Some(b)) = (found, &self.inner.budget) {
            b.set_hints(room.as_str(), budgeted::windows(schedule));
        }
        Ok(found)
    }

    /// When a room is next polled, and why (`interval` without a budget).
    pub fn next_poll(&self, room: &str) -> Option<(DateTime<Utc>, &'static str)> {
        match &self.inner.budget {
            Some(b) => b.next_poll(room).map(|(at, why)| (at, why.as_str())),
            None => {
                let rt = self.slot(room)?.runtime();
                let why = if rt.failures > 0 { "retry" } else { "interval" };
                rt.next_poll_at.map(|at| (at, why))
            }
        }
    }

    /// Upstream requests sent in the last full second, when they are capped.
    pub fn spent_last_second(&self) -> u32 {
        self.inner.limiter.spent_last_second()
    }

    /// Watch a room from now on; true when it was not watched before.
    pub async fn watch(&self, room: &RoomId) -> crate::store::Result<bool> {
        let _turn = self.inner.membership.lock().await;
        let created = self.inner.store.watch(room).await?;
        match &self.inner.ownership {
            // The next lease round gives it to some instance.
            Some(o) => o.round_soon(),
            None => self.spawn_room(room.clone()).await,
        }
        Ok(created)
    }

    /// Watch every one of `rooms`, unless that would watch more than `max`
    /// rooms in all (then none): checked and done under one lock. Returns
    /// for each room whether it is new.
    pub async fn watch_within(
        &self,
        rooms: &[RoomId],
        max: usize,
    ) -> crate::store::Result<Result<Vec<bool>, RoomCapReached>> {
        let _turn = self.inner.membership.lock().await;
        if let (Some(o), Backend::Postgres(p)) = (&self.inner.ownership, &self.inner.store) {
            // Counted in the shared database: every instance sees the cap.
            let created = p.watch_within(rooms, max).await?;
            o.round_soon();
            return Ok(created.ok_or(RoomCapReached));
        }
        let new = rooms.iter().filter(|r| !self.is_watched(r)).count();
        if new > 0 && self.watched_count() + new > max {
            return Ok(Err(RoomCapReached));
        }
        let mut created = Vec::with_capacity(rooms.len());
        for room in rooms {
            created.push(self.inner.store.watch(room).await?);
            self.spawn_room(room.clone()).await;
        }
        Ok(Ok(created))
    }

    /// Stop watching; true when it was watched.
    pub async fn unwatch(&self, room: &RoomId) -> crate::store::Result<bool> {
        let _turn = self.inner.membership.lock().await;
        let was = self.inner.store.unwatch(room).await?;
        self.stop_room(room.as_str());
        Ok(was)
    }

    /// Stop polling a room here, and forget what this instance held of it.
    fn stop_room(&self, room: &str) {
        if let Some(slot) = self.inner.rooms.lock().unwrap().remove(room) {
            slot.stop();
        }
        if let Some(o) = &self.inner.ownership {
            o.forget(room);
        }
        if let Some(b) = &self.inner.budget {
            b.remove(room);
        }
    }

    pub fn runtime(&self, room: &str) -> RoomRuntime {
        let mut rt = self.slot(room).map(|s| s.runtime()).unwrap_or_default();
        if self.auth() == Auth::Rejected && rt.health != Health::Invalid {
            rt.health = Health::Unauthorized;
        }
        rt
    }

    pub fn is_watched(&self, room: &RoomId) -> bool {
        self.inner.rooms.lock().unwrap().contains_key(room.as_str())
    }

    pub fn watched_count(&self) -> usize {
        self.inner.rooms.lock().unwrap().len()
    }

    fn slot(&self, room: &str) -> Option<Arc<Slot>> {
        self.inner.rooms.lock().unwrap().get(room).cloned()
    }

    /// What was last stored of a room polled here: exists, and is live.
    fn known_state(&self, room: &str) -> Option<(bool, bool)> {
        self.slot(room)?.known_state()
    }

    /// Failures in a row of a room's polls.
    fn failures(&self, room: &str) -> u32 {
        self.slot(room).map_or(0, |s| s.failures())
    }

    pub fn auth(&self) -> Auth {
        self.inner.auth.get()
    }

    pub fn settings(&self) -> &PollSettings {
        &self.inner.settings
    }

    async fn spawn_room(&self, room: RoomId) {
        let slot = Arc::new(Slot::new(self.inner.client.status_target(&room)));
        {
            let mut rooms = self.inner.rooms.lock().unwrap();
            if rooms.contains_key(room.as_str()) {
                return;
            }
            rooms.insert(room.to_string(), slot.clone());
        }
        if let Some(b) = &self.inner.budget {
            // One loop polls every room; what the store knows seeds it.
            let store = &self.inner.store;
            let hints = store
                .room(room.as_str())
                .await
                .ok()
                .flatten()
                .map(|r| budgeted::windows(&r.schedule))
                .unwrap_or_default();
            let history = store.poll_history(room.as_str()).await.unwrap_or_default();
            b.insert(&room, hints, history);
            return;
        }
        let k = self.inner.next_slot.fetch_add(1, Ordering::Relaxed);
        let first = schedule::phase(k, self.inner.settings.interval);
        if self.inner.shutdown.is_cancelled() {
            return;
        }
        let this = self.clone();
        let held = slot.clone();
        // Stopped by abort (unwatched, its lease lost, shutdown), so its
        // loop checks no token at each of its wake-ups.
        let task = self.spawn_poll(async move { this.room_loop(room, &held, first).await });
        slot.set_task(task.abort_handle());
    }

    /// Spawn a task that polls, where polls run.
    fn spawn_poll<F>(&self, task: F) -> tokio::task::JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tracker.spawn_on(task, &self.inner.polls)
    }
}
