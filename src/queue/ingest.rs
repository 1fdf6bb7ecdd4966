//! Writing accepted events: the dedupe record and one job per matched route
//! in a single Lua script, so "duplicate" is only ever answered for an event
//! that really is queued (DESIGN.md invariant 1), and a crash can never leave
//! a dedupe record without its jobs.
//!
//! Concurrent requests are written in batches (see [`super::batch`]): one
//! script call writes every event waiting, and each request is answered from
//! that call's result. Under load this turns thousands of Redis calls a
//! second into a few hundred larger ones; an event alone is written at once.

use std::sync::LazyLock;

use bytes::Bytes;
use redis::Script;

use super::batch::{Batcher, per_item};
use super::lag::lag_entry_lua;
use super::order::{OrderKeys, ord_lua};
use super::script::{Durability, ScriptCall};
use super::{Job, Partition, Queue, QueueError, Stat};

/// Claims each event's delivery id, then writes its jobs; or returns the
/// first event's id for a delivery id seen before.
///
/// KEYS: jobs stream, received counters, last-received times, then one seen
/// key per event (in ARGV order), then the lag keys of indexed routes and
/// the lines of ordered routes' keys.
/// ARGV: now (ms), then per event: has_dedupe, event id, dedupe TTL (ms),
/// number of jobs, and per job its route name, encoded job, lag entry (see
/// [`super::lag`]) and ordering entry (see [`super::order`]): a job whose
/// key has a head joins the key's line instead of the stream.
/// Returns the number of events when every one was queued (see
/// [`per_item`]); otherwise, per event, `1` (queued) or the first event's id
/// (duplicate).
///
/// One `SET NX GET` both looks the delivery id up and claims it (Redis 7.0
/// and later). The dedupe record never stands without its jobs, nor part of
/// an event's jobs without the rest: a job that cannot be added removes the
/// event's jobs added so far and its claim before the script fails.
///
/// The first write is the OOM check: Redis refuses a script's first write
/// when over `maxmemory`, and lets a script that has written finish, so an
/// out-of-memory Redis writes no event of a batch (and a batch can pass
/// `maxmemory` by its own size). An error of another kind mid-script keeps
/// the events written before it (an event's own writes are undone), and the whole batch is answered 503: the
/// retries of their senders are answered `duplicate` when they carry a
/// delivery id, and are queued again when they do not. Counters are added
/// once per route per batch, for the events written.
const ENQUEUE_EVENTS: &str = concat!(
    lag_entry_lua!(),
    ord_lua!(),
    r"
local function count_received(received)
  for route, count in pairs(received) do
    redis.call('HINCRBY', KEYS[2], route, count)
    redis.call('HSET', KEYS[3], route, ARGV[1])
  end
end
local results, received, duplicates = {}, {}, false
local a, e = 2, 0
while a <= #ARGV do
  e = e + 1
  local dedupe, id, ttl, jobs = ARGV[a] == '1', ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  a = a + 4
  local first = dedupe and redis.call('SET', KEYS[3 + e], id, 'NX', 'GET', 'PX', ttl)
  if first then
    results[e], duplicates = first, true
  else
    local undo = {}
    for j = a, a + 4 * jobs - 1, 4 do
      local lines, line, field = ord_entry(ARGV[j + 3])
      local written
      if lines and redis.call('HEXISTS', lines, field) == 1 then
        written = redis.pcall('RPUSH', line, ARGV[j + 1])
        if not (type(written) == 'table' and written.err) then
          undo[#undo + 1] = {'RPOP', line}
        end
      else
        written = redis.pcall('XADD', KEYS[1], '*', 'job', ARGV[j + 1])
        if not (type(written) == 'table' and written.err) then
          undo[#undo + 1] = {'XDEL', KEYS[1], written}
          if lines then
            redis.call('HSET', lines, field, '1')
            undo[#undo + 1] = {'HDEL', lines, field}
          end
        end
      end
      if type(written) == 'table' and written.err then
        for u = #undo, 1, -1 do redis.call(unpack(undo[u])) end
        if dedupe then redis.call('DEL', KEYS[3 + e]) end
        count_received(received)
        return written
      end
    end
    for j = a, a + 4 * jobs - 1, 4 do
      received[ARGV[j]] = (received[ARGV[j]] or 0) + 1
      local lag, job_id = lag_entry(ARGV[j + 2])
      if lag then redis.call('ZADD', lag, ARGV[1], job_id) end
    end
    results[e] = 1
  end
  a = a + 4 * jobs
end
count_received(received)
if duplicates then return results end
return e
"
);

/// Hashed once; sent as EVALSHA (see [`super::script`]).
static ENQUEUE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ENQUEUE_EVENTS));

/// An accepted event, as ingest hands it over; the queue makes its jobs.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// Gateway-assigned event id.
    pub id: &'a str,
    /// Source name.
    pub source: &'a str,
    /// The routes it matched: one job each.
    pub routes: &'a [&'a str],
    /// When the request arrived, Unix ms.
    pub received_ms: u64,
    /// The request headers, as [`encode_headers`] wrote them.
    pub headers: Bytes,
    /// The request body exactly.
    pub body: Bytes,
    /// The sender's delivery id and how long to remember it.
    pub dedupe: Option<(&'a str, std::time::Duration)>,
    /// Its ordering key, when its source names one and it has it.
    pub ordering_key: Option<&'a str>,
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
///
/// `pairs` is called twice: once to size the buffer, once to fill it (grown
/// by doubling instead, the buffer was reallocated seven times per request).
pub fn encode_headers<'a, I>(pairs: impl Fn() -> I) -> Vec<u8>
where
    I: Iterator<Item = (&'a str, &'a [u8])>,
{
    let size = pairs()
        .map(|(name, value)| name.len() + value.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(size);
    for (name, value) in pairs() {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Decodes what [`encode_headers`] wrote, borrowing from it: delivery
/// rebuilds every job's headers, so nothing is copied here.
pub fn decode_headers(encoded: &[u8]) -> impl Iterator<Item = (&str, &[u8])> {
    encoded
        .split(|b| *b == b'\n')
        .filter_map(|line| line.strip_suffix(b"\r"))
        .filter_map(|line| {
            let colon = line.iter().position(|b| *b == b':')?;
            let name = std::str::from_utf8(&line[..colon]).ok()?;
            let value = line[colon + 1..]
                .strip_prefix(b" ")
                .unwrap_or(&line[colon + 1..]);
            Some((name, value))
        })
}

/// One event on its way to Redis, with its jobs encoded.
struct PendingEvent {
    seen_key: String,
    dedupe_ttl_ms: Option<u64>,
    id: String,
    jobs: Vec<PendingJob>,
}

/// One job of a [`PendingEvent`], encoded.
struct PendingJob {
    route: String,
    id: String,
    ordering_key: Option<String>,
    encoded: Vec<u8>,
}

/// Writes accepted events in batches, one batching task per partition;
/// cheap to clone.
#[derive(Clone)]
pub struct EventWriter {
    batchers: Vec<Batcher<PendingEvent, Enqueued>>,
    queue: Queue,
}

impl Queue {
    /// Starts the event writer's batching tasks on the current runtime.
    pub fn event_writer(&self) -> EventWriter {
        let batchers = (0..self.written.len())
            .map(|index| {
                Batcher::spawn(
                    self.clone(),
                    |event: &PendingEvent| event.jobs.iter().map(|job| job.encoded.len()).sum(),
                    move |queue: Queue, batch: Vec<PendingEvent>| async move {
                        let partition = &queue.written[index];
                        queue.write_events(partition, &batch).await
                    },
                )
            })
            .collect();
        EventWriter {
            batchers,
            queue: self.clone(),
        }
    }
}

impl EventWriter {
    /// Durably queues one job per route of `event` and records its delivery
    /// id, atomically; or reports the earlier event with the same delivery id.
    pub async fn enqueue(&self, event: &NewEvent<'_>) -> Result<Enqueued, QueueError> {
        self.queue.refused_for_eviction()?;
        let delivery_id = event.dedupe.map(|(id, _)| id);
        let partition = self
            .queue
            .partition_for(event.source, event.ordering_key, delivery_id);
        self.batchers[usize::from(partition.index)]
            .submit(PendingEvent {
                // Without dedupe the key is still passed (it must be
                // declared); it is never touched.
                seen_key: partition.keys.seen(event.source, delivery_id.unwrap_or("")),
                // PX 0 is an error; a window under 1 ms means 1 ms.
                dedupe_ttl_ms: event.dedupe.map(|(_, ttl)| (ttl.as_millis() as u64).max(1)),
                id: event.id.to_owned(),
                jobs: event
                    .routes
                    .iter()
                    .map(|route| {
                        let mut job = Job::first(event, route);
                        if self.queue.is_ordered(route) {
                            job.ordering_key = event.ordering_key.map(str::to_owned);
                        }
                        PendingJob {
                            route: (*route).to_owned(),
                            encoded: job.encode(),
                            ordering_key: job.ordering_key,
                            id: job.id,
                        }
                    })
                    .collect(),
            })
            .await
    }

    /// [`Self::enqueue`], given up at `deadline` with a `Timeout` error. The
    /// event may still be written after that; it was answered no 2xx.
    pub async fn enqueue_by(
        &self,
        event: &NewEvent<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<Enqueued, QueueError> {
        let started = tokio::time::Instant::now();
        tokio::time::timeout_at(deadline, self.enqueue(event))
            .await
            .unwrap_or_else(|_| {
                Err(QueueError::Timeout {
                    url: self.queue.display_url().to_owned(),
                    after: deadline.saturating_duration_since(started),
                })
            })
    }
}

impl Queue {
    /// One script call for `batch`, all of `partition`; one result per
    /// event, in order. Acked to senders, so confirmed by replicas.
    async fn write_events(
        &self,
        partition: &Partition,
        batch: &[PendingEvent],
    ) -> Vec<Result<Enqueued, QueueError>> {
        let keys = &partition.keys;
        let mut call = ScriptCall::new(&ENQUEUE_SCRIPT);
        call.key(keys.jobs())
            .key(keys.stat(Stat::Received))
            .key(keys.stat(Stat::LastReceived));
        for event in batch {
            call.key(&event.seen_key);
        }
        let lag = self.lag_keys(
            &mut call,
            partition,
            batch
                .iter()
                .flat_map(|e| e.jobs.iter().map(|j| j.route.as_str())),
        );
        let mut order = OrderKeys::new(partition);
        let ordering: Vec<Vec<String>> = batch
            .iter()
            .map(|event| {
                event
                    .jobs
                    .iter()
                    .map(|job| order.arg(&mut call, &job.route, job.ordering_key.as_deref()))
                    .collect()
            })
            .collect();
        call.arg(crate::clock::now_ms());
        for (event, ordering) in batch.iter().zip(&ordering) {
            call.arg(if event.dedupe_ttl_ms.is_some() {
                "1"
            } else {
                "0"
            })
            .arg(&event.id)
            .arg(event.dedupe_ttl_ms.unwrap_or(0))
            .arg(event.jobs.len());
            for (job, order) in event.jobs.iter().zip(ordering) {
                call.arg(&job.route)
                    .arg(&job.encoded)
                    .arg(lag.arg(&job.route, &job.id))
                    .arg(order);
            }
        }
        self.invoke_batch(
            "enqueue",
            &call,
            Durability::Replicated,
            batch.len(),
            enqueue_results,
        )
        .await
    }
}

/// Reads [`ENQUEUE_EVENTS`]'s reply for `events` events; `None` when it
/// does not answer for each of them.
fn enqueue_results(reply: redis::Value, events: usize) -> Option<Vec<Enqueued>> {
    per_item(reply, events, Enqueued::Accepted, |result| match result {
        redis::Value::Int(1) => Some(Enqueued::Accepted),
        redis::Value::BulkString(first_id) => Some(Enqueued::Duplicate {
            first_id: String::from_utf8(first_id).ok()?,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn enqueue_replies_are_read_per_event_or_refused() {
        use redis::Value;
        assert_eq!(
            enqueue_results(Value::Int(3), 3),
            Some(vec![Enqueued::Accepted; 3])
        );
        assert_eq!(enqueue_results(Value::Int(2), 3), None);
        let mixed = Value::Array(vec![Value::Int(1), Value::BulkString(b"01FIRST".to_vec())]);
        assert_eq!(
            enqueue_results(mixed.clone(), 2),
            Some(vec![
                Enqueued::Accepted,
                Enqueued::Duplicate {
                    first_id: "01FIRST".to_owned()
                }
            ])
        );
        assert_eq!(enqueue_results(mixed, 3), None);
        assert_eq!(enqueue_results(Value::Array(vec![Value::Int(0)]), 1), None);
        assert_eq!(enqueue_results(Value::Nil, 1), None);
    }

    proptest! {
        #[test]
        fn headers_survive_encoding_exactly(
            pairs in proptest::collection::vec(
                ("[a-z0-9-]{1,20}", proptest::collection::vec(
                    any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'), 0..40)),
                0..10)
        ) {
            let encoded = encode_headers(|| pairs.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
            let decoded: Vec<(String, Vec<u8>)> = decode_headers(&encoded)
                .map(|(name, value)| (name.to_owned(), value.to_vec()))
                .collect();
            prop_assert_eq!(decoded, pairs);
        }
    }
}
