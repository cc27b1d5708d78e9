//! Retention: a background task that prunes old events and finished
//! deliveries in small batches, so the data dir stops growing under load.

use crate::backend::Backend;
use crate::cluster::PgStore;
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

const BATCH: usize = 500;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: usize,
    pub deliveries: usize,
}

/// One pass at `now`: everything older than `retention`, batch by batch,
/// yielding between batches so polling and delivery never wait on it. An
/// event that a pending delivery still needs is kept.
pub async fn prune_once(
    store: &Backend,
    now: DateTime<Utc>,
    retention: Duration,
) -> crate::store::Result<Pruned> {
    match store {
        Backend::Sled(s) => prune_sled(s, now, retention).await,
        Backend::Postgres(p) => prune_postgres(p, now, retention).await,
    }
}

/// On PostgreSQL: delete in batches until a batch comes back short.
async fn prune_postgres(
    db: &PgStore,
    now: DateTime<Utc>,
    retention: Duration,
) -> crate::store::Result<Pruned> {
    let cutoff = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX / 2);
    let mut pruned = Pruned::default();
    loop {
        let n = db.prune_deliveries(cutoff, BATCH as i64).await? as usize;
        pruned.deliveries += n;
        if n < BATCH {
            break;
        }
    }
    loop {
        let n = db.prune_events(cutoff, BATCH as i64).await? as usize;
        pruned.events += n;
        if n < BATCH {
            break;
        }
    }
    Ok(pruned)
}

async fn prune_sled(
    store: &Store,
    now: DateTime<Utc>,
    retention: Duration,
) -> crate::store::Result<Pruned> {
    let cutoff = now
        .checked_sub_signed(chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX))
        .map_or(0, crate::store::ms);
    let mut pruned = Pruned {
        deliveries: store.outbox().prune_deliveries(cutoff, BATCH)?,
        events: 0,
    };
    tokio::task::yield_now().await;
    let mut cursor = None;
    loop {
        let (n, next) = store.prune_events(cutoff, cursor, BATCH)?;
        pruned.events += n;
        tokio::task::yield_now().await;
        match next {
            Some(k) => cursor = Some(k),
            None => break,
        }
    }
    Ok(pruned)
}

/// Prune now and then until `shutdown`.
pub async fn run(store: Backend, retention: Duration, shutdown: CancellationToken) {
    let every = (retention / 24).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    loop {
        match prune_once(&store, Utc::now(), retention).await {
            Ok(p) if p != Pruned::default() => info!(
                events = p.events,
                deliveries = p.deliveries,
                "retention pruned"
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "retention pass failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
