//! The sled store: the only module that touches sled. One struct owns every tree.

mod events;
mod hints;
mod keys;
mod retention;
mod rooms;

pub use crate::db::{Result, StoreError};
pub use crate::outbox::ms;
pub use events::{EventFilter, EventPage};
pub use hints::ClassWindow;
pub use rooms::{Base, PollAnswer, PollCommit, RoomRecord};

use crate::ids::Ids;
use crate::outbox::Outbox;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Every tree of the data directory, opened in one place.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// room id → [`RoomRecord`]
    rooms: sled::Tree,
    /// event key (ULID, big-endian) → event JSON
    events: sled::Tree,
    /// room key ++ sequence (big-endian) → event key
    room_events: sled::Tree,
    /// room id → what the budget scheduler learned of its week (JSON)
    poll_history: sled::Tree,
    /// Subscriptions and deliveries: the outbox owns its tree.
    outbox: Outbox,
    /// Commits that queued deliveries so far (the outbox counts them), and
    /// how many of them a flush has made durable.
    queued: Arc<AtomicU64>,
    durable: Arc<AtomicU64>,
    /// Serializes flushes (see [`Store::flush`]).
    flushing: Arc<tokio::sync::Mutex<()>>,
    /// Set once a flush fails.
    failed: Arc<tokio::sync::watch::Sender<Option<String>>>,
    /// Event and delivery ids, growing even if the clock steps back.
    ids: Arc<Ids>,
    /// The largest event key committed, and the largest a flush has made
    /// durable: the event stream sends nothing past the second.
    written: Arc<std::sync::Mutex<u128>>,
    durable_events: Arc<tokio::sync::watch::Sender<u128>>,
}

impl Store {
    /// Open (or create) the store in `dir`, with sled's cache capped at `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        Self::from_db(db)
    }

    /// A store that lives in memory and a temporary file, for unit tests.
    pub fn temporary() -> Result<Self> {
        Self::from_db(sled::Config::new().temporary(true).open()?)
    }

    fn from_db(db: sled::Db) -> Result<Self> {
        let events = db.open_tree("events")?;
        let largest = events
            .last()?
            .and_then(|(k, _)| <[u8; 16]>::try_from(k.as_ref()).ok())
            .map_or(0, u128::from_be_bytes)
            .max(Outbox::largest_key(&db)?);
        let ids = Arc::new(Ids::seeded(largest));
        let queued = Arc::new(AtomicU64::new(0));
        let outbox = Outbox::open(&db, events.clone(), ids.clone(), queued.clone())?;
        Ok(Self {
            rooms: db.open_tree("rooms")?,
            events,
            room_events: db.open_tree("room_events")?,
            poll_history: db.open_tree("poll_history")?,
            outbox,
            queued,
            durable: Arc::default(),
            flushing: Arc::default(),
            failed: Arc::new(tokio::sync::watch::channel(None).0),
            ids,
            // Whatever is on disk at open is durable.
            written: Arc::new(std::sync::Mutex::new(largest)),
            durable_events: Arc::new(tokio::sync::watch::channel(largest).0),
            db,
        })
    }

    /// The same data dir read back from disk as at start-up (for tests of
    /// what a restart rebuilds).
    #[cfg(test)]
    pub(crate) fn reopen(&self) -> Result<Self> {
        Self::from_db(self.db.clone())
    }

    /// The delivery outbox: subscriptions, deliveries, lanes.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Make every commit so far durable. One flush covers all of them
    /// (group commit), so callers share it rather than flushing per change.
    /// A failure is remembered: the app stops cleanly rather than go on
    /// seeing changes it cannot keep.
    pub async fn flush(&self) -> Result<()> {
        let _turn = self.flushing.lock().await;
        self.flush_now().await
    }

    /// One flush at a time (the caller holds `flushing`), off the async
    /// workers: concurrent `flush_async` calls deadlock sled 0.34
    /// (spacejam/sled#1308).
    async fn flush_now(&self) -> Result<()> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.flush_here())
            .await
            // Only a runtime shutting down cancels it; nothing was lost yet.
            .map_err(|e| StoreError::Interrupted(e.to_string()))?
    }

    /// The flush itself, on the calling thread (which holds `flushing`).
    fn flush_here(&self) -> Result<()> {
        // Every event committed by now is durable once this flush is done.
        let written = *self.written.lock().unwrap();
        self.db.flush().map_err(|e| {
            let e = StoreError::from(e);
            self.report(&e);
            e
        })?;
        self.durable_events.send_if_modified(|d| {
            let moved = written > *d;
            *d = (*d).max(written);
            moved
        });
        Ok(())
    }

    /// Events up to this key were committed (called after the commit).
    pub(crate) fn note_written(&self, key: u128) {
        let mut w = self.written.lock().unwrap();
        *w = (*w).max(key);
    }

    /// The largest durable event key, watched: the event stream follows it.
    pub fn durable_events(&self) -> tokio::sync::watch::Receiver<u128> {
        self.durable_events.subscribe()
    }

    /// Queue a test event to a subscription (see [`Outbox::enqueue_test`]).
    pub fn enqueue_test(
        &self,
        sub: &str,
        event: crate::event::Event,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<crate::event::Event>> {
        let queued = self.outbox.enqueue_test(sub, event, now)?;
        if let Some(k) = queued.as_ref().and_then(|e| crate::ids::event_key(&e.id)) {
            self.note_written(k);
        }
        Ok(queued)
    }

    /// Note an error from any store call: an I/O error means the disk is
    /// failing, and the app stops cleanly (see [`Store::write_failure`]).
    pub fn report(&self, error: &StoreError) {
        if error.is_io() {
            let _ = self.failed.send(Some(error.to_string()));
        }
    }

    /// Write, flush and remove a probe: a data dir that cannot be written
    /// (read-only, full) is found at start-up, not at the first change.
    pub async fn check_writable(&self) -> Result<()> {
        self.db.insert(b"__probe", b"1")?;
        self.flush().await?;
        self.db.remove(b"__probe")?;
        self.flush().await
    }

    /// Resolves with the reason once a write to disk has failed.
    pub async fn write_failure(&self) -> String {
        let mut rx = self.failed.subscribe();
        let seen = rx
            .wait_for(Option::is_some)
            .await
            .map(|reason| reason.clone().unwrap_or_default());
        match seen {
            Ok(reason) => reason,
            Err(_) => std::future::pending().await,
        }
    }

    /// Make sure the first `queued` queueing commits are on disk, flushing
    /// only if a flush has not covered them yet.
    pub async fn ensure_durable(&self, queued: u64) -> Result<()> {
        if self.durable.load(Ordering::SeqCst) >= queued {
            return Ok(());
        }
        let _turn = self.flushing.lock().await;
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.flush_uncovered(queued))
            .await
            .map_err(|e| StoreError::Interrupted(e.to_string()))?
    }

    /// With the flushing turn held: flush unless the flush that finished
    /// while we waited covers the first `queued` commits already.
    fn flush_uncovered(&self, queued: u64) -> Result<()> {
        if self.durable.load(Ordering::SeqCst) >= queued {
            return Ok(());
        }
        let covered = self.queued.load(Ordering::SeqCst);
        self.flush_here()?;
        self.durable.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }

    /// Make every write so far durable, sharing a flush with writes made
    /// meanwhile (for admin writes, which must be on disk before the 2xx).
    pub async fn make_writes_durable(&self) -> Result<()> {
        let target = self.queued.fetch_add(1, Ordering::SeqCst) + 1;
        self.ensure_durable(target).await
    }

    /// Make every queueing commit so far durable.
    pub async fn ensure_all_durable(&self) -> Result<()> {
        self.ensure_durable(self.queued.load(Ordering::SeqCst))
            .await
    }

    /// [`Store::ensure_all_durable`] from a thread outside the runtime (the
    /// committer's), flushing right there: no hop through the runtime's
    /// queues, which a delivery burst makes long.
    pub fn ensure_all_durable_here(&self) -> Result<()> {
        let queued = self.queued.load(Ordering::SeqCst);
        if self.durable.load(Ordering::SeqCst) >= queued {
            return Ok(());
        }
        let _turn = self.flushing.blocking_lock();
        self.flush_uncovered(queued)
    }

    /// A fresh id that sorts after every id stored or made before.
    pub fn next_ulid(&self) -> ulid::Ulid {
        ulid::Ulid::from(self.ids.next())
    }

    /// A cheap check for `/readyz`: readable, and no write has failed.
    pub fn is_open(&self) -> bool {
        self.db.get(b"__probe").is_ok() && self.failed.borrow().is_none()
    }
}
