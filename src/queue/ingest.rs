//! Writing accepted events: the dedupe record and one job per matched route
//! in a single Lua script, so "duplicate" is only ever answered for an event
//! that really is queued (DESIGN.md invariant 1), and a crash can never leave
//! a dedupe record without its jobs.

use std::sync::LazyLock;

use redis::Script;

use super::{Job, Queue, QueueError, Stat};

/// Writes the jobs, then the dedupe record; or returns the first event's id.
///
/// KEYS: jobs stream, seen key, received counters, last-received times.
/// ARGV: has_dedupe, event id, dedupe TTL (ms), now (ms), then per matched
/// route its name and its encoded job.
///
/// The first write is the OOM check: Redis refuses a script's first write
/// when over `maxmemory`, and lets a script that has written finish, so the
/// jobs and the record are written all or none.
const ENQUEUE_EVENT: &str = r"
if ARGV[1] == '1' then
  local first = redis.call('GET', KEYS[2])
  if first then return {0, first} end
end
for i = 5, #ARGV, 2 do
  redis.call('XADD', KEYS[1], '*', 'job', ARGV[i + 1])
  redis.call('HINCRBY', KEYS[3], ARGV[i], 1)
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[4])
end
if ARGV[1] == '1' then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
end
return {1, ARGV[2]}
";

/// Compiled once; `invoke` sends EVALSHA and falls back to EVAL after a
/// Redis restart flushed the script cache.
static ENQUEUE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ENQUEUE_EVENT));

/// An accepted event and the jobs it makes.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// Gateway-assigned event id.
    pub id: &'a str,
    /// Source name.
    pub source: &'a str,
    /// One job per matched route.
    pub jobs: &'a [Job],
    /// The sender's delivery id and how long to remember it.
    pub dedupe: Option<(&'a str, std::time::Duration)>,
}

/// What became of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Every job is durably queued.
    Accepted,
    /// The delivery id was seen before; nothing was written.
    Duplicate {
        /// The id the first delivery got.
        first_id: String,
    },
}

/// Encodes header pairs as `name: value\r\n` lines. Header values cannot hold
/// CR or LF and names cannot hold `:`, so this is exact and reversible, and
/// keeps non-UTF-8 values byte for byte.
pub fn encode_headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Decodes what [`encode_headers`] wrote.
pub fn decode_headers(encoded: &[u8]) -> Vec<(String, Vec<u8>)> {
    encoded
        .split(|b| *b == b'\n')
        .filter_map(|line| line.strip_suffix(b"\r"))
        .filter_map(|line| {
            let colon = line.iter().position(|b| *b == b':')?;
            let name = std::str::from_utf8(&line[..colon]).ok()?.to_owned();
            let value = line[colon + 1..]
                .strip_prefix(b" ")
                .unwrap_or(&line[colon + 1..]);
            Some((name, value.to_vec()))
        })
        .collect()
}

impl Queue {
    /// Durably queues one job per route of `event` and records its delivery
    /// id, atomically; or reports the earlier event with the same delivery id.
    pub async fn enqueue_event(&self, event: &NewEvent<'_>) -> Result<Enqueued, QueueError> {
        let seen = match event.dedupe {
            Some((delivery_id, _)) => self.keys.seen(event.source, delivery_id),
            // The key must still be in the hash slot; it is never touched.
            None => self.keys.seen(event.source, ""),
        };
        let mut invocation = ENQUEUE_SCRIPT.key(self.keys.jobs());
        invocation
            .key(seen)
            .key(self.keys.stat(Stat::Received))
            .key(self.keys.stat(Stat::LastReceived))
            .arg(if event.dedupe.is_some() { "1" } else { "0" })
            .arg(event.id)
            .arg(event.dedupe.map_or(0, |(_, ttl)| ttl.as_millis() as u64))
            .arg(super::now_ms());
        for job in event.jobs {
            invocation.arg(&job.route).arg(job.encode());
        }
        let mut conn = self.conn.clone();
        let (accepted, id): (u8, String) = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(if accepted == 1 {
            Enqueued::Accepted
        } else {
            Enqueued::Duplicate { first_id: id }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn headers_survive_encoding_exactly(
            pairs in proptest::collection::vec(
                ("[a-z0-9-]{1,20}", proptest::collection::vec(
                    any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'), 0..40)),
                0..10)
        ) {
            let encoded = encode_headers(pairs.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
            prop_assert_eq!(decode_headers(&encoded), pairs);
        }
    }
}
