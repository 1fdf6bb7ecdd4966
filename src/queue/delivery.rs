//! The queue as delivery workers see it: reading jobs through the consumer
//! group, taking over jobs of dead consumers, and the state moves of a job
//! (delivered, rescheduled, dead-lettered), each one Lua script so that a
//! crash between two commands can duplicate a delivery but never lose one.
//!
//! Every move starts with XACK and acts only when it acknowledged the entry:
//! when a slow worker's job was taken over by another, exactly one of the
//! two moves the job on.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamId, StreamInfoConsumersReply, StreamReadReply};
use redis::{Script, Value};

use super::batch::{Batcher, per_item};
use super::connection::Connection;
use super::lag::lag_entry_lua;
use super::order::{OrderKeys, ord_lua};
use super::script::{Durability, ScriptCall};
use super::{Job, JobDecodeError, Partition, Queue, QueueError, Stat};

/// The consumer group every delivery worker belongs to.
pub const GROUP: &str = "delivery";

/// Where a job sits: its partition and stream entry. Every move of the job
/// acknowledges that entry, in that partition.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The partition whose stream holds it.
    pub partition: Partition,
    /// Stream entry id.
    pub id: String,
}

/// A job read from the stream, with the entry that carries it.
#[derive(Debug)]
pub struct Claimed {
    /// Where it sits.
    pub entry: Entry,
    /// The job, or why it could not be read.
    pub job: Result<Job, JobDecodeError>,
    /// Put back by a drain from the route's held jobs: it has waited its
    /// turn, so only a pause holds it again. Its place in line (the stream
    /// id it was held under), kept should it be held again.
    pub released: Option<String>,
}

/// Why delivery gave up on a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// Every attempt of the policy failed.
    Exhausted,
    /// The destination answered a status that is not retried.
    Rejected,
    /// The job's route is no longer configured.
    Unroutable,
    /// The stored job could not be decoded.
    Undecodable,
}

impl DeadReason {
    /// As stored and shown: `exhausted`, `rejected`, `unroutable`, `undecodable`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Exhausted => "exhausted",
            DeadReason::Rejected => "rejected",
            DeadReason::Unroutable => "unroutable",
            DeadReason::Undecodable => "undecodable",
        }
    }
}

/// A dead letter as the delivery engine writes it: the job and, as
/// configured at failure time, who owns it and where it was going.
#[derive(Debug, Clone)]
pub struct NewDeadLetter<'a> {
    /// Dead-letter id (the job id, or the entry id of an undecodable job).
    pub id: &'a str,
    /// The stored job (its exact bytes when undecodable).
    pub job: Vec<u8>,
    /// Route name (empty when undecodable).
    pub route: &'a str,
    /// Source name.
    pub source: &'a str,
    /// Event id.
    pub event_id: &'a str,
    /// Owner id.
    pub owner: &'a str,
    /// Owner's team, contact and runbook, as configured at failure time.
    pub team: &'a str,
    /// How to reach the owner.
    pub contact: &'a str,
    /// Runbook link.
    pub runbook: &'a str,
    /// Destination URL.
    pub destination: &'a str,
    /// Why delivery gave up.
    pub reason: DeadReason,
    /// Last status answered, if any.
    pub status: Option<u16>,
    /// Attempts made, over every life of the job.
    pub attempts: usize,
    /// When, Unix ms.
    pub failed_ms: u64,
    /// The job's ordering key, on an ordered route.
    pub ordering_key: Option<&'a str>,
    /// Its key waits for this dead letter to be replayed or deleted
    /// (`on_dead_letter = "block"`) instead of moving on.
    pub blocks_key: bool,
}

/// Completes a batch of delivered jobs. KEYS: jobs, delivered counters,
/// last-success times, then the lag keys of indexed routes and the lines of
/// ordered jobs' keys. ARGV: the consumer group, now (ms), then per job its
/// entry id, route, lag entry (see [`super::lag`]) and ordering entry (see
/// [`super::order`]: the key's next job goes on the stream). Returns the number of jobs when every one was moved
/// (see [`per_item`]); otherwise per job 1 (moved) or 0 (already moved by
/// another worker). The entries acknowledged are deleted with one `XDEL`.
const COMPLETE: &str = concat!(
    lag_entry_lua!(),
    ord_lua!(),
    r"
local moved, acked, delivered, all = {}, {}, {}, true
for i = 3, #ARGV, 4 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    acked[#acked + 1] = ARGV[i]
    delivered[ARGV[i + 1]] = (delivered[ARGV[i + 1]] or 0) + 1
    local lag, job_id = lag_entry(ARGV[i + 2])
    if lag then redis.call('ZREM', lag, job_id) end
    local lines, line, field = ord_entry(ARGV[i + 3])
    if lines then ord_next(lines, line, field, KEYS[1], false) end
    moved[#moved + 1] = 1
  else
    moved[#moved + 1] = 0
    all = false
  end
end
if #acked > 0 then
  redis.call('XDEL', KEYS[1], unpack(acked))
end
for route, count in pairs(delivered) do
  redis.call('HINCRBY', KEYS[2], route, count)
  redis.call('HSET', KEYS[3], route, ARGV[2])
end
if all then return #moved end
return moved
"
);

/// KEYS: jobs, retry, retrying counters. ARGV: the consumer group, entry
/// id, due (ms), route, job. A retry member is `<route>\0<job>` (a NUL byte:
/// route names cannot hold one) so the schedule can count per route.
/// Returns `{1, the route's jobs now in the schedule}`, or `{0, 0}` when
/// another worker moved the job first.
const RESCHEDULE: &str = r"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4] .. '\0' .. ARGV[5])
  return {1, redis.call('HINCRBY', KEYS[3], ARGV[4], 1)}
end
return {0, 0}
";

/// KEYS: jobs, dead:<id>, dead, dead-by-route:<r>, dead-by-owner:<o>,
/// dead-by-source:<s>, then the route's lag key when indexed and the lines
/// of an ordered job's key. ARGV: the consumer group, entry id, failed (ms),
/// id (the job id), lag entry (see [`super::lag`]), ordering entry (see
/// [`super::order`]), `1` when the key is blocked until this dead letter is
/// replayed or deleted (else its next job goes on), then field/value pairs
/// of the hash.
const DEAD_LETTER: &str = concat!(
    lag_entry_lua!(),
    ord_lua!(),
    r"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
  local lag, job_id = lag_entry(ARGV[5])
  if lag then redis.call('ZREM', lag, job_id) end
  redis.call('HSET', KEYS[2], unpack(ARGV, 8))
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
  redis.call('ZADD', KEYS[5], ARGV[3], ARGV[4])
  redis.call('ZADD', KEYS[6], ARGV[3], ARGV[4])
  local lines, line, field = ord_entry(ARGV[6])
  if lines then
    if ARGV[7] == '1' then
      redis.call('HSET', lines, field, 'b:' .. ARGV[4])
    else
      ord_next(lines, line, field, KEYS[1], false)
    end
  end
  return 1
end
return 0
"
);

/// KEYS: retry, jobs, retrying counters. ARGV: now (ms), limit.
const PROMOTE_DUE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  local cut = string.find(member, '\0', 1, true)
  redis.call('XADD', KEYS[2], '*', 'job', string.sub(member, cut + 1))
  redis.call('HINCRBY', KEYS[3], string.sub(member, 1, cut - 1), -1)
  redis.call('ZREM', KEYS[1], member)
end
return #due
";

static COMPLETE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(COMPLETE));
static RESCHEDULE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RESCHEDULE));
static DEAD_LETTER_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(DEAD_LETTER));
static PROMOTE_DUE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PROMOTE_DUE));

/// Margin of the reader's response timeout over its blocking time.
const BLOCKING_MARGIN: Duration = Duration::from_secs(5);

/// A connection of its own for blocking reads: on the shared multiplexed
/// connection an XREADGROUP BLOCK would hold up every other command.
pub struct JobReader {
    conn: Connection,
    queue: Queue,
    partition: Partition,
    consumer: String,
    block: Duration,
}

impl Queue {
    /// Creates the consumer group (and the stream) if missing. Starting at
    /// the stream's beginning: jobs queued before any worker existed count.
    pub async fn ensure_group(&self, partition: &Partition) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let created: Result<(), _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(partition.keys.jobs())
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
            Err(err) => Err(self.error(err)),
        }
    }

    /// A reader of `partition` for `consumer` that blocks up to `block`
    /// per read.
    pub fn reader(
        &self,
        partition: &Partition,
        consumer: &str,
        block: Duration,
    ) -> Result<JobReader, QueueError> {
        let conn = self
            .connector
            .dedicated(block + BLOCKING_MARGIN)
            .map_err(|e| self.error(e))?;
        Ok(JobReader {
            conn,
            queue: self.clone(),
            partition: partition.clone(),
            consumer: consumer.to_owned(),
            block,
        })
    }

    /// Takes over up to `count` jobs pending longer than `min_idle` on any
    /// consumer (a crashed or hung worker) for `consumer`.
    pub async fn claim_stale(
        &self,
        partition: &Partition,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Claimed>, QueueError> {
        let mut conn = self.conn.clone();
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(partition.keys.jobs())
            .arg(GROUP)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(reply
            .claimed
            .into_iter()
            .map(|entry| claimed(partition, entry))
            .collect())
    }

    /// Removes consumers of the group that hold no jobs and have been idle
    /// longer than `idle` (processes that are gone); returns their names.
    /// A consumer with pending jobs is kept until they are reclaimed.
    pub async fn prune_consumers(
        &self,
        partition: &Partition,
        idle: Duration,
    ) -> Result<Vec<String>, QueueError> {
        let mut conn = self.conn.clone();
        let info: StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(partition.keys.jobs())
            .arg(GROUP)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        let mut pruned = Vec::new();
        for consumer in info.consumers {
            if consumer.pending == 0 && consumer.idle as u128 > idle.as_millis() {
                let _: u64 = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(partition.keys.jobs())
                    .arg(GROUP)
                    .arg(&consumer.name)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.error(e))?;
                pruned.push(consumer.name);
            }
        }
        Ok(pruned)
    }

    /// The job waits in the retry schedule until `due_ms` (Unix ms).
    /// Returns how many of the route's jobs the schedule holds now, or
    /// `None` when another worker moved the job first.
    pub async fn reschedule(
        &self,
        entry: &Entry,
        job: &Job,
        due_ms: u64,
    ) -> Result<Option<u64>, QueueError> {
        let keys = &entry.partition.keys;
        let mut call = ScriptCall::new(&RESCHEDULE_SCRIPT);
        call.key(keys.jobs())
            .key(keys.retry())
            .key(keys.stat(Stat::Retrying))
            .arg(GROUP)
            .arg(&entry.id)
            .arg(due_ms)
            .arg(&job.route)
            .arg(job.encode());
        let (moved, scheduled): (u8, i64) = self.run_script(&call, Durability::Primary).await?;
        // The count is an estimate (it can drift below zero): at least 0.
        Ok((moved == 1).then(|| u64::try_from(scheduled).unwrap_or(0)))
    }

    /// The job becomes a dead letter, indexed by route, owner and source.
    /// Its only copy from then on, so confirmed by replicas (the move is one
    /// script: a failover that loses it leaves the job pending instead).
    pub async fn dead_letter(
        &self,
        entry: &Entry,
        dead: &NewDeadLetter<'_>,
    ) -> Result<bool, QueueError> {
        let status = dead.status.map(|s| s.to_string()).unwrap_or_default();
        let attempts = dead.attempts.to_string();
        let keys = &entry.partition.keys;
        let mut invocation = ScriptCall::new(&DEAD_LETTER_SCRIPT);
        invocation
            .key(keys.jobs())
            .key(keys.dead_letter(dead.id))
            .key(keys.dead_letters())
            .key(keys.dead_by("route", dead.route))
            .key(keys.dead_by("owner", dead.owner))
            .key(keys.dead_by("source", dead.source));
        let lag = self.lag_keys(&mut invocation, &entry.partition, [dead.route]);
        let order =
            OrderKeys::new(&entry.partition).arg(&mut invocation, dead.route, dead.ordering_key);
        invocation
            .arg(GROUP)
            .arg(&entry.id)
            .arg(dead.failed_ms)
            .arg(dead.id)
            .arg(lag.arg(dead.route, dead.id))
            .arg(order)
            .arg(if dead.blocks_key { "1" } else { "" });
        for (field, value) in [
            ("id", dead.id.as_bytes()),
            ("route", dead.route.as_bytes()),
            ("source", dead.source.as_bytes()),
            ("event_id", dead.event_id.as_bytes()),
            ("owner", dead.owner.as_bytes()),
            ("team", dead.team.as_bytes()),
            ("contact", dead.contact.as_bytes()),
            ("runbook", dead.runbook.as_bytes()),
            ("destination", dead.destination.as_bytes()),
            ("reason", dead.reason.as_str().as_bytes()),
            ("status", status.as_bytes()),
            ("attempts", attempts.as_bytes()),
        ] {
            invocation.arg(field).arg(value);
        }
        if let Some(key) = dead.ordering_key {
            invocation.arg("ordering_key").arg(key);
        }
        invocation
            .arg("failed_ms")
            .arg(dead.failed_ms)
            .arg("job")
            .arg(&dead.job[..]);
        let moved: u8 = self.run_script(&invocation, Durability::Replicated).await?;
        Ok(moved == 1)
    }

    /// Moves up to `limit` retries due by `now_ms` back to the stream;
    /// returns how many moved.
    pub async fn promote_due(
        &self,
        partition: &Partition,
        now_ms: u64,
        limit: usize,
    ) -> Result<usize, QueueError> {
        let keys = &partition.keys;
        let mut call = ScriptCall::new(&PROMOTE_DUE_SCRIPT);
        call.key(keys.retry())
            .key(keys.jobs())
            .key(keys.stat(Stat::Retrying))
            .arg(now_ms)
            .arg(limit);
        self.run_script(&call, Durability::Primary).await
    }
}

impl JobReader {
    /// Up to `count` new jobs for this consumer, waiting up to the block time.
    pub async fn read(&mut self, count: usize) -> Result<Vec<Claimed>, QueueError> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(self.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(self.partition.keys.jobs())
            .arg(">")
            .query_async(&mut self.conn)
            .await
            .map_err(|e| self.queue.error(e))?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|entry| claimed(&self.partition, entry))
            .collect())
    }
}

fn claimed(partition: &Partition, entry: StreamId) -> Claimed {
    let job = match entry.map.get("job") {
        Some(Value::BulkString(bytes)) => Job::decode(bytes),
        _ => Job::decode(&[]),
    };
    let released = entry.map.get("released").map(|place| match place {
        Value::BulkString(place) if place.contains(&b'-') => {
            String::from_utf8_lossy(place).into_owned()
        }
        // Released by a version that marked it `1` only: in line at its entry.
        _ => entry.id.clone(),
    });
    Claimed {
        released,
        entry: Entry {
            partition: partition.clone(),
            id: entry.id,
        },
        job,
    }
}

/// A delivered job to complete: its stream entry, route, id and ordering key.
struct Delivered {
    entry_id: String,
    route: String,
    job_id: String,
    ordering_key: Option<String>,
}

/// One partition's batching task of completions.
type CompleteBatcher = Batcher<Delivered, bool>;

/// Completes delivered jobs in batches (see [`super::batch`]), one batching
/// task per partition, started when that partition first completes a job
/// (so partitions of earlier layouts, found once Redis answers, batch too);
/// cheap to clone.
#[derive(Clone)]
pub struct Completer {
    batchers: Arc<Mutex<HashMap<String, Arc<CompleteBatcher>>>>,
    queue: Queue,
}

impl Queue {
    /// A completer; its batching tasks run on the runtime that completes.
    pub fn completer(&self) -> Completer {
        Completer {
            batchers: Default::default(),
            queue: self.clone(),
        }
    }

    async fn complete_batch(
        &self,
        partition: &Partition,
        batch: &[Delivered],
    ) -> Vec<Result<bool, QueueError>> {
        let keys = &partition.keys;
        let mut call = ScriptCall::new(&COMPLETE_SCRIPT);
        call.key(keys.jobs())
            .key(keys.stat(Stat::Delivered))
            .key(keys.stat(Stat::LastSuccess));
        let lag = self.lag_keys(&mut call, partition, batch.iter().map(|j| j.route.as_str()));
        let mut order = OrderKeys::new(partition);
        let ordering: Vec<String> = batch
            .iter()
            .map(|j| order.arg(&mut call, &j.route, j.ordering_key.as_deref()))
            .collect();
        call.arg(GROUP).arg(crate::clock::now_ms());
        for (job, order) in batch.iter().zip(ordering) {
            call.arg(&job.entry_id)
                .arg(&job.route)
                .arg(lag.arg(&job.route, &job.job_id))
                .arg(order);
        }
        self.invoke_batch(
            "complete",
            &call,
            Durability::Primary,
            batch.len(),
            completed,
        )
        .await
    }
}

/// Reads [`COMPLETE`]'s reply for `jobs` jobs: whether each was moved;
/// `None` when it does not answer for each of them.
fn completed(reply: redis::Value, jobs: usize) -> Option<Vec<bool>> {
    per_item(reply, jobs, true, |moved| match moved {
        redis::Value::Int(1) => Some(true),
        redis::Value::Int(0) => Some(false),
        _ => None,
    })
}

impl Completer {
    /// `job` was delivered: acknowledge and remove its entry, count it.
    /// False when another worker had already moved it on.
    pub async fn complete(&self, entry: &Entry, job: &Job) -> Result<bool, QueueError> {
        self.batcher(&entry.partition)
            .submit(Delivered {
                entry_id: entry.id.clone(),
                route: job.route.clone(),
                job_id: job.id.clone(),
                ordering_key: job.ordering_key.clone(),
            })
            .await
    }

    fn batcher(&self, partition: &Partition) -> Arc<CompleteBatcher> {
        let mut batchers = self.batchers.lock().unwrap_or_else(|e| e.into_inner());
        batchers
            .entry(partition.tag.clone())
            .or_insert_with(|| {
                let partition = partition.clone();
                Arc::new(Batcher::spawn(
                    self.queue.clone(),
                    |job: &Delivered| {
                        job.entry_id.len()
                            + job.route.len()
                            + job.job_id.len()
                            + job.ordering_key.as_ref().map_or(0, String::len)
                    },
                    move |queue: Queue, batch: Vec<Delivered>| {
                        let partition = partition.clone();
                        async move { queue.complete_batch(&partition, &batch).await }
                    },
                ))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    #[test]
    fn complete_replies_are_read_per_job_or_refused() {
        assert_eq!(completed(Value::Int(2), 2), Some(vec![true, true]));
        assert_eq!(completed(Value::Int(1), 2), None);
        let mixed = Value::Array(vec![Value::Int(1), Value::Int(0)]);
        assert_eq!(completed(mixed.clone(), 2), Some(vec![true, false]));
        assert_eq!(completed(mixed, 3), None);
        assert_eq!(completed(Value::Array(vec![Value::Int(2)]), 1), None);
        assert_eq!(completed(Value::Nil, 1), None);
    }
}
