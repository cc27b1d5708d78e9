//! The committer: diffed answers of many rooms go to disk together, in one
//! transaction and one flush (group commit): on sled off the async
//! workers, on PostgreSQL fenced by each room's lease epoch.

use crate::backend::Backend;
use crate::store::{PollAnswer, PollCommit, StoreError};
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
}

impl Committer {
    /// Start the committer; it stops when every handle is dropped.
    pub fn start(store: Backend) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        Self { tx }
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

async fn run(store: Backend, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        // Whatever queued while the last batch was written goes together.
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let count = jobs.len();
        let (answers, replies): (Vec<(PollAnswer, Option<i64>)>, Vec<_>) = jobs
            .into_iter()
            .map(|j| ((j.answer, j.epoch), j.reply))
            .unzip();
        let started = std::time::Instant::now();
        let result = commit(&store, answers).await;
        let outcomes = match result {
            Ok(outcomes) => outcomes,
            Err(e) => {
                warn!(error = %e, "could not store the polls");
                store.report(&e);
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
                continue;
            }
        };
        // A change is seen once it is on disk: a crash after this cannot
        // lose it. One flush for the whole batch.
        let changed = outcomes.iter().any(|o| matches!(o, PollCommit::Changed(_)));
        if let (true, Some(s)) = (changed, store.sled()) {
            if let Err(e) = s.ensure_all_durable().await {
                warn!(error = %e, "could not flush the store");
            }
        }
        debug!(answers = count, took = ?started.elapsed(), "polls committed");
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(Ok(outcome));
        }
    }
}

/// One batch into the store: a sled transaction off the async workers, or
/// one PostgreSQL transaction whose every room is fenced by its epoch.
async fn commit(
    store: &Backend,
    answers: Vec<(PollAnswer, Option<i64>)>,
) -> Result<Vec<PollCommit>, StoreError> {
    match store {
        Backend::Sled(s) => {
            let s = s.clone();
            let answers: Vec<PollAnswer> = answers.into_iter().map(|(a, _)| a).collect();
            tokio::task::spawn_blocking(move || s.commit_polls(&answers))
                .await
                .unwrap_or_else(|e| Err(StoreError::Interrupted(e.to_string())))
        }
        Backend::Postgres(p) => {
            let fenced: Vec<(PollAnswer, i64)> = answers
                .into_iter()
                .map(|(a, epoch)| (a, epoch.unwrap_or(-1)))
                .collect();
            p.commit_polls(&fenced).await
        }
    }
}
