//! The engine's single step: one attempt of one claim, judged.

use super::retry::{verdict, AttemptOutcome};
use super::Engine;
use crate::outbox::{Attempt, Claim, Completion, Health, Verdict};
use chrono::{DateTime, Utc};
use tracing::{debug, instrument, warn};

impl Engine {
    /// Send a claimed delivery once and decide what follows.
    #[instrument(skip_all, fields(delivery = %claim.delivery.id))]
    pub async fn attempt(&self, mut claim: Claim, now: DateTime<Utc>) -> Completion {
        let missing = claim.body.is_none();
        let (attempt, outcome) = match claim.body.take() {
            Some(body) => {
                let event_id = claim.delivery.event_id.as_str();
                self.sender.send(&claim.target, event_id, body, now).await
            }
            // Pruned by retention while the delivery waited: say so, don't hang.
            None => (
                Attempt {
                    at: now,
                    status_code: None,
                    error: Some("the event is no longer stored (retention)".into()),
                    duration_ms: 0,
                    response: None,
                },
                AttemptOutcome::Failure { retry_after: None },
            ),
        };
        let d = &claim.delivery;
        let n = d.attempts.len() - d.schedule_start.min(d.attempts.len()) + 1;
        let verdict = if missing {
            Verdict::Failed // retrying cannot bring the event back
        } else {
            verdict(&outcome, n, &self.schedule, now, rand::random())
        };
        let (label, health) = match (&outcome, &verdict) {
            (AttemptOutcome::Success, _) => ("succeeded", Health::Success),
            (AttemptOutcome::Gone, _) => ("gone", Health::Gone),
            (_, Verdict::Failed) => ("failed", Health::Failure),
            _ => ("retrying", Health::Failure),
        };
        self.metrics
            .delivery(label, std::time::Duration::from_millis(attempt.duration_ms));
        match label {
            "succeeded" => {
                debug!(event = %d.event_id, status = ?attempt.status_code, ms = attempt.duration_ms, "delivered")
            }
            "failed" => {
                warn!(subscription = %d.subscription_id, event = %d.event_id, error = ?attempt.error, "delivery failed: retry schedule spent")
            }
            _ => {
                debug!(subscription = %d.subscription_id, event = %d.event_id, status = ?attempt.status_code, error = ?attempt.error, "attempt failed")
            }
        }
        Completion {
            claim,
            attempt,
            verdict,
            health,
        }
    }
}
