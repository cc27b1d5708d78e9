//! Pure retry decisions: what follows an attempt, and when.

use crate::outbox::Verdict;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// What one attempt came to, as far as retrying is concerned.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptOutcome {
    /// Any 2xx within the timeout.
    Success,
    /// 410: the receiver says this endpoint is gone for good.
    Gone,
    /// Anything else: another status, a redirect, a timeout, a network error.
    Failure { retry_after: Option<Duration> },
}

/// Decide what follows the `n`-th attempt of the current schedule (1-based).
/// `jitter` in [0, 1] spreads each delay over ±20% so that receivers coming
/// back from an outage are not hit by every retry at once.
pub fn verdict(
    outcome: &AttemptOutcome,
    n: usize,
    schedule: &[Duration],
    now: DateTime<Utc>,
    jitter: f64,
) -> Verdict {
    match outcome {
        AttemptOutcome::Success => Verdict::Succeeded,
        AttemptOutcome::Gone => Verdict::Hold,
        AttemptOutcome::Failure { retry_after } => match schedule.get(n.saturating_sub(1)) {
            None => Verdict::Failed,
            Some(delay) => {
                let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
                let jittered = Duration::try_from_secs_f64(delay.as_secs_f64() * factor)
                    .unwrap_or(Duration::MAX);
                let wait = retry_after.map_or(jittered, |r| r.max(jittered));
                // A huge Retry-After or schedule entry waits as long as a
                // date can say, never overflows.
                let at = chrono::Duration::from_std(wait)
                    .ok()
                    .and_then(|w| now.checked_add_signed(w))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                Verdict::RetryAt(at)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Vec<Duration> {
        vec![Duration::from_secs(5), Duration::from_secs(300)]
    }

    #[test]
    fn follows_the_schedule_then_fails() {
        let now = Utc::now();
        let fail = AttemptOutcome::Failure { retry_after: None };
        assert_eq!(
            verdict(&fail, 1, &schedule(), now, 0.5),
            Verdict::RetryAt(now + chrono::Duration::seconds(5))
        );
        assert_eq!(
            verdict(&fail, 2, &schedule(), now, 0.5),
            Verdict::RetryAt(now + chrono::Duration::seconds(300))
        );
        assert_eq!(verdict(&fail, 3, &schedule(), now, 0.5), Verdict::Failed);
        assert_eq!(verdict(&fail, 1, &[], now, 0.5), Verdict::Failed);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let now = Utc::now();
        let fail = AttemptOutcome::Failure { retry_after: None };
        let Verdict::RetryAt(lo) = verdict(&fail, 1, &schedule(), now, 0.0) else {
            panic!()
        };
        let Verdict::RetryAt(hi) = verdict(&fail, 1, &schedule(), now, 1.0) else {
            panic!()
        };
        assert_eq!(lo - now, chrono::Duration::seconds(4));
        assert_eq!(hi - now, chrono::Duration::seconds(6));
    }

    #[test]
    fn retry_after_is_honoured_and_success_and_gone_end_retrying() {
        let now = Utc::now();
        let slow = AttemptOutcome::Failure {
            retry_after: Some(Duration::from_secs(60)),
        };
        assert_eq!(
            verdict(&slow, 1, &schedule(), now, 0.5),
            Verdict::RetryAt(now + chrono::Duration::seconds(60))
        );
        assert_eq!(
            verdict(&AttemptOutcome::Success, 9, &schedule(), now, 0.5),
            Verdict::Succeeded
        );
        assert_eq!(
            verdict(&AttemptOutcome::Gone, 1, &schedule(), now, 0.5),
            Verdict::Hold
        );
    }

    #[test]
    fn a_delay_past_the_calendar_waits_as_long_as_a_date_can_say() {
        let now = Utc::now();
        let fail = AttemptOutcome::Failure {
            retry_after: Some(Duration::MAX),
        };
        let v = verdict(&fail, 1, &[Duration::MAX], now, 1.0);
        assert_eq!(v, Verdict::RetryAt(DateTime::<Utc>::MAX_UTC));
    }
}
