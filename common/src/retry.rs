//! The one retry backoff: exponential, capped, with jitter.
//!
//! Without jitter, every client that saw the same outage retries at the same instants and the
//! recovering service is hit in lockstep; with "equal jitter" each wait is half the exponential
//! step plus a random share of the other half, so waits still grow and never fall below half.

use std::time::Duration;

use rand::Rng;

/// The wait before retry number `attempt` (1 = the first retry): `base * 2^(attempt-1)`, capped
/// at `max`, of which the upper half is random. Never more than `max`, never less than half of
/// the capped step.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let step = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let half = step / 2;
    let spread = u64::try_from((step - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rand::rng().random_range(0..=spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_backoff_grows_is_capped_and_jittered() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(5));
        for attempt in [0, 1, 2, 3, 10, 40, u32::MAX] {
            let step = base
                .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
                .min(max);
            for _ in 0..50 {
                let w = backoff(attempt, base, max);
                assert!(
                    w >= step / 2 && w <= step,
                    "attempt {attempt}: {w:?} vs {step:?}"
                );
            }
        }
        assert!(backoff(u32::MAX, base, max) >= max / 2);
        // Jitter: 50 waits of one attempt are not all equal.
        let waits: std::collections::HashSet<_> = (0..50).map(|_| backoff(4, base, max)).collect();
        assert!(waits.len() > 1, "no jitter: {waits:?}");
    }
}
