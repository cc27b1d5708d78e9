//! Pure scheduling: each room's phase, the backoff of a failing room, the next due time.

use crate::upstream::PollError;
use rand::Rng;
use std::time::Duration;

/// The phase of the `k`-th room within the interval. Successive multiples of
/// the golden ratio spread any number of rooms evenly, as they come and go.
pub fn phase(k: u64, interval: Duration) -> Duration {
    const PHI: f64 = 0.618_033_988_749_894_9;
    let frac = (k as f64 * PHI).fract();
    interval.mul_f64(frac)
}

/// Rooms wake on a shared tick: the polls due within one tick fire together,
/// so the runtime wakes once for them rather than once each. At 2,000 polls
/// a second this halves the client's CPU per poll (BENCHMARKS.md); a poll
/// is at most one tick late, against intervals of seconds.
pub const WAKE_TICK: Duration = Duration::from_millis(20);

/// `at` rounded up to the next tick counted from `origin`.
pub fn on_tick(
    at: tokio::time::Instant,
    origin: tokio::time::Instant,
    tick: Duration,
) -> tokio::time::Instant {
    let tick_ns = tick.as_nanos().max(1);
    let since = at.saturating_duration_since(origin).as_nanos();
    let rounded = since.div_ceil(tick_ns) * tick_ns;
    origin + Duration::from_nanos(rounded.min(u64::MAX as u128) as u64)
}

/// How long a room waits after its `failures`-th failure in a row:
/// exponential from one interval, capped, with jitter in [50%, 100%] so that
/// rooms that failed together do not retry together.
pub fn backoff(failures: u32, interval: Duration, ceiling: Duration, jitter: f64) -> Duration {
    let exp = interval.saturating_mul(1u32 << failures.min(16));
    let capped = exp.min(ceiling.max(interval));
    capped.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// The wait before a room's next poll after `result` (None: success).
pub fn next_wait(
    result: Option<&PollError>,
    failures: u32,
    interval: Duration,
    ceiling: Duration,
    rng: &mut impl Rng,
) -> Duration {
    match result {
        None => interval,
        // The id will not become valid by asking often.
        Some(PollError::BadRequest) => ceiling.max(interval),
        Some(_) => backoff(failures, interval, ceiling, rng.gen()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_ups_round_up_to_the_shared_tick() {
        let origin = tokio::time::Instant::now();
        let tick = Duration::from_millis(20);
        let at = |ms| origin + Duration::from_millis(ms);
        assert_eq!(on_tick(at(0), origin, tick), at(0));
        assert_eq!(on_tick(at(1), origin, tick), at(20));
        assert_eq!(on_tick(at(20), origin, tick), at(20));
        assert_eq!(on_tick(at(1_005), origin, tick), at(1_020));
        assert_eq!(
            on_tick(origin, at(50), tick),
            at(50),
            "never before the origin"
        );
    }

    #[test]
    fn phases_spread_evenly() {
        let interval = Duration::from_secs(1);
        for n in [3u64, 10, 100, 1000] {
            let mut buckets = vec![0u64; 10];
            for k in 0..n {
                let p = phase(k, interval);
                assert!(p < interval);
                buckets[(p.as_secs_f64() * 10.0) as usize] += 1;
            }
            let (lo, hi) = (buckets.iter().min().unwrap(), buckets.iter().max().unwrap());
            // The golden-ratio sequence keeps every gap within a small factor of 1/n.
            assert!(hi - lo <= 2 + n / 50, "n={n}: {buckets:?}");
        }
    }

    #[test]
    fn backoff_grows_to_the_ceiling_with_jitter() {
        let i = Duration::from_secs(5);
        let max = Duration::from_secs(120);
        assert_eq!(backoff(1, i, max, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(2, i, max, 1.0), Duration::from_secs(20));
        assert_eq!(backoff(2, i, max, 0.0), Duration::from_secs(10));
        assert_eq!(backoff(30, i, max, 1.0), max);
        assert!(backoff(30, i, max, 0.3) < max);
    }

    #[test]
    fn success_keeps_the_interval_and_400_waits_longest() {
        let mut rng = rand::thread_rng();
        let i = Duration::from_secs(5);
        let max = Duration::from_secs(120);
        assert_eq!(next_wait(None, 0, i, max, &mut rng), i);
        assert_eq!(
            next_wait(Some(&PollError::BadRequest), 1, i, max, &mut rng),
            max
        );
        let w = next_wait(Some(&PollError::Timeout), 1, i, max, &mut rng);
        assert!(w >= i && w <= Duration::from_secs(10));
    }
}
