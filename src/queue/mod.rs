//! Redis, the gateway's only state: the connection, its health, the jobs
//! stream, the retry schedule and the dead-letter store.
//!
//! Layout (all keys under `{prefix}:`, see [`Keys`]):
//! - `jobs`: stream, one entry per (event, route) job, read by the consumer
//!   group `delivery`; an entry is deleted when its job leaves (delivered,
//!   rescheduled or dead-lettered), so the stream holds only live work;
//! - `retry`: sorted set of jobs by due time (ms), moved back to `jobs` when
//!   due by a script;
//! - `dead:<id>`: hash per dead letter; `dead`: sorted set of ids by failure
//!   time; `dead-by-route:<r>`, `dead-by-owner:<o>`, `dead-by-source:<s>`:
//!   the same, per route, owner and source;
//! - `audit`: stream of admin actions (replay, delete) with the token name;
//! - `seen:<source>:<delivery id>`: the first event id of a delivery id, for
//!   `dedupe_window`.
//!
//! One multiplexed connection serves the whole process: the redis crate's
//! `ConnectionManager` pipelines concurrent commands over one socket and
//! reconnects by itself after an I/O error. It is created lazily, so a gateway
//! started while Redis is down comes up, answers `/readyz` with 503, and
//! connects as soon as Redis is reachable.

mod batch;
mod dead;
mod delivery;
mod health;
mod ingest;
mod job;
mod keys;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use dead::{
    AuditEntry, AuditRecord, Cursor, DeadLetter, DeadLetterFilter, DeadLetterSummary, Replayed,
};
pub use delivery::{Claimed, Completer, DeadReason, GROUP, JobReader, NewDeadLetter};
pub use health::{Eviction, Persistence, RedisReport, watch};
pub use ingest::{Enqueued, EventWriter, NewEvent, decode_headers, encode_headers};
pub use job::{AttemptRecord, Job, JobDecodeError};
pub use keys::{Keys, Stat};

use crate::config::RedisConfig;

/// Bounds one connection attempt, so a black-holed Redis fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds one command; longer than any healthy round trip by far.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect attempts inside one command before it fails back to the caller;
/// the caller (or the next command) triggers the next round.
const RECONNECT_RETRIES: usize = 2;

/// Errors talking to Redis.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// Redis refused or failed the command, or the connection is down.
    #[error("redis at {url}: {source}")]
    Redis {
        /// Where Redis was expected (password masked).
        url: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// Redis may evict queued jobs (`maxmemory-policy`), so nothing is
    /// acked until that changes (or `redis.allow_eviction` is set).
    #[error(
        "redis at {url}: maxmemory-policy {policy} may evict queued jobs and dead letters, so acked \
         webhooks could vanish; set it to noeviction (or redis.allow_eviction = true to accept the risk)"
    )]
    Evicting {
        /// Where Redis is (password masked).
        url: String,
        /// The policy, as Redis names it.
        policy: String,
    },
    /// Redis answered a script in a shape the script never returns (a
    /// script of another version under the same name, say).
    #[error("redis at {url}: unexpected answer from the {script} script")]
    UnexpectedReply {
        /// Where Redis is (password masked).
        url: String,
        /// Which script.
        script: &'static str,
    },
    /// The task writing batches is gone (the runtime is shutting down).
    #[error("redis at {url}: the batch writer has stopped")]
    WriterStopped {
        /// Where Redis is (password masked).
        url: String,
    },
    /// Redis did not answer within the bound.
    #[error("redis at {url}: no answer within {}", humantime::format_duration(*.after))]
    Timeout {
        /// Where Redis was expected (password masked).
        url: String,
        /// The bound that passed.
        after: Duration,
    },
}

/// Handle to the gateway's Redis; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    display_url: String,
    guard: std::sync::Arc<health::WriteGuard>,
}

impl Queue {
    /// A handle that connects on first use and reconnects after failures.
    pub fn connect_lazy(config: &RedisConfig) -> Result<Self, QueueError> {
        let redis_error = |source| QueueError::Redis {
            url: config.display_url.clone(),
            source,
        };
        let client = redis::Client::open(config.connection.clone()).map_err(redis_error)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(redis_error)?;
        Ok(Self {
            client,
            conn,
            keys: Keys::new(&config.prefix),
            display_url: config.display_url.clone(),
            guard: Default::default(),
        })
    }

    /// Redis's URL with the password masked, for logs.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    fn error(&self, source: redis::RedisError) -> QueueError {
        QueueError::Redis {
            url: self.display_url.clone(),
            source,
        }
    }

    /// PING, failing after `within`.
    pub async fn ping(&self, within: Duration) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        self.answer_within(within, cmd.query_async::<String>(&mut conn))
            .await
            .map(drop)
    }

    /// `command`'s answer, or `Timeout` once `within` has passed.
    async fn answer_within<T>(
        &self,
        within: Duration,
        command: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, QueueError> {
        match tokio::time::timeout(within, command).await {
            Ok(answer) => answer.map_err(|e| self.error(e)),
            Err(_) => Err(QueueError::Timeout {
                url: self.display_url.clone(),
                after: within,
            }),
        }
    }

    /// Ready to take webhooks: Redis answers PING within `within`, and its
    /// eviction policy lets acked jobs be kept.
    pub async fn ready(&self, within: Duration) -> Result<(), QueueError> {
        self.ping(within).await?;
        self.refused_for_eviction()
    }

    /// `Evicting` while webhooks are refused for Redis's eviction policy.
    fn refused_for_eviction(&self) -> Result<(), QueueError> {
        match self.guard.refused_policy() {
            Some(policy) => Err(QueueError::Evicting {
                url: self.display_url.clone(),
                policy,
            }),
            None => Ok(()),
        }
    }
}

impl Queue {
    /// One statistic for each of `fields` (routes, or destination URLs).
    pub async fn stats(
        &self,
        stat: Stat,
        fields: &[&str],
    ) -> Result<Vec<Option<String>>, QueueError> {
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        redis::cmd("HMGET")
            .arg(self.keys.stat(stat))
            .arg(fields)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))
    }

    /// Sets one statistic (a last-failure time, a breaker state).
    pub async fn set_stat(&self, stat: Stat, field: &str, value: &str) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("HSET")
            .arg(self.keys.stat(stat))
            .arg(field)
            .arg(value)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))
    }

    /// Jobs waiting in the retry schedule, all routes.
    pub async fn retry_schedule_size(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("ZCARD")
            .arg(self.keys.retry())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))
    }
}

impl Queue {
    /// Starts watching `route` for silence now, unless already watched.
    pub async fn watch_since(&self, route: &str, now_ms: u64) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let (_, since): (u8, u64) = redis::pipe()
            .cmd("HSETNX")
            .arg(self.keys.stat(Stat::WatchSince))
            .arg(route)
            .arg(now_ms)
            .cmd("HGET")
            .arg(self.keys.stat(Stat::WatchSince))
            .arg(route)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(since)
    }

    /// Records whether `route` is silent; true when that changed (so exactly
    /// one gateway process reports each change).
    pub async fn set_silent(&self, route: &str, silent: bool) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let changed: u8 = redis::cmd(if silent { "SADD" } else { "SREM" })
            .arg(self.keys.silent())
            .arg(route)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(changed == 1)
    }

    /// Routes currently reported silent.
    pub async fn silent_routes(&self) -> Result<Vec<String>, QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("SMEMBERS")
            .arg(self.keys.silent())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))
    }
}
