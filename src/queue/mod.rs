//! Redis, the gateway's only state: the connection, its health, the jobs
//! stream, the retry schedule and the dead-letter store.
//!
//! The queue is split into partitions (see [`partition`]), each one hash
//! slot. Per partition, under its tag (see [`Keys`]):
//! - `jobs`: stream, one entry per (event, route) job, read by the consumer
//!   group `delivery`; an entry is deleted when its job leaves (delivered,
//!   rescheduled or dead-lettered), so the stream holds only live work;
//! - `retry`: sorted set of jobs by due time (ms), moved back to `jobs` when
//!   due by a script;
//! - `dead:<id>`: hash per dead letter; `dead`: sorted set of ids by failure
//!   time; `dead-by-route:<r>`, `dead-by-owner:<o>`, `dead-by-source:<s>`:
//!   the same, per route, owner and source;
//! - `seen:<source>:<delivery id>`: the first event id of a delivery id, for
//!   `dedupe_window`;
//! - `stats:received|delivered|retrying|last_received|last_success`: the
//!   per-route figures the scripts keep, summed (or the latest taken) over
//!   partitions when read;
//! - `held:<route>`, `held-jobs:<route>`, `holding`: jobs held for a paused
//!   or draining route, in ack order (see [`flow`]), and the routes with any;
//! - `lag:<route>`, `lag-held:<route>`: the undelivered jobs of a route with
//!   `max_lag`, by when they became undelivered (see [`lag`]).
//!
//! Outside the partitions, each rate-limited destination has its limiter
//! under a hash tag of its own (see [`limiter`]).
//!
//! Partition 0 also holds what is not per event: the audit stream, breaker
//! states, silence watches, silent and lagging routes, alert slots, paused
//! routes and drain rates,
//! replay jobs (see [`replay`]), leases, and the tags of partitions earlier
//! layouts wrote (`partitions`), which every process keeps reading.
//!
//! The connection (see [`connection`]) is created lazily, so a gateway
//! started while Redis is down comes up, answers `/readyz` with 503, and
//! connects as soon as Redis is reachable.

mod batch;
mod connection;
mod dead;
mod delivery;
mod flow;
mod health;
mod ingest;
mod job;
mod keys;
mod lag;
mod limiter;
mod nodes;
mod order;
pub mod partition;
mod replay;
mod script;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use dead::{
    AuditEntry, AuditRecord, Cursor, DeadLetter, DeadLetterFilter, DeadLetterSummary, Replayed,
};
pub use delivery::{Claimed, Completer, DeadReason, Entry, GROUP, JobReader, NewDeadLetter};
pub use flow::{AckOrder, FlowState, HeldJob, Pause, ToHold};
pub use health::{Eviction, Persistence, RedisReport, watch};
pub use ingest::{Enqueued, EventWriter, NewEvent, decode_headers, encode_headers};
pub use job::{AttemptRecord, Job, JobDecodeError};
pub use keys::{Keys, RouteMark, Stat};
pub use nodes::{NodeInUse, RedisNodes};
pub use order::{BLOCKED_SHOWN, BlockedKey, OrderedKeys};
pub use partition::Partition;
pub use replay::{NewReplay, ReplayOutcome, ReplayRecord, ReplayState};

use crate::config::{RedisConfig, RedisTarget, Route};
use connection::{Connection, Connector};
use script::AckReplicas;

/// Bounds one command; longer than any healthy round trip by far.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Fewer replicas than `redis.ack_replicas` confirmed a write in time;
    /// it stands on the primary only, so it was not acked.
    #[error(
        "redis at {url}: {confirmed} of the {wanted} replicas required (redis.ack_replicas) confirmed the write in time"
    )]
    NotReplicated {
        /// Where Redis is (password masked).
        url: String,
        /// `redis.ack_replicas`.
        wanted: u32,
        /// Replicas that confirmed.
        confirmed: u32,
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
    connector: Connector,
    conn: Connection,
    /// The configured layout: where new events go. Partition 0 first.
    written: Arc<[Partition]>,
    /// Every partition that may hold work: the layout and earlier ones'.
    read: Arc<RwLock<Arc<[Partition]>>>,
    cluster: bool,
    /// `single`, `sentinel` or `cluster`, for what names the nodes.
    mode: &'static str,
    /// The node last seen serving each slot.
    last_seen: Arc<nodes::LastSeen>,
    ack: Option<AckReplicas>,
    display_url: String,
    guard: Arc<health::WriteGuard>,
    /// Spreads events without a delivery id over the partitions.
    next_partition: Arc<AtomicUsize>,
    /// `redis.prefix`, for keys outside the partitions (rate limiters).
    prefix: Arc<str>,
    /// Routes whose undelivered jobs are indexed (see [`lag`]).
    lag_tracked: Arc<HashSet<String>>,
    /// Routes delivered in order per key (see [`order`]).
    ordered: Arc<HashSet<String>>,
}

impl Queue {
    /// A handle that connects on first use and reconnects after failures.
    pub fn connect_lazy(config: &RedisConfig) -> Result<Self, QueueError> {
        let connector = Connector::new(&config.target);
        let conn = connector
            .dedicated(RESPONSE_TIMEOUT)
            .map_err(|source| QueueError::Redis {
                url: config.display_url.clone(),
                source,
            })?;
        let written: Arc<[Partition]> = partition::layout(&config.prefix, config.partitions).into();
        Ok(Self {
            connector,
            conn,
            read: Arc::new(RwLock::new(written.clone())),
            written,
            cluster: matches!(config.target, RedisTarget::Cluster(_)),
            mode: match config.target {
                RedisTarget::Single(_) => "single",
                RedisTarget::Sentinel { .. } => "sentinel",
                RedisTarget::Cluster(_) => "cluster",
            },
            last_seen: Default::default(),
            ack: (config.ack_replicas > 0).then(|| AckReplicas {
                replicas: config.ack_replicas,
                timeout_ms: config.ack_replicas_timeout.as_millis().max(1) as u64,
            }),
            display_url: config.display_url.clone(),
            guard: Default::default(),
            next_partition: Default::default(),
            prefix: config.prefix.as_str().into(),
            lag_tracked: Default::default(),
            ordered: Default::default(),
        })
    }

    /// This handle serves `routes`: it indexes the undelivered jobs of those
    /// with `max_lag` or `ordered` (see [`lag`]; the oldest waiting job of an
    /// ordered route is shown) and keeps per-key lines for ordered ones (see
    /// [`order`]). Every process of a deployment shares one config.
    pub fn for_routes(mut self, routes: &[Route]) -> Self {
        let names = |keep: fn(&Route) -> bool| -> Arc<HashSet<String>> {
            Arc::new(
                routes
                    .iter()
                    .filter(|r| keep(r))
                    .map(|r| r.name.clone())
                    .collect(),
            )
        };
        self.lag_tracked = names(|r| r.max_lag.is_some() || r.ordered);
        self.ordered = names(|r| r.ordered);
        self
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

    /// Partition 0: today's keys, and the home of what is not per event.
    fn home(&self) -> &Partition {
        &self.written[0]
    }

    /// The partitions new events are written to.
    pub fn written_partitions(&self) -> &[Partition] {
        &self.written
    }

    /// Every partition that may hold work, earlier layouts' included.
    pub fn partitions(&self) -> Arc<[Partition]> {
        self.read
            .read()
            .map_or_else(|_| self.written.clone(), |read| read.clone())
    }

    /// The partition of an event: from its ordering key when it has one (so
    /// every event of a key is in one partition), else from its delivery id
    /// (so every process writes a sender's retries where the first attempt's
    /// dedupe record is; a retry carries the same key too), else the next
    /// in turn.
    fn partition_for(
        &self,
        source: &str,
        ordering_key: Option<&str>,
        delivery_id: Option<&str>,
    ) -> &Partition {
        let count = self.written.len();
        let index = match (ordering_key, delivery_id) {
            _ if count == 1 => 0,
            (Some(key), _) => {
                partition::index_for(source, partition::Spread::OrderingKey, key, count)
            }
            (None, Some(id)) => {
                partition::index_for(source, partition::Spread::DeliveryId, id, count)
            }
            (None, None) => self.next_partition.fetch_add(1, Ordering::Relaxed) % count,
        };
        &self.written[index]
    }

    /// Records this layout's partitions in partition 0 and reads back those
    /// of every layout, so partitions no longer written are still read.
    pub async fn register_partitions(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let registry = self.home().keys.partition_tags();
        if self.written.len() > 1 {
            let _: u64 = redis::cmd("SADD")
                .arg(&registry)
                .arg(self.written[1..].iter().map(|p| &p.tag).collect::<Vec<_>>())
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
        }
        let tags: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&registry)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        let mut read = self.written.to_vec();
        let mut earlier: Vec<Partition> = tags
            .iter()
            .filter(|tag| !self.written.iter().any(|p| &p.tag == *tag))
            .map(|tag| Partition::from_tag(tag))
            .collect();
        if !earlier.is_empty() {
            earlier.sort_by(|a, b| a.tag.cmp(&b.tag));
            tracing::info!(
                partitions = ?earlier.iter().map(|p| &p.tag).collect::<Vec<_>>(),
                "reading partitions an earlier layout wrote until they are empty"
            );
        }
        read.extend(earlier);
        if let Ok(mut current) = self.read.write() {
            *current = read.into();
        }
        Ok(())
    }

    /// [`Self::register_partitions`], tried again every second while Redis
    /// cannot be reached; false when `shutdown` came first.
    pub async fn register_partitions_until_done(
        &self,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> bool {
        loop {
            match self.register_partitions().await {
                Ok(()) => return true,
                Err(err) => tracing::debug!(error = %err, "cannot read the partition layouts yet"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// One slot per partition on a cluster (each may be on another
    /// primary); one slot in all otherwise (one primary holds everything).
    fn distinct_slots(&self) -> Vec<u16> {
        if self.cluster {
            self.written.iter().map(|p| p.slot).collect()
        } else {
            vec![self.home().slot]
        }
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

/// How a statistic kept per partition is read back as one figure.
enum Merge {
    /// Counters: the partitions' sum.
    Sum,
    /// Times: the latest.
    Latest,
    /// Kept in partition 0 only.
    Home,
}

impl Stat {
    fn merge(self) -> Merge {
        match self {
            Stat::Received | Stat::Delivered | Stat::Retrying | Stat::Reparked => Merge::Sum,
            Stat::LastReceived | Stat::LastSuccess => Merge::Latest,
            Stat::LastFailure | Stat::Breaker | Stat::WatchSince => Merge::Home,
        }
    }
}

impl Queue {
    /// One statistic for each of `fields` (routes, or destination URLs),
    /// over every partition.
    pub async fn stats(
        &self,
        stat: Stat,
        fields: &[&str],
    ) -> Result<Vec<Option<String>>, QueueError> {
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        let merge = stat.merge();
        let partitions = match merge {
            Merge::Home => vec![self.home().clone()],
            Merge::Sum | Merge::Latest => self.partitions().to_vec(),
        };
        let mut merged: Vec<Option<String>> = vec![None; fields.len()];
        for partition in &partitions {
            let mut conn = self.conn.clone();
            let values: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(partition.keys.stat(stat))
                .arg(fields)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
            for (into, value) in merged.iter_mut().zip(values) {
                *into = merge_stat(&merge, into.take(), value);
            }
        }
        Ok(merged)
    }

    /// Sets one statistic (a last-failure time, a breaker state).
    pub async fn set_stat(&self, stat: Stat, field: &str, value: &str) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("HSET")
            .arg(self.home().keys.stat(stat))
            .arg(field)
            .arg(value)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))
    }

    /// Jobs waiting in the retry schedule, all routes and partitions.
    pub async fn retry_schedule_size(&self) -> Result<u64, QueueError> {
        let mut total = 0;
        for partition in self.partitions().iter() {
            let mut conn = self.conn.clone();
            let size: u64 = redis::cmd("ZCARD")
                .arg(partition.keys.retry())
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
            total += size;
        }
        Ok(total)
    }
}

/// Two partitions' values of one statistic as one.
fn merge_stat(merge: &Merge, a: Option<String>, b: Option<String>) -> Option<String> {
    let number = |v: &Option<String>| v.as_deref().and_then(|v| v.parse::<i64>().ok());
    match (merge, a, b) {
        (_, None, b) => b,
        (_, a, None) => a,
        (Merge::Sum, a, b) => Some((number(&a).unwrap_or(0) + number(&b).unwrap_or(0)).to_string()),
        (Merge::Latest, a, b) => {
            if number(&b) > number(&a) {
                b
            } else {
                a
            }
        }
        (Merge::Home, a, _) => a,
    }
}

impl Queue {
    /// Starts watching `route` for silence now, unless already watched.
    pub async fn watch_since(&self, route: &str, now_ms: u64) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let key = self.home().keys.stat(Stat::WatchSince);
        let (_, since): (u8, u64) = redis::pipe()
            .cmd("HSETNX")
            .arg(&key)
            .arg(route)
            .arg(now_ms)
            .cmd("HGET")
            .arg(&key)
            .arg(route)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(since)
    }

    /// Records whether `route` is in `mark`; true when that changed (so
    /// exactly one gateway process reports each change).
    pub async fn set_marked(
        &self,
        mark: RouteMark,
        route: &str,
        on: bool,
    ) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let changed: u8 = redis::cmd(if on { "SADD" } else { "SREM" })
            .arg(self.home().keys.marked(mark))
            .arg(route)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(changed == 1)
    }

    /// Routes currently reported in `mark`.
    pub async fn marked_routes(&self, mark: RouteMark) -> Result<Vec<String>, QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("SMEMBERS")
            .arg(self.home().keys.marked(mark))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_figures_merge_by_kind() {
        let some = |v: &str| Some(v.to_owned());
        assert_eq!(merge_stat(&Merge::Sum, some("3"), some("4")), some("7"));
        assert_eq!(merge_stat(&Merge::Sum, None, some("4")), some("4"));
        assert_eq!(
            merge_stat(&Merge::Latest, some("17"), some("9")),
            some("17")
        );
        assert_eq!(
            merge_stat(&Merge::Latest, some("9"), some("17")),
            some("17")
        );
        assert_eq!(merge_stat(&Merge::Latest, some("9"), None), some("9"));
    }
}
