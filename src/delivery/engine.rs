//! The delivery engine: concurrency around the single step. It claims due
//! lane heads from the outbox, sends them, and hands completions back in
//! batches; the outbox keeps order, so the engine holds no lane state.

use crate::backend::Backend;
use crate::metrics::Metrics;
use crate::outbox::{Claim, Completion, Outbox, Verdict};
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::sender::Sender;

#[derive(Clone)]
pub struct Engine {
    pub(super) store: Backend,
    pub(super) sender: Sender,
    pub(super) schedule: Arc<Vec<Duration>>,
    pub(super) concurrency: usize,
    /// Woken when deliveries may have become due (new events, API actions).
    pub(super) wake: Arc<Notify>,
    pub(super) metrics: Arc<Metrics>,
}

impl Engine {
    pub fn new(
        store: impl Into<Backend>,
        sender: Sender,
        schedule: Vec<Duration>,
        concurrency: usize,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store: store.into(),
            sender,
            schedule: Arc::new(schedule),
            concurrency: concurrency.max(1),
            wake,
            metrics,
        }
    }

    fn outbox(&self) -> &Outbox {
        match &self.store {
            Backend::Sled(s) => s.outbox(),
            Backend::Postgres(_) => unreachable!("the cluster engine claims from PostgreSQL"),
        }
    }

    /// Deliver everything due at `now` once, concurrently, and record it:
    /// the loop's step without the loop, for tests with a clock of their own.
    pub async fn deliver_due(&self, now: DateTime<Utc>) -> Vec<(String, Verdict)> {
        if let Backend::Postgres(db) = &self.store {
            return self.deliver_due_cluster(db, now).await;
        }
        let concurrency = self.concurrency;
        let claims = self.claim(Vec::new(), now, move || concurrency).await;
        let (done, summary) = self.attempt_all(claims, now).await;
        self.claim(done, now, || 0).await;
        summary
    }

    /// Attempt every claim at once; the completions, and each delivery's verdict.
    pub(super) async fn attempt_all(
        &self,
        claims: Vec<Claim>,
        now: DateTime<Utc>,
    ) -> (Vec<Completion>, Vec<(String, Verdict)>) {
        let mut set = tokio::task::JoinSet::new();
        for claim in claims {
            let engine = self.clone();
            set.spawn(async move { engine.attempt(claim, now).await });
        }
        let mut done = Vec::new();
        while let Some(c) = set.join_next().await {
            done.push(c.expect("an attempt does not panic"));
        }
        let summary = done
            .iter()
            .map(|c| (c.claim.delivery.id.clone(), c.verdict.clone()))
            .collect();
        (done, summary)
    }

    /// Off the async workers: record `done`, then claim up to `limit()`
    /// due heads (asked once `done` is recorded), made durable before
    /// they are handed out.
    async fn claim(
        &self,
        done: Vec<Completion>,
        now: DateTime<Utc>,
        limit: impl FnOnce() -> usize + Send + 'static,
    ) -> Vec<Claim> {
        let outbox = self.outbox().clone();
        let taken = tokio::task::spawn_blocking(move || {
            if let Err(e) = outbox.complete(done, now) {
                warn!(error = %e, "could not record attempts; they will be made again");
                return Err(e);
            }
            outbox.claim(now, limit())
        })
        .await
        .expect("the outbox does not panic");
        let claims = match taken {
            Ok(c) => c,
            Err(e) => {
                self.store.report(&e);
                return Vec::new();
            }
        };
        if claims.claims.is_empty() {
            return Vec::new();
        }
        let Backend::Sled(store) = &self.store else {
            return Vec::new();
        };
        // Sent only once durable: a crash may send again, never invent.
        if let Err(e) = store.ensure_durable(claims.queued).await {
            warn!(error = %e, "could not flush the store; holding deliveries");
            self.outbox().unclaim(claims.claims);
            return Vec::new();
        }
        claims.claims
    }

    /// Run until `shutdown`: claim what is due within the concurrency
    /// limit; attempts in flight finish on `tracker` and are recorded.
    pub async fn run(self, shutdown: CancellationToken, tracker: TaskTracker) {
        if let Backend::Postgres(db) = self.store.clone() {
            return self.run_cluster(db, shutdown, tracker).await;
        }
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Completion>();
        // Attempts not yet recorded (for a clean stop), and of them those
        // still sending: a slot is free again once its exchange ends, not
        // once its record is written, so attempts keep going while the
        // last batch is recorded.
        let mut in_flight = 0usize;
        let sending = Arc::new(AtomicUsize::new(0));
        let mut done = Vec::new();
        loop {
            while let Ok(c) = done_rx.try_recv() {
                done.push(c);
            }
            in_flight -= done.len();
            let stopping = shutdown.is_cancelled();
            // A clean stop takes no new work and records what is in flight,
            // so it sends nothing twice. The app bounds this by its grace.
            let (concurrency, slots) = (self.concurrency, sending.clone());
            let free = move || match stopping {
                true => 0,
                false => concurrency.saturating_sub(slots.load(Ordering::Acquire)),
            };
            let now = Utc::now();
            let claims = self.claim(std::mem::take(&mut done), now, free).await;
            if stopping && in_flight == 0 {
                return;
            }
            for claim in claims {
                in_flight += 1;
                sending.fetch_add(1, Ordering::AcqRel);
                let (engine, tx, sending) = (self.clone(), done_tx.clone(), sending.clone());
                tracker.spawn(async move {
                    let completion = engine.attempt(claim, Utc::now()).await;
                    sending.fetch_sub(1, Ordering::AcqRel);
                    let _ = tx.send(completion);
                });
            }
            let wait = match self.outbox().next_due() {
                Some(at) if sending.load(Ordering::Acquire) < self.concurrency => (at - Utc::now())
                    .to_std()
                    .unwrap_or_default()
                    .clamp(Duration::from_millis(1), Duration::from_secs(60)),
                _ => Duration::from_secs(60),
            };
            tokio::select! {
                c = done_rx.recv() => done.extend(c),
                _ = self.wake.notified(), if !stopping => {}
                _ = shutdown.cancelled(), if !stopping => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
