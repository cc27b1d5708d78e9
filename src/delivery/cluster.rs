//! The engine on PostgreSQL: lane heads are claimed across the cluster,
//! held until a deadline, and completed only while still held; the others'
//! commits wake it through LISTEN/NOTIFY, so no instance polls the database
//! in a tight loop.

use super::Engine;
use crate::cluster::PgStore;
use crate::outbox::{Claim, Completion, Verdict};
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// How long a claim outlives an attempt's timeout: only a dead (or
/// frozen) instance loses one, and its lanes move on soon after.
const HOLD_MARGIN: Duration = Duration::from_secs(5);
/// The longest wait between looks at the database: claims of a dead
/// instance expire without anyone notifying.
const IDLE: Duration = Duration::from_secs(5);

impl Engine {
    pub(super) async fn run_cluster(
        self,
        db: PgStore,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        let notified = db.outbox_notified();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Completion>();
        let mut in_flight = 0usize;
        let mut done = Vec::new();
        loop {
            while let Ok(c) = done_rx.try_recv() {
                done.push(c);
            }
            in_flight -= done.len();
            self.record(&db, std::mem::take(&mut done)).await;
            let stopping = shutdown.is_cancelled();
            if stopping && in_flight == 0 {
                return;
            }
            let free = if stopping {
                0
            } else {
                self.concurrency - in_flight
            };
            let claims = self.claim_cluster(&db, Utc::now(), free).await;
            let full = free > 0 && claims.len() == free;
            for claim in claims {
                in_flight += 1;
                let (engine, tx) = (self.clone(), done_tx.clone());
                tracker.spawn(async move {
                    let _ = tx.send(engine.attempt(claim, Utc::now()).await);
                });
            }
            let wait = if full || in_flight >= self.concurrency {
                // More may be due: look again once a slot frees.
                IDLE
            } else {
                match db.next_due().await {
                    Ok(Some(at)) => (at - Utc::now())
                        .to_std()
                        .unwrap_or_default()
                        .clamp(Duration::from_millis(1), IDLE),
                    _ => IDLE,
                }
            };
            tokio::select! {
                c = done_rx.recv() => done.extend(c),
                _ = notified.notified(), if !stopping && !full => {}
                _ = self.wake.notified(), if !stopping && !full => {}
                _ = shutdown.cancelled(), if !stopping => {}
                _ = tokio::time::sleep(wait), if !full || in_flight < self.concurrency => {}
            }
        }
    }

    async fn claim_cluster(&self, db: &PgStore, now: DateTime<Utc>, limit: usize) -> Vec<Claim> {
        let hold = self.sender.timeout() + HOLD_MARGIN;
        match db.claim(now, limit, hold).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "could not claim deliveries");
                Vec::new()
            }
        }
    }

    /// Record attempts; if the database refuses, their claims expire and
    /// they are sent again (at least once).
    async fn record(&self, db: &PgStore, done: Vec<Completion>) {
        if done.is_empty() {
            return;
        }
        if let Err(e) = db.complete(done, Utc::now()).await {
            warn!(error = %e, "could not record attempts; they will be made again");
        }
    }

    /// [`Engine::deliver_due`] on PostgreSQL.
    pub(super) async fn deliver_due_cluster(
        &self,
        db: &PgStore,
        now: DateTime<Utc>,
    ) -> Vec<(String, Verdict)> {
        let claims = self.claim_cluster(db, now, self.concurrency).await;
        let (done, summary) = self.attempt_all(claims, now).await;
        if let Err(e) = db.complete(done, now).await {
            warn!(error = %e, "could not record attempts; they will be made again");
        }
        summary
    }
}
