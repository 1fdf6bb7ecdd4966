//! Replay jobs in Redis (partition 0): a bulk replay's record (who, what
//! filter, what pace, how far it got) and the list of dead letters it
//! replays, fixed when it starts. Whichever process runs the job moves a
//! cursor through the list and counts each outcome as it goes, so a job
//! that loses its process is taken on by another from where it stopped;
//! replaying a dead letter removes it, so nothing is replayed twice.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;

use super::{Queue, QueueError};

/// A finished job's record is kept this long (and the newest
/// [`KEPT_REPLAYS`] are listed).
const KEPT_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Replay jobs listed at most.
const KEPT_REPLAYS: isize = 1000;
/// Items written per command when a job starts.
const ITEMS_PER_PUSH: usize = 1000;

/// Where a replay job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayState {
    /// Replaying.
    Running,
    /// Every item handled.
    Done,
    /// Stopped on request; what was not replayed stays a dead letter.
    Cancelled,
}

impl ReplayState {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayState::Running => "running",
            ReplayState::Done => "done",
            ReplayState::Cancelled => "cancelled",
        }
    }
}

/// What one item of a replay job came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Put back on the stream.
    Replayed,
    /// No longer a dead letter (replayed or deleted since it was matched).
    Gone,
    /// Its stored job cannot be decoded; it stays a dead letter.
    Undecodable,
}

impl ReplayOutcome {
    fn field(self) -> &'static str {
        match self {
            ReplayOutcome::Replayed => "replayed",
            ReplayOutcome::Gone => "gone",
            ReplayOutcome::Undecodable => "undecodable",
        }
    }
}

/// A replay job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRecord {
    /// Its id.
    pub id: String,
    /// `running`, `done` or `cancelled`.
    pub state: String,
    /// Dead letters it set out to replay.
    pub matched: u64,
    /// Replayed so far.
    pub replayed: u64,
    /// Gone before their turn.
    pub gone: u64,
    /// Left as dead letters: undecodable.
    pub undecodable: u64,
    /// Left out from the start: their route is not configured.
    pub skipped: u64,
    /// The admin token's name.
    pub by: String,
    /// The filter, as JSON.
    pub filter: String,
    /// Its pace (`"20/s"`), or empty.
    pub rate: String,
    /// When it started and ended, Unix ms.
    pub started_ms: u64,
    /// 0 while running.
    pub ended_ms: u64,
    /// Items handled: the next one's index.
    pub next: u64,
    /// A cancel was asked for.
    pub cancel: bool,
}

impl ReplayRecord {
    fn from_fields(id: &str, fields: &HashMap<String, String>) -> Option<Self> {
        let text = |name: &str| fields.get(name).cloned().unwrap_or_default();
        let number = |name: &str| fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        fields.get("state")?;
        Some(Self {
            id: id.to_owned(),
            state: text("state"),
            matched: number("matched"),
            replayed: number("replayed"),
            gone: number("gone"),
            undecodable: number("undecodable"),
            skipped: number("skipped"),
            by: text("by"),
            filter: text("filter"),
            rate: text("rate"),
            started_ms: number("started_ms"),
            ended_ms: number("ended_ms"),
            next: number("next"),
            cancel: fields.contains_key("cancel"),
        })
    }
}

/// A replay job to start.
#[derive(Debug, Clone)]
pub struct NewReplay<'a> {
    /// Its id.
    pub id: &'a str,
    /// The admin token's name.
    pub by: &'a str,
    /// The filter, as JSON.
    pub filter: &'a str,
    /// Its pace, or empty.
    pub rate: &'a str,
    /// Left out: their route is not configured.
    pub skipped: usize,
    /// When, Unix ms.
    pub started_ms: u64,
}

impl Queue {
    /// Records a replay job of `items` (partition tag, dead-letter id), running.
    pub async fn create_replay(
        &self,
        replay: &NewReplay<'_>,
        items: &[(String, String)],
    ) -> Result<(), QueueError> {
        let keys = &self.home().keys;
        let items_key = keys.replay_items(replay.id);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for chunk in items.chunks(ITEMS_PER_PUSH) {
            let encoded: Vec<String> = chunk
                .iter()
                .map(|(tag, id)| format!("{tag}\0{id}"))
                .collect();
            pipe.rpush(&items_key, encoded).ignore();
        }
        pipe.hset_multiple(
            keys.replay(replay.id),
            &[
                ("state", ReplayState::Running.as_str().to_owned()),
                ("matched", items.len().to_string()),
                ("skipped", replay.skipped.to_string()),
                ("by", replay.by.to_owned()),
                ("filter", replay.filter.to_owned()),
                ("rate", replay.rate.to_owned()),
                ("started_ms", replay.started_ms.to_string()),
                ("next", "0".to_owned()),
            ],
        )
        .ignore()
        .zadd(keys.replays(), replay.id, replay.started_ms)
        .ignore()
        .zremrangebyrank(keys.replays(), 0, -KEPT_REPLAYS - 1)
        .ignore()
        .sadd(keys.replays_running(), replay.id)
        .ignore();
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.error(e))
    }

    /// A replay job's record.
    pub async fn replay_record(&self, id: &str) -> Result<Option<ReplayRecord>, QueueError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = conn
            .hgetall(self.home().keys.replay(id))
            .await
            .map_err(|e| self.error(e))?;
        Ok(ReplayRecord::from_fields(id, &fields))
    }

    /// The newest `limit` replay jobs, newest first.
    pub async fn recent_replays(&self, limit: usize) -> Result<Vec<ReplayRecord>, QueueError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrevrange(self.home().keys.replays(), 0, limit as isize - 1)
            .await
            .map_err(|e| self.error(e))?;
        let mut records = Vec::new();
        for id in ids {
            if let Some(record) = self.replay_record(&id).await? {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Replay jobs still running.
    pub async fn running_replays(&self) -> Result<Vec<String>, QueueError> {
        let mut conn = self.conn.clone();
        conn.smembers(self.home().keys.replays_running())
            .await
            .map_err(|e| self.error(e))
    }

    /// Up to `count` items of replay job `id` from index `from`.
    pub async fn replay_items(
        &self,
        id: &str,
        from: u64,
        count: usize,
    ) -> Result<Vec<(String, String)>, QueueError> {
        let mut conn = self.conn.clone();
        let items: Vec<String> = conn
            .lrange(
                self.home().keys.replay_items(id),
                from as isize,
                (from as isize) + count as isize - 1,
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(items
            .into_iter()
            .filter_map(|item| {
                let (tag, id) = item.split_once('\0')?;
                Some((tag.to_owned(), id.to_owned()))
            })
            .collect())
    }

    /// Counts the outcome of item `index` of replay job `id`, and moves its
    /// cursor past it, in one step.
    pub async fn replay_step(
        &self,
        id: &str,
        index: u64,
        outcome: ReplayOutcome,
    ) -> Result<(), QueueError> {
        let key = self.home().keys.replay(id);
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .hincr(&key, outcome.field(), 1)
            .ignore()
            .hset(&key, "next", index + 1)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.error(e))
    }

    /// Asks replay job `id` to stop; its record, `None` when there is none.
    pub async fn cancel_replay(&self, id: &str) -> Result<Option<ReplayRecord>, QueueError> {
        let Some(record) = self.replay_record(id).await? else {
            return Ok(None);
        };
        if record.state == ReplayState::Running.as_str() {
            let mut conn = self.conn.clone();
            let _: () = conn
                .hset(self.home().keys.replay(id), "cancel", 1)
                .await
                .map_err(|e| self.error(e))?;
        }
        self.replay_record(id).await
    }

    /// Ends replay job `id` in `state`; its record and items are kept for a while.
    pub async fn finish_replay(
        &self,
        id: &str,
        state: ReplayState,
        ended_ms: u64,
    ) -> Result<(), QueueError> {
        let keys = &self.home().keys;
        let ttl = KEPT_FOR.as_secs() as i64;
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .hset(keys.replay(id), "state", state.as_str())
            .ignore()
            .hset(keys.replay(id), "ended_ms", ended_ms)
            .ignore()
            .srem(keys.replays_running(), id)
            .ignore()
            .expire(keys.replay(id), ttl)
            .ignore()
            .expire(keys.replay_items(id), ttl)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.error(e))
    }
}
