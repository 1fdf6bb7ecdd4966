//! Whether the Redis behind the queue can keep the gateway's promises, and
//! Redis's own figures for the operator.
//!
//! An acked webhook lives only in Redis, so three of Redis's settings decide
//! whether "acked" means "kept": the version (the enqueue script needs 7.0),
//! persistence (what survives a Redis restart) and `maxmemory-policy`. A
//! policy that may evict any key (`allkeys-*`) deletes queued jobs and dead
//! letters under memory pressure without a trace, so the gateway refuses to
//! start on one and, should Redis change under it (a restart with another
//! config, `CONFIG SET`), refuses webhooks with 503 until it is fixed, unless
//! `redis.allow_eviction` says the operator knows. `volatile-*` policies
//! evict only keys with a TTL, which here are dedupe records: a sender's
//! retry may then be queued twice, never lost, so they are a warning.
//!
//! The settings are read at start and re-read by [`watch`] every few
//! seconds, so a change is noticed whether or not the connection broke.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Queue, QueueError, RedisNodes};

/// The oldest Redis the queue scripts run on.
const MIN_REDIS_VERSION: (u32, u32) = (7, 0);

/// How often the watcher re-reads Redis; a change is logged once, so this
/// only bounds how late the log line (and a refusal) comes.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Bounds each look at Redis: a reachable Redis answers far sooner.
const LOOK_TIMEOUT: Duration = Duration::from_secs(1);

/// What Redis keeps on disk, which decides whether acked events survive a
/// Redis restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    /// `appendonly yes`.
    pub aof: bool,
    /// A non-empty `save` schedule.
    pub rdb: bool,
}

impl Persistence {
    /// True when a Redis restart would lose everything.
    pub fn is_none(&self) -> bool {
        !self.aof && !self.rdb
    }
}

/// What `maxmemory-policy` does to the queue's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eviction {
    /// `noeviction`: over `maxmemory`, writes fail (the sender gets 503) and nothing is deleted.
    Never,
    /// `volatile-*`: only keys with a TTL go, i.e. dedupe records (duplicates, not loss).
    DedupeRecords(String),
    /// `allkeys-*` (or a policy we do not know): queued jobs and dead letters can vanish.
    AnyKey(String),
}

impl Eviction {
    /// The policy webhooks are refused for, unless the operator allowed it.
    fn refused(eviction: Option<&Self>, allow_eviction: bool) -> Option<&str> {
        match eviction {
            Some(Eviction::AnyKey(policy)) if !allow_eviction => Some(policy),
            _ => None,
        }
    }

    fn from_policy(policy: &str) -> Self {
        match policy {
            "noeviction" => Eviction::Never,
            p if p.starts_with("volatile-") => Eviction::DedupeRecords(p.to_owned()),
            p => Eviction::AnyKey(p.to_owned()),
        }
    }
}

/// One look at Redis: `INFO` and, where `CONFIG` is allowed, the save schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisReport {
    /// `major.minor`, when INFO says.
    pub version: Option<(u32, u32)>,
    /// Changes when Redis restarts.
    pub run_id: Option<String>,
    /// What `maxmemory-policy` may evict; `None` when INFO does not say.
    pub eviction: Option<Eviction>,
    /// On-disk persistence; `None` when `CONFIG GET` is refused (managed Redis).
    pub persistence: Option<Persistence>,
    /// `used_memory`, bytes.
    pub used_memory_bytes: Option<u64>,
    /// Keys in every database of this Redis.
    pub keys: u64,
}

impl Eviction {
    /// How much it may delete: what the gateway cares about most ranks highest.
    fn risk(&self) -> u8 {
        match self {
            Eviction::Never => 0,
            Eviction::DedupeRecords(_) => 1,
            Eviction::AnyKey(_) => 2,
        }
    }
}

impl RedisReport {
    /// Several primaries' reports as one: the oldest version, the riskiest
    /// policy, the weakest persistence; memory and keys summed; the run ids
    /// joined, so a restart of any primary is seen.
    fn together(reports: Vec<RedisReport>) -> RedisReport {
        let mut run_ids: Vec<String> = reports.iter().filter_map(|r| r.run_id.clone()).collect();
        run_ids.sort();
        let weakest = reports
            .iter()
            .find(|r| r.persistence.as_ref().is_none_or(Persistence::is_none))
            .or(reports.first());
        RedisReport {
            version: reports.iter().filter_map(|r| r.version).min(),
            run_id: (!run_ids.is_empty()).then(|| run_ids.join(",")),
            eviction: reports
                .iter()
                .filter_map(|r| r.eviction.clone())
                .max_by_key(Eviction::risk),
            persistence: weakest.and_then(|r| r.persistence.clone()),
            used_memory_bytes: reports
                .iter()
                .filter_map(|r| r.used_memory_bytes)
                .reduce(|a, b| a + b),
            keys: reports.iter().map(|r| r.keys).sum(),
        }
    }
}

/// Whether webhooks are being refused because of Redis's eviction policy;
/// shared by every clone of a [`Queue`], read on each enqueue.
#[derive(Debug, Default)]
pub(super) struct WriteGuard {
    refusing: AtomicBool,
    policy: Mutex<String>,
}

impl WriteGuard {
    fn set(&self, refused_policy: Option<&str>) {
        if let Some(policy) = refused_policy
            && let Ok(mut current) = self.policy.lock()
        {
            policy.clone_into(&mut current);
        }
        self.refusing
            .store(refused_policy.is_some(), Ordering::Release);
    }

    /// The policy webhooks are refused for, if they are.
    pub(super) fn refused_policy(&self) -> Option<String> {
        if !self.refusing.load(Ordering::Acquire) {
            return None;
        }
        Some(
            self.policy
                .lock()
                .map_or_else(|_| String::new(), |p| p.clone()),
        )
    }
}

impl Queue {
    /// Reads Redis's version, policy, persistence and figures: of the one
    /// primary, or on a cluster, of every primary holding a partition, taken
    /// together (the oldest version, the riskiest policy, the weakest
    /// persistence, summed figures).
    pub async fn report(&self) -> Result<RedisReport, QueueError> {
        let mut reports: Vec<RedisReport> = Vec::new();
        for slot in self.distinct_slots() {
            let report = self.report_on(slot).await?;
            if !reports.iter().any(|r| r.run_id == report.run_id) {
                reports.push(report);
            }
        }
        Ok(RedisReport::together(reports))
    }

    /// [`Self::report`] of the primary holding `slot`.
    async fn report_on(&self, slot: u16) -> Result<RedisReport, QueueError> {
        // The default sections: server, memory, persistence, keyspace…
        let info = redis::cmd("INFO");
        let info = self
            .answer_within(LOOK_TIMEOUT, self.conn.on_slot::<String>(&info, slot))
            .await?;
        Ok(RedisReport {
            version: redis_version(&info),
            run_id: field(&info, "run_id").map(str::to_owned),
            eviction: field(&info, "maxmemory_policy").map(Eviction::from_policy),
            persistence: self.persistence(&info, slot).await,
            used_memory_bytes: field(&info, "used_memory").and_then(|v| v.parse().ok()),
            keys: keyspace_keys(&info),
        })
    }

    /// `appendonly` from INFO, the save schedule from `CONFIG GET` (which
    /// managed Redis services may refuse: then `None`).
    async fn persistence(&self, info: &str, slot: u16) -> Option<Persistence> {
        let mut save = redis::cmd("CONFIG");
        save.arg("GET").arg("save");
        let save = self
            .answer_within(LOOK_TIMEOUT, self.conn.on_slot::<Vec<String>>(&save, slot))
            .await
            .ok()?;
        Some(Persistence {
            aof: field(info, "aof_enabled") == Some("1"),
            // CONFIG GET answers [name, value].
            rdb: save.get(1).is_some_and(|s| !s.trim().is_empty()),
        })
    }

    /// At start: refuses a Redis whose policy may evict queued jobs (unless
    /// `allow_eviction`). A Redis that does not answer yet passes: the
    /// watcher looks as soon as it does.
    pub async fn refuse_unsafe_eviction(&self, allow_eviction: bool) -> Result<(), QueueError> {
        let Ok(report) = self.report().await else {
            return Ok(());
        };
        match Eviction::refused(report.eviction.as_ref(), allow_eviction) {
            Some(policy) => Err(QueueError::Evicting {
                url: self.display_url.clone(),
                policy: policy.to_owned(),
            }),
            None => Ok(()),
        }
    }
}

/// What the watcher last said, so each change is logged once.
#[derive(Default)]
struct Said {
    reachable: Option<bool>,
    /// Per partition on a cluster: whether its primary answered.
    partitions: std::collections::HashMap<String, bool>,
    run_id: Option<String>,
    eviction: Option<Eviction>,
    persistence: Option<Option<Persistence>>,
}

/// Watches Redis until `shutdown`: logs it going away and coming back, its
/// version, persistence and eviction policy whenever they change (and after
/// every restart of Redis), refuses webhooks while the policy may evict
/// queued jobs, and hands every report to `on_report` (for metrics).
pub async fn watch(
    queue: Queue,
    allow_eviction: bool,
    mut on_report: impl FnMut(&RedisReport) + Send,
    shutdown: CancellationToken,
) {
    let mut said = Said::default();
    loop {
        let nodes = queue.nodes(LOOK_TIMEOUT).await;
        if queue.cluster {
            partition_changes(&nodes, &mut said);
        }
        if nodes.all_answering() {
            if said.reachable != Some(true) {
                tracing::info!(redis = %queue.display_url, "redis reachable");
            }
            said.reachable = Some(true);
            match queue.report().await {
                Ok(report) => {
                    assess(&queue, &report, allow_eviction, &mut said);
                    on_report(&report);
                }
                Err(err) => tracing::debug!(error = %err, "cannot read redis INFO"),
            }
        } else {
            if said.reachable != Some(false) {
                let error = nodes.nodes.iter().find_map(|n| n.error.as_deref());
                tracing::error!(
                    redis = %queue.display_url,
                    error,
                    "redis unreachable; webhooks are refused with 503 until it returns, retrying"
                );
            }
            said.reachable = Some(false);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
    }
}

/// Logs each partition whose primary stopped or started answering: on a
/// cluster a failover takes some partitions away for seconds while the
/// others keep accepting.
fn partition_changes(nodes: &RedisNodes, said: &mut Said) {
    for node in &nodes.nodes {
        for tag in &node.partitions {
            let before = said.partitions.insert(tag.clone(), node.answering);
            match (before, node.answering) {
                (Some(true) | None, false) => tracing::error!(
                    partition = %tag,
                    node = node.node.as_deref(),
                    error = node.error.as_deref(),
                    "redis partition unavailable: its events are answered 503 until its primary (or a promoted replica) answers"
                ),
                (Some(false), true) => tracing::info!(
                    partition = %tag,
                    node = node.node.as_deref(),
                    "redis partition available again"
                ),
                _ => {}
            }
        }
    }
}

fn assess(queue: &Queue, report: &RedisReport, allow_eviction: bool, said: &mut Said) {
    let redis = queue.display_url.as_str();
    let restarted = said.run_id != report.run_id;
    if restarted {
        said.run_id.clone_from(&report.run_id);
        if let Some(version) = report.version
            && version < MIN_REDIS_VERSION
        {
            tracing::error!(
                redis,
                version = %format!("{}.{}", version.0, version.1),
                "redis is older than 7.0: webhooks with a delivery id will be refused with 503; upgrade Redis"
            );
        }
    }
    if restarted || said.persistence.as_ref() != Some(&report.persistence) {
        said.persistence = Some(report.persistence.clone());
        match &report.persistence {
            Some(p) if p.is_none() => tracing::warn!(
                redis,
                "redis keeps nothing on disk (no AOF, no RDB save): acked webhooks die with Redis; \
                 enable appendonly for production"
            ),
            Some(p) => tracing::info!(redis, aof = p.aof, rdb = p.rdb, "redis persistence"),
            None => tracing::info!(
                redis,
                "cannot read redis persistence settings (CONFIG disabled?); make sure AOF or RDB is on"
            ),
        }
    }
    queue
        .guard
        .set(Eviction::refused(report.eviction.as_ref(), allow_eviction));
    if said.eviction != report.eviction {
        said.eviction.clone_from(&report.eviction);
        log_eviction(redis, report.eviction.as_ref(), allow_eviction);
    }
}

fn log_eviction(redis: &str, eviction: Option<&Eviction>, allow_eviction: bool) {
    match eviction {
        Some(Eviction::AnyKey(policy)) if allow_eviction => tracing::error!(
            redis,
            policy = %policy,
            "redis maxmemory-policy may evict any key: under memory pressure acked webhooks and dead letters \
             vanish without a trace; running anyway because redis.allow_eviction = true"
        ),
        Some(Eviction::AnyKey(policy)) => tracing::error!(
            redis,
            policy = %policy,
            "redis maxmemory-policy may evict any key: under memory pressure acked webhooks and dead letters \
             would vanish; refusing webhooks with 503 until it is noeviction (or redis.allow_eviction = true)"
        ),
        Some(Eviction::DedupeRecords(policy)) => tracing::warn!(
            redis,
            policy = %policy,
            "redis maxmemory-policy evicts keys with a TTL: under memory pressure dedupe records go first, \
             so a sender's retry may be queued twice; set noeviction to keep them"
        ),
        Some(Eviction::Never) => {
            tracing::info!(redis, policy = "noeviction", "redis eviction policy")
        }
        None => tracing::info!(redis, "redis INFO does not name its maxmemory-policy"),
    }
}

/// The value of `name:` in INFO's answer.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// `major.minor` from the `redis_version:` line of `INFO server`.
fn redis_version(info: &str) -> Option<(u32, u32)> {
    let mut parts = field(info, "redis_version")?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The sum of `keys=` over INFO's `dbN:keys=…,expires=…` lines.
fn keyspace_keys(info: &str) -> u64 {
    info.lines()
        .filter(|line| {
            line.strip_prefix("db")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .filter_map(|line| {
            let (_, stats) = line.split_once(':')?;
            stats
                .split(',')
                .find_map(|stat| stat.strip_prefix("keys="))?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n\
        run_id:5a4c0bd2\r\n\r\n# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n\
        maxmemory_policy:allkeys-lru\r\n\r\n# Persistence\r\naof_enabled:1\r\n\r\n\
        # Keyspace\r\ndb0:keys=12,expires=3,avg_ttl=0\r\ndb3:keys=5,expires=0,avg_ttl=0\r\n";

    #[test]
    fn the_version_is_read_from_info_server() {
        assert_eq!(redis_version(INFO), Some((7, 0)));
        assert_eq!(redis_version("redis_version:6.2.14\r\n"), Some((6, 2)));
        assert_eq!(redis_version("# Server\r\nos:Linux\r\n"), None);
        assert_eq!(redis_version("redis_version:garbage\r\n"), None);
    }

    #[test]
    fn fields_are_found_by_their_whole_name() {
        assert_eq!(field(INFO, "used_memory"), Some("1048576"));
        assert_eq!(field(INFO, "maxmemory_policy"), Some("allkeys-lru"));
        assert_eq!(field(INFO, "run_id"), Some("5a4c0bd2"));
        assert_eq!(field(INFO, "maxmemory"), None);
    }

    #[test]
    fn keys_are_summed_over_every_database() {
        assert_eq!(keyspace_keys(INFO), 17);
        assert_eq!(keyspace_keys("# Keyspace\r\n"), 0);
        assert_eq!(keyspace_keys("dbfilename:dump.rdb\r\n"), 0);
    }

    #[test]
    fn only_noeviction_keeps_every_key() {
        assert_eq!(Eviction::from_policy("noeviction"), Eviction::Never);
        let dedupe_only = |p: &str| Eviction::DedupeRecords(p.to_owned());
        let any_key = |p: &str| Eviction::AnyKey(p.to_owned());
        for (policy, expected) in [
            ("volatile-lru", dedupe_only as fn(&str) -> Eviction),
            ("volatile-lfu", dedupe_only),
            ("volatile-random", dedupe_only),
            ("volatile-ttl", dedupe_only),
            ("allkeys-lru", any_key),
            ("allkeys-lfu", any_key),
            ("allkeys-random", any_key),
            ("some-future-policy", any_key),
        ] {
            assert_eq!(Eviction::from_policy(policy), expected(policy), "{policy}");
        }
    }

    #[test]
    fn primaries_report_together_at_their_weakest() {
        let report = |run_id: &str, minor, policy: &str, aof, memory| RedisReport {
            version: Some((7, minor)),
            run_id: Some(run_id.to_owned()),
            eviction: Some(Eviction::from_policy(policy)),
            persistence: Some(Persistence { aof, rdb: false }),
            used_memory_bytes: Some(memory),
            keys: 10,
        };
        let together = RedisReport::together(vec![
            report("b", 2, "noeviction", true, 100),
            report("a", 0, "volatile-lru", false, 50),
            report("c", 4, "noeviction", true, 25),
        ]);
        assert_eq!(together.version, Some((7, 0)));
        assert_eq!(together.run_id.as_deref(), Some("a,b,c"));
        assert_eq!(
            together.eviction,
            Some(Eviction::DedupeRecords("volatile-lru".into()))
        );
        assert_eq!(
            together.persistence,
            Some(Persistence {
                aof: false,
                rdb: false
            })
        );
        assert_eq!(together.used_memory_bytes, Some(175));
        assert_eq!(together.keys, 30);
    }

    #[test]
    fn the_guard_names_the_policy_it_refuses_for() {
        let guard = WriteGuard::default();
        assert_eq!(guard.refused_policy(), None);
        guard.set(Some("allkeys-lru"));
        assert_eq!(guard.refused_policy().as_deref(), Some("allkeys-lru"));
        guard.set(None);
        assert_eq!(guard.refused_policy(), None);
    }
}
