//! Wall-clock time as the gateway keeps it: Unix milliseconds in Redis
//! (scores, records, audit entries) and RFC 3339 with milliseconds in
//! answers to people.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `at` in Unix milliseconds; 0 for a time before 1970 (a clock set wrong).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// Unix milliseconds as RFC 3339 in UTC, e.g. `2026-12-03T19:08:45.123Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_through_rfc3339() {
        let at = UNIX_EPOCH + Duration::from_millis(1_764_788_925_123);
        assert_eq!(unix_ms(at), 1_764_788_925_123);
        assert_eq!(rfc3339_ms(1_764_788_925_123), "2025-12-03T19:08:45.123Z");
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
