//! Where the relay keeps its state: sled in one process (the default), or
//! PostgreSQL shared by a cluster (`RELAY_DATABASE_URL`). One facade, so the
//! API, the poller and retention read the same either way.

use crate::cluster::PgStore;
use crate::db::Result;
use crate::event::Event;
use crate::outbox::{Claim, Completion, Delivery, DeliveryStatus, Retried, SubscriptionStats};
use crate::poller::history::History;
use crate::room::{RoomId, RoomStatus};
use crate::store::{Base, ClassWindow, EventFilter, EventPage, PollCommit, RoomRecord, Store};
use crate::subscription::Subscription;
use chrono::{DateTime, Utc};

/// How long a claim made through [`Backend::claim`] is held on PostgreSQL.
pub(crate) const CLAIM_HOLD: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Clone)]
pub enum Backend {
    Sled(Store),
    Postgres(PgStore),
}

impl From<Store> for Backend {
    fn from(s: Store) -> Self {
        Self::Sled(s)
    }
}

impl From<PgStore> for Backend {
    fn from(s: PgStore) -> Self {
        Self::Postgres(s)
    }
}

impl Backend {
    pub fn sled(&self) -> Option<&Store> {
        match self {
            Self::Sled(s) => Some(s),
            Self::Postgres(_) => None,
        }
    }

    pub fn postgres(&self) -> Option<&PgStore> {
        match self {
            Self::Sled(_) => None,
            Self::Postgres(p) => Some(p),
        }
    }

    /// This process's name in the cluster; None on sled.
    pub fn instance(&self) -> Option<&str> {
        self.postgres().map(PgStore::instance)
    }

    pub fn next_ulid(&self) -> ulid::Ulid {
        match self {
            Self::Sled(s) => s.next_ulid(),
            Self::Postgres(p) => p.next_ulid(),
        }
    }

    /// Note an error from any store call (sled stops on a failing disk).
    pub fn report(&self, error: &crate::db::StoreError) {
        if let Self::Sled(s) = self {
            s.report(error);
        }
    }

    /// Make admin writes durable before the 2xx. PostgreSQL commits are.
    pub async fn make_writes_durable(&self) -> Result<()> {
        match self {
            Self::Sled(s) => s.make_writes_durable().await,
            Self::Postgres(_) => Ok(()),
        }
    }

    /// Resolves with the reason once a write to disk failed (sled only:
    /// a database that is down is waited out, and `/readyz` says so).
    pub async fn write_failure(&self) -> String {
        match self {
            Self::Sled(s) => s.write_failure().await,
            Self::Postgres(_) => std::future::pending().await,
        }
    }

    /// Make every write so far durable (at a clean stop).
    pub async fn flush(&self) -> Result<()> {
        match self {
            Self::Sled(s) => s.flush().await,
            Self::Postgres(_) => Ok(()),
        }
    }

    /// The largest durable event key, watched: the event stream follows it.
    pub fn durable_events(&self) -> tokio::sync::watch::Receiver<u128> {
        match self {
            Self::Sled(s) => s.durable_events(),
            Self::Postgres(p) => p.durable_events(),
        }
    }

    /// For `/readyz`: the store answers (and, on sled, no write failed).
    pub async fn is_open(&self) -> bool {
        match self {
            Self::Sled(s) => s.is_open(),
            Self::Postgres(p) => p.ping().await.is_ok(),
        }
    }

    // ---- rooms ----

    pub async fn watch(&self, room: &RoomId) -> Result<bool> {
        match self {
            Self::Sled(s) => s.watch(room, Utc::now()),
            Self::Postgres(p) => p.watch(room).await,
        }
    }

    pub async fn unwatch(&self, room: &RoomId) -> Result<bool> {
        match self {
            Self::Sled(s) => s.unwatch(room),
            Self::Postgres(p) => p.unwatch(room).await,
        }
    }

    pub async fn room(&self, room: &str) -> Result<Option<RoomRecord>> {
        match self {
            Self::Sled(s) => s.room(room),
            Self::Postgres(p) => p.room(room).await,
        }
    }

    pub async fn watched_rooms(&self) -> Result<Vec<RoomRecord>> {
        match self {
            Self::Sled(s) => s.watched_rooms(),
            Self::Postgres(p) => p.watched_rooms().await,
        }
    }

    pub async fn base(&self, room: &RoomId) -> Result<Option<Base>> {
        match self {
            Self::Sled(s) => s.base(room),
            Self::Postgres(p) => p.base(room).await,
        }
    }

    pub async fn set_schedule(&self, room: &RoomId, schedule: &[ClassWindow]) -> Result<bool> {
        match self {
            Self::Sled(s) => s.set_schedule(room, schedule),
            Self::Postgres(p) => p.set_schedule(room, schedule).await,
        }
    }

    pub async fn poll_history(&self, room: &str) -> Result<History> {
        match self {
            Self::Sled(s) => s.poll_history(room),
            Self::Postgres(p) => p.poll_history(room).await,
        }
    }

    pub async fn save_poll_history(&self, room: &str, history: &History) -> Result<()> {
        match self {
            Self::Sled(s) => s.save_poll_history(room, history),
            Self::Postgres(p) => p.save_poll_history(room, history).await,
        }
    }

    /// Diff one answer against the stored snapshot and commit it: the
    /// poller's path in one call (for tools and tests). On PostgreSQL it
    /// commits only under this instance's lease on the room.
    pub async fn record_poll(
        &self,
        room: &RoomId,
        current: &RoomStatus,
        seen_at: DateTime<Utc>,
        initial_events: bool,
    ) -> Result<PollCommit> {
        match self {
            Self::Sled(s) => {
                let r = s.record_poll(room, current, seen_at, initial_events)?;
                s.ensure_all_durable().await?;
                Ok(r)
            }
            Self::Postgres(p) => p.record_poll(room, current, seen_at, initial_events).await,
        }
    }

    // ---- events ----

    pub async fn event(&self, id: &str) -> Result<Option<Event>> {
        match self {
            Self::Sled(s) => s.event(id),
            Self::Postgres(p) => p.event(id).await,
        }
    }

    pub async fn list_events(&self, filter: &EventFilter) -> Result<EventPage> {
        match self {
            Self::Sled(s) => s.list_events(filter),
            Self::Postgres(p) => p.list_events(filter).await,
        }
    }

    // ---- subscriptions ----

    /// Store a new subscription; false when `max` exist already.
    pub async fn create_subscription(&self, sub: Subscription, max: usize) -> Result<bool> {
        match self {
            Self::Sled(s) => Ok(s.outbox().create_subscription(sub, max)?.is_ok()),
            Self::Postgres(p) => p.create_subscription(&sub, max).await,
        }
    }

    pub async fn subscription(&self, id: &str) -> Result<Option<Subscription>> {
        match self {
            Self::Sled(s) => Ok(s.outbox().subscription(id)),
            Self::Postgres(p) => p.subscription(id).await,
        }
    }

    pub async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        match self {
            Self::Sled(s) => Ok(s.outbox().subscriptions()),
            Self::Postgres(p) => p.subscriptions().await,
        }
    }

    pub async fn subscription_count(&self) -> Result<usize> {
        match self {
            Self::Sled(s) => Ok(s.outbox().subscription_count()),
            Self::Postgres(p) => p.subscription_count().await,
        }
    }

    pub async fn update_subscription(
        &self,
        id: &str,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut Subscription),
    ) -> Result<Option<Subscription>> {
        match self {
            Self::Sled(s) => s.outbox().update_subscription(id, now, change),
            Self::Postgres(p) => p.update_subscription(id, now, change).await,
        }
    }

    pub async fn delete_subscription(&self, id: &str) -> Result<bool> {
        match self {
            Self::Sled(s) => s.outbox().delete_subscription(id),
            Self::Postgres(p) => p.delete_subscription(id).await,
        }
    }

    // ---- deliveries ----

    /// Take up to `limit` lane heads due at `now`, durable before they are
    /// handed out (the engine's loops do the same with more care).
    pub async fn claim(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Claim>> {
        match self {
            Self::Sled(s) => {
                let claims = s.outbox().claim(now, limit)?;
                s.ensure_durable(claims.queued).await?;
                Ok(claims.claims)
            }
            Self::Postgres(p) => p.claim(now, limit, CLAIM_HOLD).await,
        }
    }

    pub async fn complete(&self, done: Vec<Completion>, now: DateTime<Utc>) -> Result<()> {
        match self {
            Self::Sled(s) => s.outbox().complete(done, now),
            Self::Postgres(p) => p.complete(done, now).await.map(|_| ()),
        }
    }

    pub async fn delivery(&self, sub: &str, id: &str) -> Result<Option<Delivery>> {
        match self {
            Self::Sled(s) => s.outbox().delivery(sub, id),
            Self::Postgres(p) => p.delivery(sub, id).await,
        }
    }

    pub async fn list_deliveries_where(
        &self,
        sub: &str,
        before: Option<&str>,
        limit: usize,
        status: Option<DeliveryStatus>,
    ) -> Result<(Vec<Delivery>, Option<String>)> {
        match self {
            Self::Sled(s) => s.outbox().list_deliveries_where(sub, before, limit, status),
            Self::Postgres(p) => p.list_deliveries_where(sub, before, limit, status).await,
        }
    }

    pub async fn stats(&self, sub: &str) -> Result<SubscriptionStats> {
        match self {
            Self::Sled(s) => s.outbox().stats(sub),
            Self::Postgres(p) => p.stats(sub).await,
        }
    }

    pub async fn retry(&self, sub: &str, id: &str) -> Result<Retried> {
        match self {
            Self::Sled(s) => s.outbox().retry(sub, id),
            Self::Postgres(p) => p.retry(sub, id).await,
        }
    }

    pub async fn replay(
        &self,
        sub: &Subscription,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        match self {
            Self::Sled(s) => s.outbox().replay(sub, since, now),
            Self::Postgres(p) => p.replay(sub, since, now).await,
        }
    }

    pub async fn enqueue_test(
        &self,
        sub: &str,
        event: Event,
        now: DateTime<Utc>,
    ) -> Result<Option<Event>> {
        match self {
            Self::Sled(s) => s.enqueue_test(sub, event, now),
            Self::Postgres(p) => p.enqueue_test(sub, event, now).await,
        }
    }

    /// Deliveries pending, and when the oldest was queued.
    pub async fn pending(&self) -> Result<(u64, Option<DateTime<Utc>>)> {
        match self {
            Self::Sled(s) => Ok(s.outbox().pending()),
            Self::Postgres(p) => p.pending().await,
        }
    }

    /// Pending deliveries of enabled subscriptions.
    pub async fn deliverable(&self) -> Result<u64> {
        match self {
            Self::Sled(s) => Ok(s.outbox().deliverable()),
            Self::Postgres(p) => p.deliverable().await,
        }
    }
}
