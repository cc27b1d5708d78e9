//! The sled store: the only module that touches sled. One struct owns every tree.

mod deliveries;
mod delivery_admin;
mod events;
mod keys;
mod retention;
mod rooms;
mod subscriptions;

pub use deliveries::ms;
pub use events::{EventFilter, EventPage};
pub use keys::{delivery_id, delivery_key_of, event_id, event_key_of};
pub use rooms::{PollCommit, RoomRecord};

use crate::subscription::Subscription;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store flush interrupted: {0}")]
    Interrupted(String),
    #[error("store holds an unreadable record in {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
}

impl<E: Into<StoreError>> From<sled::transaction::TransactionError<E>> for StoreError {
    fn from(e: sled::transaction::TransactionError<E>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e.into(),
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

impl StoreError {
    /// The disk refused a read or write (full, read-only, gone).
    pub fn is_io(&self) -> bool {
        matches!(self, StoreError::Sled(sled::Error::Io(_)))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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
    /// subscription id → [`Subscription`]
    subscriptions: sled::Tree,
    /// delivery key (ULID) → [`crate::delivery::Delivery`]
    deliveries: sled::Tree,
    /// subscription id ++ 0 ++ delivery key → (): a subscription's history
    sub_deliveries: sled::Tree,
    /// subscription id ++ room key ++ event key → delivery key: pending, FIFO per room
    lanes: sled::Tree,
    /// subscription id ++ room key → u64: how many deliveries wait in that lane
    lane_sizes: sled::Tree,
    /// due time (ms, big-endian) ++ delivery key → (): what the engine sends next
    due: sled::Tree,
    /// Every subscription, in memory: the outbox matches events inside a
    /// transaction, where sled cannot scan.
    subs: Arc<RwLock<HashMap<String, Subscription>>>,
    /// Outbox commits so far, and how many of them a flush has made durable:
    /// the engine flushes only when something new was queued.
    queued: Arc<AtomicU64>,
    durable: Arc<AtomicU64>,
    /// Serializes flushes (see [`Store::flush`]).
    flushing: Arc<tokio::sync::Mutex<()>>,
    /// Set once a flush fails.
    failed: Arc<tokio::sync::watch::Sender<Option<String>>>,
    /// Event ids sort by time even within one millisecond.
    ids: Arc<Mutex<ulid::Generator>>,
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
        let store = Self {
            rooms: db.open_tree("rooms")?,
            events: db.open_tree("events")?,
            room_events: db.open_tree("room_events")?,
            subscriptions: db.open_tree("subscriptions")?,
            deliveries: db.open_tree("deliveries")?,
            sub_deliveries: db.open_tree("sub_deliveries")?,
            lanes: db.open_tree("lanes")?,
            lane_sizes: db.open_tree("lane_sizes")?,
            due: db.open_tree("due")?,
            subs: Arc::default(),
            queued: Arc::default(),
            durable: Arc::default(),
            flushing: Arc::default(),
            failed: Arc::new(tokio::sync::watch::channel(None).0),
            ids: Arc::new(Mutex::new(ulid::Generator::new())),
            db,
        };
        store.load_subscriptions()?;
        Ok(store)
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
        let db = self.db.clone();
        let flushed = tokio::task::spawn_blocking(move || db.flush())
            .await
            // Only a runtime shutting down cancels it; nothing was lost yet.
            .map_err(|e| StoreError::Interrupted(e.to_string()))?;
        flushed.map_err(|e| {
            let e = StoreError::from(e);
            self.report(&e);
            e
        })?;
        Ok(())
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

    /// Record that deliveries were queued (call after the commit).
    pub(crate) fn note_queued(&self) {
        self.queued.fetch_add(1, Ordering::SeqCst);
    }

    /// Make sure every queued delivery's commit is on disk, flushing only if
    /// something was queued since the last flush.
    pub async fn ensure_durable(&self) -> Result<()> {
        let target = self.queued.load(Ordering::SeqCst);
        if self.durable.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        let _turn = self.flushing.lock().await;
        // The flush that finished while we waited may cover us.
        if self.durable.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        let covered = self.queued.load(Ordering::SeqCst);
        self.flush_now().await?;
        self.durable.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }

    /// A fresh id that sorts after every id this process made before.
    pub fn next_ulid(&self) -> ulid::Ulid {
        let mut g = self.ids.lock().expect("id generator lock");
        // Overflow needs 2^80 ids in one millisecond; fall back rather than fail.
        g.generate().unwrap_or_else(|_| ulid::Ulid::new())
    }

    /// A cheap check for `/readyz`: readable, and no write has failed.
    pub fn is_open(&self) -> bool {
        self.db.get(b"__probe").is_ok() && self.failed.borrow().is_none()
    }
}

fn decode<T: serde::de::DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        detail: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialize")
}
