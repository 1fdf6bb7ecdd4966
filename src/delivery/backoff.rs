//! When to try again: exponential backoff with full jitter, and the
//! destination's own `Retry-After`.

use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::config::RetryPolicy;

/// The wait after failed attempt number `attempt` (1-based): uniform between
/// `initial_backoff` and the exponential bound `initial × 2^(attempt-1)`,
/// capped at `max_backoff`. A `Retry-After` from the destination is honoured
/// when longer, within the same cap.
pub fn next_delay(
    policy: &RetryPolicy,
    attempt: u32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    let bound = policy
        .initial_backoff
        .saturating_mul(1u32 << exponent.min(31))
        .min(policy.max_backoff);
    let low = policy.initial_backoff.min(bound);
    let jittered = if bound > low {
        let span = (bound - low).as_millis() as u64;
        low + Duration::from_millis(rng.random_range(0..=span))
    } else {
        low
    };
    jittered
        .max(retry_after.unwrap_or_default())
        .min(policy.max_backoff)
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
/// A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy(initial: u64, max: u64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(initial),
            max_backoff: Duration::from_millis(max),
        }
    }

    #[test]
    fn the_first_retry_waits_the_initial_backoff() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            next_delay(&policy(1000, 60_000), 1, None, &mut rng),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn retry_after_is_honoured_but_capped() {
        let mut rng = StdRng::seed_from_u64(1);
        let p = policy(100, 10_000);
        assert_eq!(
            next_delay(&p, 1, Some(Duration::from_secs(2)), &mut rng),
            Duration::from_secs(2)
        );
        assert_eq!(
            next_delay(&p, 1, Some(Duration::from_secs(3600)), &mut rng),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        // RFC 9110's example date is 1445412480 + 0 s.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    proptest! {
        /// Every delay lies within [initial, min(max, initial·2^(n-1))], or
        /// equals a longer Retry-After within the cap; nothing overflows.
        #[test]
        fn delays_stay_within_their_bounds(
            initial in 1u64..10_000,
            extra in 0u64..10_000_000,
            attempt in 1u32..200,
            retry_after in proptest::option::of(0u64..100_000_000),
            seed in any::<u64>(),
        ) {
            let p = policy(initial, initial + extra);
            let mut rng = StdRng::seed_from_u64(seed);
            let delay = next_delay(&p, attempt, retry_after.map(Duration::from_millis), &mut rng);
            let exp = Duration::from_millis(initial).saturating_mul(1 << (attempt - 1).min(31));
            let bound = exp.min(p.max_backoff);
            prop_assert!(delay <= p.max_backoff);
            match retry_after.map(Duration::from_millis) {
                Some(ra) if ra > bound => prop_assert_eq!(delay, ra.min(p.max_backoff)),
                _ => prop_assert!(delay >= p.initial_backoff && delay <= bound),
            }
        }
    }
}
