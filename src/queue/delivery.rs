//! The queue as delivery workers see it: reading jobs through the consumer
//! group, taking over jobs of dead consumers, and the state moves of a job
//! (delivered, rescheduled, dead-lettered), each one Lua script so that a
//! crash between two commands can duplicate a delivery but never lose one.
//!
//! Every move starts with XACK and acts only when it acknowledged the entry:
//! when a slow worker's job was taken over by another, exactly one of the
//! two moves the job on.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{Script, Value};

use super::{Job, JobDecodeError, Queue, QueueError};

/// The consumer group every delivery worker belongs to.
pub const GROUP: &str = "delivery";

/// A job read from the stream, with the entry that carries it.
#[derive(Debug)]
pub struct Claimed {
    /// Stream entry id (needed to acknowledge it).
    pub entry_id: String,
    /// The job, or why it could not be read.
    pub job: Result<Job, JobDecodeError>,
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
}

/// KEYS: jobs, delivered counters. ARGV: entry id, route.
const COMPLETE: &str = r"
if redis.call('XACK', KEYS[1], 'delivery', ARGV[1]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[1])
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  return 1
end
return 0
";

/// KEYS: jobs, retry. ARGV: entry id, due (ms), job.
const RESCHEDULE: &str = r"
if redis.call('XACK', KEYS[1], 'delivery', ARGV[1]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
return 0
";

/// KEYS: jobs, dead:<id>, dead, dead:route:<r>, dead:owner:<o>, dead:source:<s>.
/// ARGV: entry id, failed (ms), id, then field/value pairs of the hash.
const DEAD_LETTER: &str = r"
if redis.call('XACK', KEYS[1], 'delivery', ARGV[1]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[2], unpack(ARGV, 4))
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[5], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[6], ARGV[2], ARGV[3])
  return 1
end
return 0
";

/// KEYS: retry, jobs. ARGV: now (ms), limit.
const PROMOTE_DUE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, job in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'job', job)
  redis.call('ZREM', KEYS[1], job)
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
    conn: ConnectionManager,
    queue: Queue,
    consumer: String,
    block: Duration,
}

impl Queue {
    /// Creates the consumer group (and the stream) if missing. Starting at
    /// the stream's beginning: jobs queued before any worker existed count.
    pub async fn ensure_group(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let created: Result<(), _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.jobs())
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

    /// A reader for `consumer` that blocks up to `block` per read.
    pub fn reader(&self, consumer: &str, block: Duration) -> Result<JobReader, QueueError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(super::CONNECT_TIMEOUT))
            .set_response_timeout(Some(block + BLOCKING_MARGIN))
            .set_number_of_retries(super::RECONNECT_RETRIES);
        let conn = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| self.error(e))?;
        Ok(JobReader {
            conn,
            queue: self.clone(),
            consumer: consumer.to_owned(),
            block,
        })
    }

    /// Takes over up to `count` jobs pending longer than `min_idle` on any
    /// consumer (a crashed or hung worker) for `consumer`.
    pub async fn claim_stale(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Claimed>, QueueError> {
        let mut conn = self.conn.clone();
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(self.keys.jobs())
            .arg(GROUP)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(reply.claimed.into_iter().map(claimed).collect())
    }

    /// The job was delivered: it leaves the stream and is counted.
    pub async fn complete(&self, entry_id: &str, route: &str) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let moved: u8 = COMPLETE_SCRIPT
            .key(self.keys.jobs())
            .key(self.keys.delivered())
            .arg(entry_id)
            .arg(route)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(moved == 1)
    }

    /// The job waits in the retry schedule until `due_ms` (Unix ms).
    pub async fn reschedule(
        &self,
        entry_id: &str,
        job: &Job,
        due_ms: u64,
    ) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let moved: u8 = RESCHEDULE_SCRIPT
            .key(self.keys.jobs())
            .key(self.keys.retry())
            .arg(entry_id)
            .arg(due_ms)
            .arg(job.encode())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(moved == 1)
    }

    /// The job becomes a dead letter, indexed by route, owner and source.
    pub async fn dead_letter(
        &self,
        entry_id: &str,
        dead: &NewDeadLetter<'_>,
    ) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let status = dead.status.map(|s| s.to_string()).unwrap_or_default();
        let attempts = dead.attempts.to_string();
        let mut invocation = DEAD_LETTER_SCRIPT.key(self.keys.jobs());
        invocation
            .key(self.keys.dead_letter(dead.id))
            .key(self.keys.dead_letters())
            .key(self.keys.dead_by("route", dead.route))
            .key(self.keys.dead_by("owner", dead.owner))
            .key(self.keys.dead_by("source", dead.source))
            .arg(entry_id)
            .arg(dead.failed_ms)
            .arg(dead.id);
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
        invocation
            .arg("failed_ms")
            .arg(dead.failed_ms)
            .arg("job")
            .arg(&dead.job[..]);
        let moved: u8 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(moved == 1)
    }

    /// Moves up to `limit` retries due by `now_ms` back to the stream;
    /// returns how many moved.
    pub async fn promote_due(&self, now_ms: u64, limit: usize) -> Result<usize, QueueError> {
        let mut conn = self.conn.clone();
        PROMOTE_DUE_SCRIPT
            .key(self.keys.retry())
            .key(self.keys.jobs())
            .arg(now_ms)
            .arg(limit)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))
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
            .arg(self.queue.keys.jobs())
            .arg(">")
            .query_async(&mut self.conn)
            .await
            .map_err(|e| self.queue.error(e))?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(claimed)
            .collect())
    }
}

fn claimed(entry: StreamId) -> Claimed {
    let job = match entry.map.get("job") {
        Some(Value::BulkString(bytes)) => Job::decode(bytes),
        _ => Job::decode(&[]),
    };
    Claimed {
        entry_id: entry.id,
        job,
    }
}
