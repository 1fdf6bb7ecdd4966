//! Rate limits per destination, shared by every gateway process: one GCRA
//! (generic cell rate algorithm, as in redis-cell) per destination URL,
//! kept in Redis under a key of its own hash tag.
//!
//! A call reserves the next free send time rather than answering yes or no,
//! so each job asks once: it learns how long to wait, waits in the retry
//! schedule, and is sent when its time comes without asking again. The
//! limiter's clock is Redis's (`TIME`), so processes on machines whose
//! clocks disagree still share one pace.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use sha2::{Digest, Sha256};

use super::script::{Durability, ScriptCall};
use super::{Queue, QueueError};
use crate::config::RateLimit;

/// KEYS: the limiter. ARGV: the interval of one request (µs), the burst
/// tolerance ((burst - 1) × interval, µs). Returns how long to wait (µs)
/// before the reserved send time.
///
/// The key holds the theoretical arrival time (TAT) of the next request;
/// a request may go once now ≥ TAT − tolerance, and moves TAT on by one
/// interval. It expires once TAT is past, when it would say nothing.
const RESERVE: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local send = tat - tonumber(ARGV[2])
if send < now then send = now end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
return send - now
";

static RESERVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RESERVE));

/// The limiter key of the destination at `url`: its own hash tag, so on a
/// Redis Cluster the limiters spread over the masters; hashed, so a URL's
/// characters (braces included) cannot change its slot.
pub(super) fn limiter_key(prefix: &str, url: &str) -> String {
    let digest = Sha256::digest(url.as_bytes());
    format!("{{{prefix}:rate:{}}}", hex::encode(&digest[..12]))
}

impl Queue {
    /// Reserves the next send time to the destination at `url` under
    /// `limit`; returns how long from now it is (zero: go now).
    ///
    /// Not confirmed on replicas: a reservation lost in a failover lets
    /// the next requests through sooner, by at most one burst.
    pub async fn reserve_send(&self, url: &str, limit: RateLimit) -> Result<Duration, QueueError> {
        let interval = limit.rate.interval().as_micros() as u64;
        let tolerance = interval * u64::from(limit.burst - 1);
        let mut call = ScriptCall::new(&RESERVE_SCRIPT);
        call.key(limiter_key(&self.prefix, url))
            .arg(interval.max(1))
            .arg(tolerance);
        let wait_us: i64 = self.run_script(&call, Durability::Primary).await?;
        Ok(Duration::from_micros(wait_us.max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limiter_key_is_its_own_slot_whatever_the_url() {
        let key = limiter_key("switchyard", "http://billing.example.com/{x}");
        assert!(key.starts_with("{switchyard:rate:"), "{key}");
        assert_eq!(key.matches('{').count(), 1, "{key}");
        assert_ne!(
            key,
            limiter_key("switchyard", "http://billing.example.com/{y}")
        );
    }
}
