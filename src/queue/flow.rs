//! Flow control in Redis: paused routes and the pace they drain at (in
//! partition 0), and per partition the jobs held for a route while it is
//! paused or draining.
//!
//! A held job leaves the jobs stream for `held:<route>` in one script with
//! its XACK, and goes back to the jobs stream marked `released` in one
//! script, when the drain lets it. The held set is ordered by the stream id
//! the job had: for a job held on its first read that is the order of its
//! ack, which the drain follows across partitions.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use super::delivery::GROUP;
use super::script::{Durability, ScriptCall};
use super::{Partition, Queue, QueueError, Stat};
use crate::config::Rate;

/// KEYS: jobs, held, held jobs, holding, reparked counters, and when the
/// route's lag is indexed its lag and held lag keys. ARGV: the consumer
/// group, route, whether the jobs are parked again after a drain put them
/// back (`1`: counted), then per job its entry id, job id, stored job and
/// place in line (see below). Returns how many were held (a job another
/// worker moved first is not).
///
/// A held job is a member of `held` scored by its place's milliseconds,
/// named `<its place's sequence number, 20 digits>:<job id>`, so the set
/// sorts in ack order whichever process held it when; its bytes are in
/// `held jobs`. Its place is the stream id it had when first held: its own
/// entry id then, and the one [`RELEASE`] carried when a drain had put it
/// back (a process that has not yet seen the resume, or a destination still
/// full, holds it again where it was in line).
const HOLD: &str = r"
local held = 0
for i = 4, #ARGV, 4 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    local place = ARGV[i + 3]
    local dash = string.find(place, '-', 1, true)
    local seq = string.sub(place, dash + 1)
    local member = string.rep('0', 20 - #seq) .. seq .. ':' .. ARGV[i + 1]
    redis.call('ZADD', KEYS[2], string.sub(place, 1, dash - 1), member)
    redis.call('HSET', KEYS[3], member, ARGV[i + 2])
    if KEYS[6] then
      local since = redis.call('ZSCORE', KEYS[6], ARGV[i + 1])
      if since then
        redis.call('ZREM', KEYS[6], ARGV[i + 1])
        redis.call('ZADD', KEYS[7], since, ARGV[i + 1])
      end
    end
    held = held + 1
  end
end
if held > 0 then
  redis.call('SADD', KEYS[4], ARGV[2])
  if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[5], ARGV[2], held) end
end
return held
";

/// KEYS: held, held jobs, jobs, holding, and when the route's lag is
/// indexed its lag and held lag keys. ARGV: route, then held members.
/// Moves each back to the jobs stream, marked `released` with its place in
/// line (the stream id it was held under); returns how many moved. The
/// route leaves `holding` with its last held job.
const RELEASE: &str = r"
local released = 0
for i = 2, #ARGV do
  local ms = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if ms then
    redis.call('ZREM', KEYS[1], ARGV[i])
    local job = redis.call('HGET', KEYS[2], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    if job then
      local place = ms .. '-' .. tonumber(string.sub(ARGV[i], 1, 20))
      redis.call('XADD', KEYS[3], '*', 'job', job, 'released', place)
      released = released + 1
    end
    if KEYS[5] then
      local job_id = string.sub(ARGV[i], string.find(ARGV[i], ':', 1, true) + 1)
      local since = redis.call('ZSCORE', KEYS[6], job_id)
      if since then
        redis.call('ZREM', KEYS[6], job_id)
        redis.call('ZADD', KEYS[5], since, job_id)
      end
    end
  end
end
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[4], ARGV[1]) end
return released
";

/// KEYS: paused, drain rates. ARGV: route, rate (empty: none). Returns the
/// pause it ended, or nil when the route was not paused.
const RESUME: &str = r"
local pause = redis.call('HGET', KEYS[1], ARGV[1])
if not pause then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
return pause
";

/// KEYS: the lease. ARGV: holder, ttl (ms). 1 when `holder` has it now.
const LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
";

static HOLD_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(HOLD));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));
static RESUME_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RESUME));
static LEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LEASE));

/// Who paused a route, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// When, Unix ms.
    pub since_ms: u64,
    /// The admin token's name.
    pub by: String,
    /// Why, as given.
    pub reason: String,
}

/// The position of a job in ack order: its stream id when it was held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AckOrder(u64, u64);

/// A job to hold: where it sits in the stream, its id and stored form, and
/// its place in line.
#[derive(Debug, Clone)]
pub struct ToHold<'a> {
    /// Its stream entry id.
    pub entry_id: &'a str,
    /// The stream id that orders it among held jobs: its entry id, or the
    /// place a drain put it back with (see [`HOLD`]).
    pub place: &'a str,
    /// Its job id.
    pub job_id: &'a str,
    /// The stored job.
    pub job: Vec<u8>,
}

/// A held job, as the drain sees it (without its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldJob {
    /// Its member of the held set.
    pub member: String,
    /// Where it stands in ack order.
    pub at: AckOrder,
}

impl HeldJob {
    /// The held job `member` scored `ms` (see [`HOLD`]).
    fn new(member: String, ms: f64) -> Self {
        let seq = member
            .split_once(':')
            .and_then(|(seq, _)| seq.parse().ok())
            .unwrap_or(0);
        Self {
            at: AckOrder(ms as u64, seq),
            member,
        }
    }
}

/// The flow state every process follows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowState {
    /// Paused routes.
    pub paused: HashMap<String, Pause>,
    /// Resumed routes' drain pace, while they drain.
    pub drain_rates: HashMap<String, Rate>,
}

impl Queue {
    /// Pauses `route`; `Err(existing)` when it already is.
    pub async fn pause_route(
        &self,
        route: &str,
        pause: &Pause,
    ) -> Result<Result<(), Pause>, QueueError> {
        let keys = &self.home().keys;
        let value = serde_json::to_string(pause).unwrap_or_default();
        let mut conn = self.conn.clone();
        let (set, existing): (bool, Option<String>) = redis::pipe()
            .atomic()
            .hset_nx(keys.paused(), route, value)
            .hget(keys.paused(), route)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        if set {
            return Ok(Ok(()));
        }
        Ok(Err(existing
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_else(|| pause.clone())))
    }

    /// Ends `route`'s pause; its held jobs drain at `rate` (if given). The
    /// pause it ended, or `None` when it was not paused.
    pub async fn resume_route(
        &self,
        route: &str,
        rate: Option<Rate>,
    ) -> Result<Option<Pause>, QueueError> {
        let keys = &self.home().keys;
        let mut call = ScriptCall::new(&RESUME_SCRIPT);
        call.key(keys.paused())
            .key(keys.drain_rates())
            .arg(route)
            .arg(rate.map(|r| r.to_string()).unwrap_or_default());
        let ended: Option<String> = self.run_script(&call, Durability::Primary).await?;
        Ok(ended.map(|v| {
            serde_json::from_str(&v).unwrap_or_else(|_| Pause {
                since_ms: 0,
                by: String::new(),
                reason: v,
            })
        }))
    }

    /// Which routes are paused, and the pace of those draining.
    pub async fn flow_state(&self) -> Result<FlowState, QueueError> {
        let keys = &self.home().keys;
        let mut conn = self.conn.clone();
        let (paused, rates): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
            .hgetall(keys.paused())
            .hgetall(keys.drain_rates())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(FlowState {
            paused: paused
                .into_iter()
                .filter_map(|(route, v)| Some((route, serde_json::from_str(&v).ok()?)))
                .collect(),
            drain_rates: rates
                .into_iter()
                .filter_map(|(route, v)| Some((route, v.parse().ok()?)))
                .collect(),
        })
    }

    /// A drained route no longer has a drain pace.
    pub async fn end_drain(&self, route: &str) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let _: u32 = conn
            .hdel(self.home().keys.drain_rates(), route)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Moves `jobs` of `route` from `partition`'s stream to its held jobs;
    /// how many moved. `reparked`: a drain had put them back (counted, see
    /// [`Stat::Reparked`]). Each held job is its only copy, so the move is
    /// confirmed like a dead letter.
    pub async fn hold(
        &self,
        partition: &Partition,
        route: &str,
        jobs: &[ToHold<'_>],
        reparked: bool,
    ) -> Result<usize, QueueError> {
        let keys = &partition.keys;
        let mut call = ScriptCall::new(&HOLD_SCRIPT);
        call.key(keys.jobs())
            .key(keys.held(route))
            .key(keys.held_jobs(route))
            .key(keys.holding())
            .key(keys.stat(Stat::Reparked));
        self.held_lag_keys(&mut call, partition, route);
        call.arg(GROUP)
            .arg(route)
            .arg(if reparked { "1" } else { "0" });
        for job in jobs {
            call.arg(job.entry_id)
                .arg(job.job_id)
                .arg(&job.job[..])
                .arg(job.place);
        }
        self.run_script(&call, Durability::Replicated).await
    }

    /// The `count` first of `route`'s held jobs in `partition`, in ack order.
    pub async fn held_first(
        &self,
        partition: &Partition,
        route: &str,
        count: usize,
    ) -> Result<Vec<HeldJob>, QueueError> {
        let mut conn = self.conn.clone();
        let found: Vec<(String, f64)> = conn
            .zrange_withscores(partition.keys.held(route), 0, count as isize - 1)
            .await
            .map_err(|e| self.error(e))?;
        Ok(found
            .into_iter()
            .map(|(member, ms)| HeldJob::new(member, ms))
            .collect())
    }

    /// Moves the held jobs `members` of `route` in `partition` back to its
    /// stream, in that order; how many moved (one another drain released
    /// first is not).
    pub async fn release(
        &self,
        partition: &Partition,
        route: &str,
        members: &[&str],
    ) -> Result<usize, QueueError> {
        let keys = &partition.keys;
        let mut call = ScriptCall::new(&RELEASE_SCRIPT);
        call.key(keys.held(route))
            .key(keys.held_jobs(route))
            .key(keys.jobs())
            .key(keys.holding());
        self.held_lag_keys(&mut call, partition, route);
        call.arg(route);
        for member in members {
            call.arg(*member);
        }
        self.run_script(&call, Durability::Replicated).await
    }

    /// Routes with held jobs in any partition.
    pub async fn holding_routes(&self) -> Result<Vec<String>, QueueError> {
        let mut routes = Vec::new();
        for partition in self.partitions().iter() {
            let mut conn = self.conn.clone();
            let found: Vec<String> = conn
                .smembers(partition.keys.holding())
                .await
                .map_err(|e| self.error(e))?;
            for route in found {
                if !routes.contains(&route) {
                    routes.push(route);
                }
            }
        }
        Ok(routes)
    }

    /// Held jobs of each of `routes`, over every partition.
    pub async fn held_counts(&self, routes: &[&str]) -> Result<Vec<u64>, QueueError> {
        let mut counts = vec![0; routes.len()];
        if routes.is_empty() {
            return Ok(counts);
        }
        for partition in self.partitions().iter() {
            let mut pipe = redis::pipe();
            for route in routes {
                pipe.zcard(partition.keys.held(route));
            }
            let mut conn = self.conn.clone();
            let found: Vec<u64> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
            for (count, n) in counts.iter_mut().zip(found) {
                *count += n;
            }
        }
        Ok(counts)
    }

    /// Takes or renews the lease on `task` for `holder`, for `ttl`; true
    /// while `holder` has it.
    pub async fn lease(&self, task: &str, holder: &str, ttl: Duration) -> Result<bool, QueueError> {
        let mut call = ScriptCall::new(&LEASE_SCRIPT);
        call.key(self.home().keys.lease(task))
            .arg(holder)
            .arg(ttl.as_millis() as u64);
        let held: u8 = self.run_script(&call, Durability::Primary).await?;
        Ok(held == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_jobs_sort_by_ack_order() {
        let member = |seq: &str| format!("{seq:0>20}:01JOB");
        let early = HeldJob::new(member("9"), 1_700_000_000_000.0);
        let later = HeldJob::new(member("10"), 1_700_000_000_000.0);
        let next_ms = HeldJob::new(member("0"), 1_700_000_000_001.0);
        assert!(early.at < later.at && later.at < next_ms.at);
        assert!(early.member < later.member, "the set's own order agrees");
        assert_eq!(HeldJob::new("junk".into(), 5.0).at, AckOrder(5, 0));
    }
}
