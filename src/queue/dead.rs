//! Dead letters for ops: list (filtered, newest first, with a cursor that
//! stays put while new ones arrive), read one, replay one or many, delete
//! one, and the audit stream of those actions.
//!
//! Replay and delete are Lua scripts that act only while the dead letter
//! exists, and a replay removes it in the same step that re-enqueues the job:
//! two concurrent replays of one id enqueue it once.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::{AsyncCommands, Script};

use super::{Job, Queue, QueueError};

/// Fields of a dead letter shown in lists (everything but the job).
const SUMMARY_FIELDS: [&str; 13] = [
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
];

/// KEYS: dead:<id>, dead, dead-by-route, dead-by-owner, dead-by-source, jobs.
/// ARGV: id, job to enqueue.
const REPLAY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('XADD', KEYS[6], '*', 'job', ARGV[2])
redis.call('DEL', KEYS[1])
for i = 2, 5 do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 1
";

/// KEYS: dead:<id>, dead, dead-by-route, dead-by-owner, dead-by-source. ARGV: id.
const DELETE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1])
for i = 2, 5 do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 1
";

static REPLAY_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(REPLAY));
static DELETE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(DELETE));

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
    /// `replay`, `bulk_replay`, `delete`.
    pub action: &'a str,
    /// The id, or the filter as JSON.
    pub target: &'a str,
    /// How many dead letters it affected.
    pub count: usize,
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
    })
}

impl Queue {
    /// The index that narrows `filter` best.
    fn index_for(&self, filter: &DeadLetterFilter) -> String {
        if let Some(route) = &filter.route {
            self.keys.dead_by("route", route)
        } else if let Some(owner) = &filter.owner {
            self.keys.dead_by("owner", owner)
        } else if let Some(source) = &filter.source {
            self.keys.dead_by("source", source)
        } else {
            self.keys.dead_letters()
        }
    }

    /// Up to `limit` dead letters matching `filter`, newest first, after
    /// `cursor`; and the cursor of the next page when there may be one.
    pub async fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<(Vec<DeadLetterSummary>, Option<Cursor>), QueueError> {
        let mut conn = self.conn.clone();
        let index = self.index_for(filter);
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
                    .arg(self.keys.dead_letter(id))
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
        let mut conn = self.conn.clone();
        // The job is bytes (not UTF-8); the other fields are text.
        let (row, job): (Vec<Option<String>>, Option<Vec<u8>>) = redis::pipe()
            .cmd("HMGET")
            .arg(self.keys.dead_letter(id))
            .arg(&SUMMARY_FIELDS[..])
            .cmd("HGET")
            .arg(self.keys.dead_letter(id))
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
        let Some(letter) = self.get_dead_letter(id).await? else {
            return Ok(Replayed::NotFound);
        };
        let Some(mut job) = letter.job else {
            return Ok(Replayed::Undecodable);
        };
        job.attempt = 1;
        let mut conn = self.conn.clone();
        let replayed: u8 = REPLAY_SCRIPT
            .key(self.keys.dead_letter(id))
            .key(self.keys.dead_letters())
            .key(self.keys.dead_by("route", &letter.summary.route))
            .key(self.keys.dead_by("owner", &letter.summary.owner))
            .key(self.keys.dead_by("source", &letter.summary.source))
            .key(self.keys.jobs())
            .arg(id)
            .arg(job.encode())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(if replayed == 1 {
            Replayed::Yes
        } else {
            Replayed::NotFound
        })
    }

    /// Replays every dead letter `filter` selects whose route is one of
    /// `configured`; returns how many were replayed and how many skipped
    /// (their route is gone, so a replay would only fail again).
    pub async fn replay_matching(
        &self,
        filter: &DeadLetterFilter,
        configured: &[&str],
    ) -> Result<(usize, usize), QueueError> {
        let mut replayed = 0;
        let mut skipped = 0;
        let mut cursor = None;
        loop {
            let (page, next) = self.list_dead_letters(filter, 500, cursor.as_ref()).await?;
            for letter in &page {
                if !configured.contains(&letter.route.as_str()) {
                    skipped += 1;
                } else if self.replay_dead_letter(&letter.id).await? == Replayed::Yes {
                    replayed += 1;
                }
            }
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok((replayed, skipped)),
            }
        }
    }

    /// Deletes a dead letter; false when there was none.
    pub async fn delete_dead_letter(&self, id: &str) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let row: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.dead_letter(id))
            .arg(&SUMMARY_FIELDS[..])
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        let fields = summary_fields(row);
        let get = |name: &str| fields.get(name).cloned().unwrap_or_default();
        let deleted: u8 = DELETE_SCRIPT
            .key(self.keys.dead_letter(id))
            .key(self.keys.dead_letters())
            .key(self.keys.dead_by("route", &get("route")))
            .key(self.keys.dead_by("owner", &get("owner")))
            .key(self.keys.dead_by("source", &get("source")))
            .arg(id)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(deleted == 1)
    }

    /// How many dead letters each of `routes` has.
    pub async fn dead_letters_per_route(&self, routes: &[&str]) -> Result<Vec<u64>, QueueError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for route in routes {
            pipe.zcard(self.keys.dead_by("route", route));
        }
        pipe.query_async(&mut conn).await.map_err(|e| self.error(e))
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
            .arg(self.keys.alerted(route))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(interval.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(set.is_some())
    }

    /// How many dead letters are stored.
    pub async fn dead_letter_count(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        conn.zcard(self.keys.dead_letters())
            .await
            .map_err(|e| self.error(e))
    }

    /// Ids of dead letters that failed before `before_ms`, oldest first.
    pub async fn dead_letters_before(
        &self,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.dead_letters())
            .arg("-inf")
            .arg(format!("({before_ms}"))
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))
    }

    /// Appends to the audit stream.
    pub async fn audit(&self, entry: &AuditEntry<'_>) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("XADD")
            .arg(self.keys.audit())
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
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, QueueError> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = conn
            .xrevrange_count(self.keys.audit(), "+", "-", limit)
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
