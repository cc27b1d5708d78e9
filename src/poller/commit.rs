//! The committer: changed answers of many rooms go to disk together, in
//! one transaction and one flush (group commit), off the async workers.

use crate::room::{RoomId, RoomStatus};
use crate::store::{PollAnswer, PollCommit, Store};
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// How many answers one transaction takes at most.
const MAX_BATCH: usize = 64;

/// What a commit came to: the outcome once durable, or why it failed.
pub type Committed = Result<PollCommit, String>;

struct Job {
    answer: PollAnswer,
    reply: oneshot::Sender<Committed>,
}

#[derive(Clone)]
pub struct Committer {
    tx: mpsc::UnboundedSender<Job>,
}

impl Committer {
    /// Start the committer; it stops when every handle is dropped.
    pub fn start(store: Store, initial_events: bool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx, initial_events));
        Self { tx }
    }

    /// Commit one room's answer; resolves once it is durable.
    pub async fn commit(
        &self,
        room: &RoomId,
        status: RoomStatus,
        seen_at: DateTime<Utc>,
    ) -> Committed {
        let (reply, done) = oneshot::channel();
        let answer = PollAnswer {
            room: room.clone(),
            status,
            seen_at,
        };
        self.tx
            .send(Job { answer, reply })
            .map_err(|_| "the committer stopped".to_string())?;
        done.await
            .map_err(|_| "the committer stopped".to_string())?
    }
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<Job>, initial_events: bool) {
    while let Some(first) = rx.recv().await {
        // Whatever queued while the last batch was written goes together.
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let answers: Vec<PollAnswer> = jobs.iter().map(|j| j.answer.clone()).collect();
        let s = store.clone();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || s.commit_polls(&answers, initial_events))
            .await
            .unwrap_or_else(|e| Err(crate::store::StoreError::Interrupted(e.to_string())));
        let outcomes = match result {
            Ok(outcomes) => outcomes,
            Err(e) => {
                warn!(error = %e, "could not store the polls");
                store.report(&e);
                for job in jobs {
                    let _ = job.reply.send(Err(e.to_string()));
                }
                continue;
            }
        };
        // A change is seen once it is on disk: a crash after this cannot
        // lose it. One flush for the whole batch.
        if outcomes.iter().any(|o| matches!(o, PollCommit::Changed(_))) {
            if let Err(e) = store.ensure_all_durable().await {
                warn!(error = %e, "could not flush the store");
            }
        }
        debug!(answers = jobs.len(), took = ?started.elapsed(), "polls committed");
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            let _ = job.reply.send(Ok(outcome));
        }
    }
}
