//! The store in PostgreSQL: its pool, its instance and its leases; rooms
//! and their fenced poll commits are in `rooms`, events in `events`.
//! Every instance of a cluster shares it; a poll's snapshot, events and
//! deliveries commit in one transaction, only while the room's version and
//! the poller's lease epoch both hold.

use super::lease::{Leases, Round};
use super::listen::Listener;
use crate::db::{Result, StoreError};
use crate::ids::{event_key, Ids};
use deadpool_postgres::{Object, Pool};
use std::sync::Arc;
use std::time::Instant;

/// The channel a commit that queued deliveries notifies.
pub const OUTBOX_CHANNEL: &str = "relay_outbox";
/// The channel a commit that stored events notifies, with the largest id.
pub const EVENTS_CHANNEL: &str = "relay_events";

#[derive(Clone)]
pub struct PgStore {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) pool: Pool,
    pub(super) ids: Ids,
    /// This instance's name in leases and claims.
    pub(super) instance: String,
    pub(super) listener: Listener,
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Database(e.to_string())
    }
}

pub(super) fn corrupt(table: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree: table,
        detail: e.to_string(),
    }
}

impl PgStore {
    /// Connect, apply the migrations, and start listening for the others'
    /// commits. `instance` names this relay in leases and claims.
    pub async fn open(url: &str, instance: String, pool_size: usize) -> Result<Self> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Database(e.to_string()))?;
        let recycling = || deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        };
        let manager = match super::wants_tls(&config) {
            true => deadpool_postgres::Manager::from_config(config, super::tls(), recycling()),
            false => {
                deadpool_postgres::Manager::from_config(config, tokio_postgres::NoTls, recycling())
            }
        };
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(2))
            .wait_timeout(Some(std::time::Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Database(e.to_string()))?;
        {
            let mut c = pool.get().await?;
            super::schema::migrate(&mut c).await?;
        }
        let largest = {
            let c = pool.get().await?;
            let row = c
                .query_one(
&c.prepare_cached("SELECT (SELECT max(id) FROM relay_events), (SELECT max(id) FROM relay_deliveries)").await?,
                    &[],
                )
                .await?;
            let e: Option<String> = row.get(0);
            let d: Option<String> = row.get(1);
            e.and_then(|e| event_key(&e))
                .unwrap_or(0)
                .max(d.and_then(|d| crate::ids::delivery_key(&d)).unwrap_or(0))
        };
        {
            // A process starting under this name holds nothing yet: lanes
            // a previous run of it held are free again at once.
            let c = pool.get().await?;
            c.execute(
&c.prepare_cached("UPDATE relay_lanes SET claimed_by = NULL, claim_until = NULL WHERE claimed_by = $1").await?,
                &[&instance],
            )
            .await?;
        }
        let listener = Listener::start(url, largest).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                ids: Ids::seeded(largest),
                instance,
                listener,
            }),
        })
    }

    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    pub(super) async fn client(&self) -> Result<Object> {
        Ok(self.inner.pool.get().await?)
    }

    /// A fresh id that sorts after every id this instance made or found stored.
    pub fn next_ulid(&self) -> ulid::Ulid {
        ulid::Ulid::from(self.inner.ids.next())
    }

    /// A round trip to the database, timed (`/readyz`, and `/metrics` through
    /// the lease loop).
    pub async fn ping(&self) -> Result<std::time::Duration> {
        let started = Instant::now();
        let c = self.client().await?;
        c.query_one(&c.prepare_cached("SELECT 1").await?, &[])
            .await?;
        Ok(started.elapsed())
    }

    /// The largest event id stored by any instance, watched.
    pub fn durable_events(&self) -> tokio::sync::watch::Receiver<u128> {
        self.inner.listener.events()
    }

    /// Woken when any instance queued deliveries.
    pub fn outbox_notified(&self) -> Arc<tokio::sync::Notify> {
        self.inner.listener.outbox()
    }

    /// One lease round (see [`Leases::round`]).
    pub async fn lease_round(&self, leases: &Leases) -> Result<Round> {
        let mut c = self.client().await?;
        Ok(leases.round(&mut c).await?)
    }

    /// Hand every room back at a clean stop.
    pub async fn leave(&self, leases: &Leases) -> Result<u64> {
        let mut c = self.client().await?;
        Ok(leases.leave(&mut c).await?)
    }
}

/// Whether `text` can be stored at all: PostgreSQL's text holds no NUL, so
/// an id with one names nothing here (and must not reach the database,
/// which would answer with an error).
pub(super) fn storable(text: &str) -> bool {
    !text.contains('\0')
}
