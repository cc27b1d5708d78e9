//! The committer: diffed answers of many rooms go to disk together, in one
//! transaction and one flush (group commit): on sled from a thread of its
//! own, on PostgreSQL fenced by each room's lease epoch.

use crate::backend::Backend;
use crate::cluster::PgStore;
use crate::store::{PollAnswer, PollCommit, Store};
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// How many answers one transaction takes at most.
const MAX_BATCH: usize = 64;

/// What a commit came to: the outcome once durable, or why it failed.
pub type Committed = Result<PollCommit, String>;

struct Job {
    answer: PollAnswer,
    /// The lease epoch the room was polled under (cluster mode).
    epoch: Option<i64>,
    reply: oneshot::Sender<Committed>,
}

#[derive(Clone)]
pub struct Committer {
    tx: mpsc::UnboundedSender<Job>,
    /// The store the committer's thread writes to. The thread holds it
    /// only while it writes a batch, so the store closes with the relay:
    /// a restart in the same process opens it again at once.
    _store: Option<Arc<Store>>,
}

impl Committer {
    /// Start the committer; it stops when every handle is dropped. On sled
    /// it is a thread of its own that commits and flushes in place: on the
    /// runtime, each batch waited behind a delivery burst's tasks twice
    /// (the blocking pool, then a worker), 15 ms a batch where the writing
    /// took 1.
    pub fn start(store: Backend) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let s = match store {
            Backend::Postgres(p) => {
                tokio::spawn(run(p, rx));
                return Self { tx, _store: None };
            }
            Backend::Sled(s) => Arc::new(s),
        };
        if let Err(e) = std::thread::Builder::new()
            .name("relay-commits".into())
            .spawn(committing(&s, rx))
        {
            // The same loop, then, on a thread of the blocking pool.
            warn!(error = %e, "could not start the committer's thread; the blocking pool runs it");
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::task::spawn_blocking(committing(&s, rx));
            return Self {
                tx,
                _store: Some(s),
            };
        }
        Self {
            tx,
            _store: Some(s),
        }
    }

    /// Commit one room's diffed answer; resolves once it is durable.
    pub async fn commit(&self, answer: PollAnswer, epoch: Option<i64>) -> Committed {
        let (reply, done) = oneshot::channel();
        self.tx
            .send(Job {
                answer,
                epoch,
                reply,
            })
            .map_err(|_| "the committer stopped".to_string())?;
        done.await
            .map_err(|_| "the committer stopped".to_string())?
    }
}

/// The sled committer's loop, ready for a thread: it holds the store weakly
/// and logs where its starter logs (a test's own subscriber too).
fn committing(
    store: &Arc<Store>,
    rx: mpsc::UnboundedReceiver<Job>,
) -> impl FnOnce() + Send + 'static {
    let (weak, logs) = (
        Arc::downgrade(store),
        tracing::dispatcher::get_default(|d| d.clone()),
    );
    move || tracing::dispatcher::with_default(&logs, || run_here(&weak, rx))
}

/// The first job and whatever queued behind it while the last batch was
/// written: they go together.
fn batch(first: Job, rx: &mut mpsc::UnboundedReceiver<Job>) -> Vec<Job> {
    let mut jobs = vec![first];
    while jobs.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    jobs
}

/// Answer each job with its outcome, or every job with the batch's failure.
fn reply(replies: Vec<oneshot::Sender<Committed>>, result: Result<Vec<PollCommit>, String>) {
    match result {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// The sled committer's loop, on its own thread: a transaction, then one
/// flush for the whole batch (a change is seen once it is on disk). The
/// store is let go before anyone hears back.
fn run_here(store: &Weak<Store>, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let (answers, replies): (Vec<PollAnswer>, Vec<_>) = batch(first, &mut rx)
            .into_iter()
            .map(|j| (j.answer, j.reply))
            .unzip();
        let started = std::time::Instant::now();
        let result = match store.upgrade() {
            Some(store) => commit_here(&store, &answers),
            None => Err("the committer stopped".to_string()),
        };
        debug!(answers = answers.len(), took = ?started.elapsed(), "polls committed");
        reply(replies, result);
    }
}

fn commit_here(store: &Store, answers: &[PollAnswer]) -> Result<Vec<PollCommit>, String> {
    let outcomes = store.commit_polls(answers).map_err(|e| {
        warn!(error = %e, "could not store the polls");
        store.report(&e);
        e.to_string()
    })?;
    if outcomes.iter().any(|o| matches!(o, PollCommit::Changed(_))) {
        if let Err(e) = store.ensure_all_durable_here() {
            warn!(error = %e, "could not flush the store");
        }
    }
    Ok(outcomes)
}

/// The cluster committer's loop: one PostgreSQL transaction per batch,
/// every room fenced by its lease epoch; its commit is the durability.
async fn run(store: PgStore, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        let (answers, replies): (Vec<(PollAnswer, i64)>, Vec<_>) = batch(first, &mut rx)
            .into_iter()
            .map(|j| ((j.answer, j.epoch.unwrap_or(-1)), j.reply))
            .unzip();
        let started = std::time::Instant::now();
        let result = store.commit_polls(&answers).await.map_err(|e| {
            warn!(error = %e, "could not store the polls");
            e.to_string()
        });
        debug!(answers = replies.len(), took = ?started.elapsed(), "polls committed");
        reply(replies, result);
    }
}
