//! The open-loop schedule: request `i` is due at `start + i / rate`,
//! whatever happened to the requests before it. Latency is measured from
//! that due time, so a stall of the server shows up in every request it
//! delayed (no coordinated omission).

use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct OpenLoop {
    rate: f64,
    count: u64,
}

impl OpenLoop {
    /// `rate` requests per second for `duration`.
    pub fn new(rate: f64, duration: Duration) -> Self {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        Self {
            rate,
            count: (rate * duration.as_secs_f64()).floor() as u64,
        }
    }

    /// How many requests the schedule holds.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// When request `i` is due, from the start.
    pub fn offset(&self, i: u64) -> Duration {
        Duration::from_nanos((i as f64 * 1e9 / self.rate).round() as u64)
    }
}

/// Deterministic failure injection: of requests 0..n, `floor(n * ratio)`
/// fail, spread evenly.
pub fn should_fail(k: u64, ratio: f64) -> bool {
    if ratio <= 0.0 {
        return false;
    }
    if ratio >= 1.0 {
        return true;
    }
    ((k + 1) as f64 * ratio).floor() > (k as f64 * ratio).floor()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_evenly_spaced_and_within_the_duration() {
        let s = OpenLoop::new(200.0, Duration::from_secs(5));
        assert_eq!(s.len(), 1000);
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_millis(5));
        assert_eq!(s.offset(200), Duration::from_secs(1));
        assert!(s.offset(s.len() - 1) < Duration::from_secs(5));
        for i in 1..s.len() {
            assert!(s.offset(i) > s.offset(i - 1));
        }
    }

    #[test]
    fn fractional_rates() {
        let s = OpenLoop::new(2.5, Duration::from_secs(2));
        assert_eq!(s.len(), 5);
        assert_eq!(s.offset(1), Duration::from_millis(400));
        let s = OpenLoop::new(30_000.0, Duration::from_millis(100));
        assert_eq!(s.len(), 3000);
        assert_eq!(s.offset(3), Duration::from_nanos(100_000));
    }

    #[test]
    fn failure_injection_hits_the_ratio() {
        let count = |r| (0..1000).filter(|&k| should_fail(k, r)).count();
        assert_eq!(count(0.0), 0);
        assert_eq!(count(0.5), 500);
        assert_eq!(count(0.1), 100);
        assert_eq!(count(1.0), 1000);
        // Evenly spread: at 0.5 every other one.
        assert!(!should_fail(0, 0.5) && should_fail(1, 0.5) && !should_fail(2, 0.5));
    }
}
