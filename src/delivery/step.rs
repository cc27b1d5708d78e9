//! The engine's single step, in two halves: make one attempt (network), then
//! record a batch of attempts (one store transaction for many).

use super::retry::{verdict, AttemptOutcome};
use super::Engine;
use super::{Attempt, Delivery, Verdict};
use crate::subscription::should_disable;
use chrono::Utc;
use tracing::{info, instrument, warn};

/// One attempt made and judged, not yet recorded.
#[derive(Clone, Debug)]
pub struct Attempted {
    pub key: [u8; 16],
    pub subscription_id: String,
    pub lane: String,
    pub event_id: String,
    pub attempt: Attempt,
    pub outcome: AttemptOutcome,
    pub verdict: Verdict,
}

impl Engine {
    /// Send one delivery once and record what happened. Returns None when the
    /// delivery, its subscription or its event is gone.
    pub async fn deliver_once(&self, key: &[u8; 16]) -> Option<(Delivery, Verdict)> {
        let done = self.attempt(key).await?;
        let verdict = done.verdict.clone();
        let recorded = self.record(std::slice::from_ref(&done)).pop()??;
        Some((recorded, verdict))
    }

    /// Make one attempt of a delivery and decide what follows.
    #[instrument(skip(self), fields(delivery = %crate::store::delivery_id(*key)))]
    pub async fn attempt(&self, key: &[u8; 16]) -> Option<Attempted> {
        let store = &self.store;
        let delivery = store.delivery_at(key).ok()??;
        let sub = store.subscription(&delivery.subscription_id)?;
        let Some(event) = store.event(&delivery.event_id).ok()? else {
            // Pruned by retention while the delivery waited: say so, don't hang.
            let attempt = Attempt {
                at: Utc::now(),
                status_code: None,
                error: Some("the event is no longer stored (retention)".into()),
                duration_ms: 0,
                response: None,
            };
            return Some(Attempted {
                key: *key,
                lane: delivery.lane().to_string(),
                subscription_id: delivery.subscription_id,
                event_id: delivery.event_id,
                attempt,
                outcome: AttemptOutcome::Failure { retry_after: None },
                verdict: Verdict::Failed,
            });
        };
        let (attempt, outcome) = self.sender.send(&sub, &event, Utc::now()).await;
        let n = delivery.attempts.len() - delivery.schedule_start.min(delivery.attempts.len()) + 1;
        let verdict = verdict(&outcome, n, &self.schedule, Utc::now(), rand::random());
        let label = match (&outcome, &verdict) {
            (AttemptOutcome::Success, _) => "succeeded",
            (AttemptOutcome::Gone, _) => "gone",
            (_, Verdict::Failed) => "failed",
            _ => "retrying",
        };
        self.metrics
            .delivery(label, std::time::Duration::from_millis(attempt.duration_ms));
        match (&outcome, &verdict) {
            (AttemptOutcome::Success, _) => {
                info!(subscription = %sub.id, event = %event.id, status = ?attempt.status_code, ms = attempt.duration_ms, "delivered")
            }
            (_, Verdict::Failed) => {
                warn!(subscription = %sub.id, event = %event.id, "delivery failed: retry schedule spent")
            }
            _ => {
                info!(subscription = %sub.id, event = %event.id, status = ?attempt.status_code, error = ?attempt.error, "attempt failed")
            }
        }
        Some(Attempted {
            key: *key,
            lane: delivery.lane().to_string(),
            subscription_id: delivery.subscription_id,
            event_id: delivery.event_id,
            attempt,
            outcome,
            verdict,
        })
    }

    /// Record attempts in one transaction and keep their subscriptions'
    /// health. Returns the recorded deliveries, None where one vanished.
    pub fn record(&self, done: &[Attempted]) -> Vec<Option<Delivery>> {
        let items: Vec<_> = done
            .iter()
            .map(|d| (d.key, d.attempt.clone(), d.verdict.clone()))
            .collect();
        let recorded = match self.store.finish_attempts(&items) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "could not record attempts; they will be made again");
                self.store.report(&e);
                return vec![None; done.len()];
            }
        };
        for d in done {
            self.after_attempt(&d.subscription_id, &d.outcome);
        }
        recorded
    }

    /// Keep the subscription's health: 410 or five days of failure disable it.
    fn after_attempt(&self, sub_id: &str, outcome: &AttemptOutcome) {
        let now = Utc::now();
        let needs_change = self
            .store
            .subscription(sub_id)
            .is_some_and(|s| match outcome {
                AttemptOutcome::Success => s.failing_since.is_some(),
                AttemptOutcome::Gone => s.enabled,
                AttemptOutcome::Failure { .. } => {
                    s.failing_since.is_none() || (s.enabled && should_disable(s.failing_since, now))
                }
            });
        if !needs_change {
            return; // the common case writes nothing
        }
        let result = self.store.update_subscription(sub_id, |s| match outcome {
            AttemptOutcome::Success => s.failing_since = None,
            AttemptOutcome::Gone => {
                s.enabled = false;
                s.disabled_reason = Some("receiver answered 410 Gone".into());
                s.updated_at = now;
            }
            AttemptOutcome::Failure { .. } => {
                let since = *s.failing_since.get_or_insert(now);
                if s.enabled && should_disable(Some(since), now) {
                    s.enabled = false;
                    s.disabled_reason = Some("failing without a success for 5 days".into());
                    s.updated_at = now;
                }
            }
        });
        match result {
            Ok(Some(s)) if !s.enabled && !matches!(outcome, AttemptOutcome::Success) => {
                warn!(subscription = %s.id, reason = ?s.disabled_reason, "subscription disabled")
            }
            Err(e) => warn!(error = %e, "could not update the subscription"),
            _ => {}
        }
    }
}
