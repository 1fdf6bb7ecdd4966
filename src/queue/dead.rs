//! Dead letters for ops: list (filtered, newest first, with a cursor that
//! stays put while new ones arrive), read one, replay one or many, delete
//! one, and the audit stream of those actions.
//!
//! Replay and delete are Lua scripts that act only while the dead letter
//! exists, and a replay removes it in the same step that re-enqueues the job:
//! two concurrent replays of one id enqueue it once. A dead letter lives in
//! its event's partition and is replayed into that partition's stream;
//! lists and counts merge every partition. The audit stream is partition
//! 0's: admin actions are few, and one stream keeps their order exact.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::{AsyncCommands, Script};

use super::lag::lag_entry_lua;
use super::order::{OrderKeys, ord_lua};
use super::script::{Durability, ScriptCall};
use super::{Job, Partition, Queue, QueueError};

/// Fields of a dead letter shown in lists (everything but the job).
const SUMMARY_FIELDS: [&str; 14] = [
    "id",
    "route",
    "source",
    "event_id",
    "owner",
    "team",
    "contact",
    "runbook",
    "destination",
    "reason",
    "status",
    "attempts",
    "failed_ms",
    "ordering_key",
];

/// KEYS: dead:<id>, dead, dead-by-route, dead-by-owner, dead-by-source
/// (see [`index_keys`]), jobs, then the route's lag key when indexed and the
/// lines of an ordered job's key. ARGV: id (the job id), job to enqueue, now
/// (ms), lag entry (see [`super::lag`]), ordering entry (see
/// [`super::order`]). An ordered job goes to the back of its key's line
/// (the head when the key has none); the dead letter that blocked its key
/// lets the key's next job go.
const REPLAY: &str = concat!(
    lag_entry_lua!(),
    ord_lua!(),
    r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local lines, line, field = ord_entry(ARGV[5])
local state = lines and redis.call('HGET', lines, field)
if not state then
  if lines then redis.call('HSET', lines, field, '1') end
  redis.call('XADD', KEYS[6], '*', 'job', ARGV[2])
else
  redis.call('RPUSH', line, ARGV[2])
  if state == 'b:' .. ARGV[1] then ord_next(lines, line, field, KEYS[6], true) end
end
local lag, job_id = lag_entry(ARGV[4])
if lag then redis.call('ZADD', lag, ARGV[3], job_id) end
redis.call('DEL', KEYS[1])
for i = 2, 5 do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 1
"
);

/// KEYS: dead:<id>, dead, dead-by-route, dead-by-owner, dead-by-source
/// (see [`index_keys`]), jobs, then the lines of an ordered job's key.
/// ARGV: id, ordering entry (see [`super::order`]): the dead letter that
/// blocked its key lets the key's next job go.
const DELETE: &str = concat!(
    ord_lua!(),
    r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1])
for i = 2, 5 do redis.call('ZREM', KEYS[i], ARGV[1]) end
local lines, line, field = ord_entry(ARGV[2])
if lines and redis.call('HGET', lines, field) == 'b:' .. ARGV[1] then
  ord_next(lines, line, field, KEYS[6], true)
end
return 1
"
);

static REPLAY_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(REPLAY));
static DELETE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(DELETE));

/// Adds the indexes a dead letter is in: every dead letter, its route's,
/// owner's and source's.
fn index_keys(call: &mut ScriptCall, partition: &Partition, letter: &DeadLetterSummary) {
    let keys = &partition.keys;
    call.key(keys.dead_letters())
        .key(keys.dead_by("route", &letter.route))
        .key(keys.dead_by("owner", &letter.owner))
        .key(keys.dead_by("source", &letter.source));
}

/// Audit entries kept at most (oldest trimmed first).
const AUDIT_MAX_LEN: usize = 100_000;

/// Which dead letters an operation concerns; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Route name.
    pub route: Option<String>,
    /// Owner id.
    pub owner: Option<String>,
    /// Source name.
    pub source: Option<String>,
    /// Reason (`exhausted`, `rejected`, …).
    pub reason: Option<String>,
    /// Failed at or after, Unix ms.
    pub since_ms: Option<u64>,
    /// Failed at or before, Unix ms.
    pub until_ms: Option<u64>,
}

impl DeadLetterFilter {
    /// True when the filter selects by route, owner or source, the only safe
    /// basis for a bulk replay.
    pub fn is_scoped(&self) -> bool {
        self.route.is_some() || self.owner.is_some() || self.source.is_some()
    }

    fn matches(&self, letter: &DeadLetterSummary) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.route, &letter.route)
            && eq(&self.owner, &letter.owner)
            && eq(&self.source, &letter.source)
            && eq(&self.reason, &letter.reason)
    }
}

/// Where the next page of a listing starts: after (failed_ms, id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    failed_ms: u64,
    id: String,
}

impl Cursor {
    /// The opaque text form handed to clients.
    pub fn encode(&self) -> String {
        format!("{}-{}", self.failed_ms, self.id)
    }

    /// Reads a cursor a client sent back.
    pub fn decode(text: &str) -> Option<Self> {
        let (ms, id) = text.split_once('-')?;
        Some(Self {
            failed_ms: ms.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

/// A dead letter without its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSummary {
    /// Dead-letter id (the job id).
    pub id: String,
    /// Route name.
    pub route: String,
    /// Source name.
    pub source: String,
    /// Event id.
    pub event_id: String,
    /// Owner id.
    pub owner: String,
    /// Owner's team at failure time.
    pub team: String,
    /// Owner's contact at failure time.
    pub contact: String,
    /// Owner's runbook at failure time.
    pub runbook: String,
    /// Destination URL at failure time.
    pub destination: String,
    /// Why delivery gave up.
    pub reason: String,
    /// Last status, if the destination answered.
    pub status: Option<u16>,
    /// Attempts made, every life included.
    pub attempts: u32,
    /// When, Unix ms.
    pub failed_ms: u64,
    /// Its job's ordering key, on an ordered route.
    pub ordering_key: Option<String>,
}

/// A dead letter with its job.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The summary fields.
    pub summary: DeadLetterSummary,
    /// The job (original request and attempts); `None` when it was stored
    /// undecodable.
    pub job: Option<Job>,
}

/// What a replay found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed {
    /// The job is back in the stream at attempt 1.
    Yes,
    /// No such dead letter (never, or already replayed or deleted).
    NotFound,
    /// The stored job cannot be decoded, so it cannot be delivered.
    Undecodable,
}

/// One admin action, for the audit stream.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    /// The admin token's name.
    pub token: &'a str,
    /// `replay`, `bulk_replay`, `delete`, `expire`, `pause`, `resume`.
    pub action: &'a str,
    /// The id, the filter as JSON, or the route.
    pub target: &'a str,
    /// How many dead letters (or held jobs) it affected.
    pub count: usize,
    /// Why, when the caller said (a pause's reason); empty otherwise.
    pub reason: &'a str,
    /// When, Unix ms.
    pub at_ms: u64,
}

/// A stored audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When, Unix ms.
    pub at_ms: u64,
    /// Token name.
    pub token: String,
    /// Action.
    pub action: String,
    /// Id or filter.
    pub target: String,
    /// Affected count.
    pub count: usize,
    /// Why, or empty.
    pub reason: String,
}

/// Names the values of an `HMGET` of [`SUMMARY_FIELDS`].
fn summary_fields(row: Vec<Option<String>>) -> HashMap<String, String> {
    SUMMARY_FIELDS
        .iter()
        .zip(row)
        .filter_map(|(name, value)| Some(((*name).to_owned(), value?)))
        .collect()
}

fn summary(fields: &HashMap<String, String>) -> Option<DeadLetterSummary> {
    let get = |name: &str| fields.get(name).cloned().unwrap_or_default();
    let id = fields.get("id")?.clone();
    Some(DeadLetterSummary {
        id,
        route: get("route"),
        source: get("source"),
        event_id: get("event_id"),
        owner: get("owner"),
        team: get("team"),
        contact: get("contact"),
        runbook: get("runbook"),
        destination: get("destination"),
        reason: get("reason"),
        status: get("status").parse().ok(),
        attempts: get("attempts").parse().unwrap_or_default(),
        failed_ms: get("failed_ms").parse().unwrap_or_default(),
        ordering_key: fields.get("ordering_key").cloned(),
    })
}

/// The index of `partition` that narrows `filter` best.
fn index_for(partition: &Partition, filter: &DeadLetterFilter) -> String {
    let keys = &partition.keys;
    if let Some(route) = &filter.route {
        keys.dead_by("route", route)
    } else if let Some(owner) = &filter.owner {
        keys.dead_by("owner", owner)
    } else if let Some(source) = &filter.source {
        keys.dead_by("source", source)
    } else {
        keys.dead_letters()
    }
}

/// Newest first: by failure time, then id, both descending (the order
/// `ZREVRANGEBYSCORE` gives within one partition).
fn newest_first(a: &DeadLetterSummary, b: &DeadLetterSummary) -> std::cmp::Ordering {
    (b.failed_ms, &b.id).cmp(&(a.failed_ms, &a.id))
}

impl Queue {
    /// Up to `limit` dead letters matching `filter`, newest first, after
    /// `cursor`; and the cursor of the next page when there may be one.
    /// Each partition answers its own newest `limit`, and the merge keeps
    /// the newest of them all: the cursor (a failure time and an id) means
    /// the same place in every partition, so it stays valid while new dead
    /// letters arrive anywhere.
    pub async fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<(Vec<DeadLetterSummary>, Option<Cursor>), QueueError> {
        let mut found = Vec::new();
        let mut more = false;
        for partition in self.partitions().iter() {
            let (page, next) = self.list_in(partition, filter, limit, cursor).await?;
            found.extend(page);
            more |= next.is_some();
        }
        found.sort_by(newest_first);
        more |= found.len() > limit;
        found.truncate(limit);
        let next = match found.last() {
            Some(last) if more => Some(Cursor {
                failed_ms: last.failed_ms,
                id: last.id.clone(),
            }),
            _ => None,
        };
        Ok((found, next))
    }

    /// [`Self::list_dead_letters`] in one partition.
    async fn list_in(
        &self,
        partition: &Partition,
        filter: &DeadLetterFilter,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<(Vec<DeadLetterSummary>, Option<Cursor>), QueueError> {
        let mut conn = self.conn.clone();
        let index = index_for(partition, filter);
        let min = filter
            .since_ms
            .map_or("-inf".to_owned(), |ms| ms.to_string());
        let mut max = filter.until_ms.unwrap_or(u64::MAX);
        let mut after = None;
        if let Some(cursor) = cursor {
            max = max.min(cursor.failed_ms);
            after = Some(cursor);
        }
        let mut found = Vec::new();
        let mut offset = 0usize;
        let page = (limit * 2).clamp(16, 1000);
        loop {
            let batch: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(&index)
                .arg(max)
                .arg(&min)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(offset)
                .arg(page)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
            offset += batch.len();
            let exhausted = batch.len() < page;
            // Members with equal scores come in reverse lexical order.
            let ids: Vec<String> = batch
                .into_iter()
                .filter(|(id, score)| {
                    after.is_none_or(|c| (*score as u64) < c.failed_ms || *id < c.id)
                })
                .map(|(id, _)| id)
                .collect();
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HMGET")
                    .arg(partition.keys.dead_letter(id))
                    .arg(&SUMMARY_FIELDS[..]);
            }
            let rows: Vec<Vec<Option<String>>> = if ids.is_empty() {
                Vec::new()
            } else {
                pipe.query_async(&mut conn)
                    .await
                    .map_err(|e| self.error(e))?
            };
            for row in rows {
                let Some(letter) = summary(&summary_fields(row)) else {
                    continue;
                };
                if filter.matches(&letter) {
                    found.push(letter);
                    if found.len() == limit {
                        let last = &found[found.len() - 1];
                        let next = Cursor {
                            failed_ms: last.failed_ms,
                            id: last.id.clone(),
                        };
                        return Ok((found, Some(next)));
                    }
                }
            }
            if exhausted {
                return Ok((found, None));
            }
        }
    }

    /// One dead letter, job included.
    pub async fn get_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, QueueError> {
        Ok(self.locate(id).await?.map(|(_, letter)| letter))
    }

    /// The dead letter `id` and the partition that holds it. A dead letter
    /// is in its event's partition, which its id does not tell, so each
    /// partition is asked in turn.
    async fn locate(&self, id: &str) -> Result<Option<(Partition, DeadLetter)>, QueueError> {
        for partition in self.partitions().iter() {
            if let Some(letter) = self.get_in(partition, id).await? {
                return Ok(Some((partition.clone(), letter)));
            }
        }
        Ok(None)
    }

    async fn get_in(
        &self,
        partition: &Partition,
        id: &str,
    ) -> Result<Option<DeadLetter>, QueueError> {
        let mut conn = self.conn.clone();
        let key = partition.keys.dead_letter(id);
        // The job is bytes (not UTF-8); the other fields are text.
        let (row, job): (Vec<Option<String>>, Option<Vec<u8>>) = redis::pipe()
            .cmd("HMGET")
            .arg(&key)
            .arg(&SUMMARY_FIELDS[..])
            .cmd("HGET")
            .arg(&key)
            .arg("job")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        let fields = summary_fields(row);
        let Some(summary) = summary(&fields) else {
            return Ok(None);
        };
        let job = job.and_then(|bytes| Job::decode(&bytes).ok());
        Ok(Some(DeadLetter { summary, job }))
    }

    /// Puts a dead letter's job back on the stream at attempt 1 (its route's
    /// current destination and policy apply), removing the dead letter in
    /// the same step. The history of earlier attempts stays with the job.
    pub async fn replay_dead_letter(&self, id: &str) -> Result<Replayed, QueueError> {
        match self.locate(id).await? {
            Some((partition, letter)) => self.replay_in(&partition, letter).await,
            None => Ok(Replayed::NotFound),
        }
    }

    /// Replays `letter` within `partition`, where it is.
    async fn replay_in(
        &self,
        partition: &Partition,
        letter: DeadLetter,
    ) -> Result<Replayed, QueueError> {
        let Some(mut job) = letter.job else {
            return Ok(Replayed::Undecodable);
        };
        job.attempt = 1;
        let summary = &letter.summary;
        let mut call = ScriptCall::new(&REPLAY_SCRIPT);
        call.key(partition.keys.dead_letter(&summary.id));
        index_keys(&mut call, partition, summary);
        call.key(partition.keys.jobs());
        let lag = self.lag_keys(&mut call, partition, [job.route.as_str()]);
        let order =
            OrderKeys::new(partition).arg(&mut call, &job.route, job.ordering_key.as_deref());
        call.arg(&summary.id)
            .arg(job.encode())
            .arg(crate::clock::now_ms())
            .arg(lag.arg(&job.route, &summary.id))
            .arg(order);
        let replayed: u8 = self.run_script(&call, Durability::Primary).await?;
        Ok(if replayed == 1 {
            Replayed::Yes
        } else {
            Replayed::NotFound
        })
    }

    /// Every dead letter `filter` selects whose route is one of
    /// `configured`, as (partition tag, id), newest first per partition; and
    /// how many it left out because their route is gone (a replay would only
    /// fail again).
    pub async fn matching_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        configured: &[&str],
    ) -> Result<(Vec<(String, String)>, usize), QueueError> {
        let mut found = Vec::new();
        let mut skipped = 0;
        for partition in self.partitions().iter() {
            let mut cursor = None;
            loop {
                let (page, next) = self
                    .list_in(partition, filter, 500, cursor.as_ref())
                    .await?;
                for letter in page {
                    if configured.contains(&letter.route.as_str()) {
                        found.push((partition.tag.clone(), letter.id));
                    } else {
                        skipped += 1;
                    }
                }
                match next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        Ok((found, skipped))
    }

    /// Replays dead letter `id` of the partition tagged `tag` (as
    /// [`Self::matching_dead_letters`] names it).
    pub async fn replay_dead_letter_in(&self, tag: &str, id: &str) -> Result<Replayed, QueueError> {
        let partitions = self.partitions();
        let Some(partition) = partitions.iter().find(|p| p.tag == tag) else {
            return Ok(Replayed::NotFound);
        };
        match self.get_in(partition, id).await? {
            Some(letter) => self.replay_in(partition, letter).await,
            None => Ok(Replayed::NotFound),
        }
    }

    /// Deletes a dead letter; false when there was none.
    pub async fn delete_dead_letter(&self, id: &str) -> Result<bool, QueueError> {
        let Some((partition, letter)) = self.locate(id).await? else {
            return Ok(false);
        };
        let mut call = ScriptCall::new(&DELETE_SCRIPT);
        call.key(partition.keys.dead_letter(id));
        index_keys(&mut call, &partition, &letter.summary);
        call.key(partition.keys.jobs());
        let order = OrderKeys::new(&partition).arg(
            &mut call,
            &letter.summary.route,
            letter.summary.ordering_key.as_deref(),
        );
        call.arg(id).arg(order);
        let deleted: u8 = self.run_script(&call, Durability::Primary).await?;
        Ok(deleted == 1)
    }

    /// How many dead letters each of `routes` has.
    pub async fn dead_letters_per_route(&self, routes: &[&str]) -> Result<Vec<u64>, QueueError> {
        let mut totals = vec![0; routes.len()];
        for partition in self.partitions().iter() {
            let mut conn = self.conn.clone();
            let mut pipe = redis::pipe();
            for route in routes {
                pipe.zcard(partition.keys.dead_by("route", route));
            }
            let counts: Vec<u64> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
            for (total, count) in totals.iter_mut().zip(counts) {
                *total += count;
            }
        }
        Ok(totals)
    }

    /// True when no alert for `route` was sent within `interval` (and marks
    /// one as sent now), across every gateway process.
    pub async fn claim_alert_slot(
        &self,
        route: &str,
        interval: std::time::Duration,
    ) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.home().keys.alerted(route))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(interval.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(set.is_some())
    }

    /// How many dead letters are stored, in every partition.
    pub async fn dead_letter_count(&self) -> Result<u64, QueueError> {
        let mut total = 0;
        for partition in self.partitions().iter() {
            let mut conn = self.conn.clone();
            let count: u64 = conn
                .zcard(partition.keys.dead_letters())
                .await
                .map_err(|e| self.error(e))?;
            total += count;
        }
        Ok(total)
    }

    /// Ids of up to `limit` dead letters that failed before `before_ms`,
    /// oldest first (per partition).
    pub async fn dead_letters_before(
        &self,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, QueueError> {
        let mut ids = Vec::new();
        for partition in self.partitions().iter() {
            if ids.len() >= limit {
                break;
            }
            let mut conn = self.conn.clone();
            let found: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(partition.keys.dead_letters())
                .arg("-inf")
                .arg(format!("({before_ms}"))
                .arg("LIMIT")
                .arg(0)
                .arg(limit - ids.len())
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
            ids.extend(found);
        }
        Ok(ids)
    }

    /// Appends to the audit stream.
    pub async fn audit(&self, entry: &AuditEntry<'_>) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("XADD")
            .arg(self.home().keys.audit())
            .arg("MAXLEN")
            .arg("~")
            .arg(AUDIT_MAX_LEN)
            .arg("*")
            .arg("at_ms")
            .arg(entry.at_ms)
            .arg("token")
            .arg(entry.token)
            .arg("action")
            .arg(entry.action)
            .arg("target")
            .arg(entry.target)
            .arg("count")
            .arg(entry.count)
            .arg("reason")
            .arg(entry.reason)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, QueueError> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = conn
            .xrevrange_count(self.home().keys.audit(), "+", "-", limit)
            .await
            .map_err(|e| self.error(e))?;
        Ok(reply
            .ids
            .iter()
            .map(|entry| {
                let text = |name: &str| entry.get::<String>(name).unwrap_or_default();
                AuditRecord {
                    at_ms: text("at_ms").parse().unwrap_or_default(),
                    token: text("token"),
                    action: text("action"),
                    target: text("target"),
                    count: text("count").parse().unwrap_or_default(),
                    reason: text("reason"),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = Cursor {
            failed_ms: 1_700_000_000_123,
            id: "01JABC-x".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::decode("nope"), None);
        assert_eq!(Cursor::decode("12x-id"), None);
    }
}
