//! Every Redis key the gateway uses, in one place. A partition's keys all
//! start with `{<tag>}:`; the braces are a cluster hash tag, so every key of
//! a partition lands in one slot and its scripts work on Redis Cluster.

/// The per-route figures kept in Redis for the inventory, shared by every
/// gateway process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Jobs enqueued per route.
    Received,
    /// Jobs delivered per route.
    Delivered,
    /// Jobs waiting in the retry schedule per route.
    Retrying,
    /// Last job enqueued per route, Unix ms.
    LastReceived,
    /// Last delivery per route, Unix ms.
    LastSuccess,
    /// Last failed attempt per route, Unix ms.
    LastFailure,
    /// Breaker state per destination URL.
    Breaker,
    /// Since when a route's silence is watched, Unix ms.
    WatchSince,
    /// Jobs parked again per route: put back by a drain, their destination
    /// still could not take them (what paces an unpaced drain).
    Reparked,
}

impl Stat {
    fn as_str(self) -> &'static str {
        match self {
            Stat::Received => "received",
            Stat::Delivered => "delivered",
            Stat::Retrying => "retrying",
            Stat::LastReceived => "last_received",
            Stat::LastSuccess => "last_success",
            Stat::LastFailure => "last_failure",
            Stat::Breaker => "breaker",
            Stat::WatchSince => "watch_since",
            Stat::Reparked => "reparked",
        }
    }
}

/// A state of a route that its owner is told about once when it starts and
/// once when it ends: whichever process changes the set reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMark {
    /// No event within `expect_within`.
    Silent,
    /// The oldest undelivered job is older than `max_lag`.
    Lagging,
}

impl RouteMark {
    fn as_str(self) -> &'static str {
        match self {
            RouteMark::Silent => "silent",
            RouteMark::Lagging => "lagging",
        }
    }
}

/// Key names of one partition.
#[derive(Debug, Clone)]
pub struct Keys {
    base: String,
}

impl Keys {
    /// Keys under hash tag `tag` (the prefix, validated by config: no
    /// braces, no spaces; or a partition's tag).
    pub fn new(tag: &str) -> Self {
        Self {
            base: format!("{{{tag}}}"),
        }
    }

    /// Tags of every partition other than 0 that any layout has written
    /// (kept in partition 0), so a changed layout still reads them.
    pub fn partition_tags(&self) -> String {
        format!("{}:partitions", self.base)
    }

    /// The stream of delivery jobs, one entry per (event, route).
    pub fn jobs(&self) -> String {
        format!("{}:jobs", self.base)
    }

    /// The retry schedule: jobs by due time (ms).
    pub fn retry(&self) -> String {
        format!("{}:retry", self.base)
    }

    /// One dead letter (a hash).
    pub fn dead_letter(&self, id: &str) -> String {
        format!("{}:dead:{id}", self.base)
    }

    /// Every dead letter by failure time (ms).
    pub fn dead_letters(&self) -> String {
        format!("{}:dead", self.base)
    }

    /// Dead letters of one route, owner or source, by failure time (ms).
    pub fn dead_by(&self, index: &str, value: &str) -> String {
        format!("{}:dead-by-{index}:{value}", self.base)
    }

    /// A per-route (or per-destination) statistic: a hash keyed by route.
    pub fn stat(&self, stat: Stat) -> String {
        format!("{}:stats:{}", self.base, stat.as_str())
    }

    /// Present while an alert for `route` was sent within the last interval.
    pub fn alerted(&self, route: &str) -> String {
        format!("{}:alerted:{route}", self.base)
    }

    /// Routes currently in `mark` (silent, lagging): one reporter per change.
    pub fn marked(&self, mark: RouteMark) -> String {
        format!("{}:{}", self.base, mark.as_str())
    }

    /// The undelivered jobs of a route with `max_lag`, not held, by job id,
    /// scored by when they became undelivered (Unix ms).
    pub fn lag(&self, route: &str) -> String {
        format!("{}:lag:{route}", self.base)
    }

    /// The keys of an ordered route that have a head job, with its state
    /// (see [`super::order`]).
    pub fn lines(&self, route: &str) -> String {
        format!("{}:lines:{route}", self.base)
    }

    /// The jobs of one key of an ordered route waiting behind its head, in
    /// ack order; `field` is the key's digest.
    pub fn line(&self, route: &str, field: &str) -> String {
        format!("{}:line:{route}:{field}", self.base)
    }

    /// [`Keys::lag`] of the route's held jobs.
    pub fn lag_held(&self, route: &str) -> String {
        format!("{}:lag-held:{route}", self.base)
    }

    /// The audit stream of admin actions.
    pub fn audit(&self) -> String {
        format!("{}:audit", self.base)
    }

    /// Paused routes (partition 0): route → who, when and why, as JSON.
    pub fn paused(&self) -> String {
        format!("{}:paused", self.base)
    }

    /// The pace a resumed route drains at (partition 0): route → rate.
    pub fn drain_rates(&self) -> String {
        format!("{}:drain-rate", self.base)
    }

    /// The jobs of `route` held in this partition (paused, or waiting in
    /// line behind held ones), in ack order.
    pub fn held(&self, route: &str) -> String {
        format!("{}:held:{route}", self.base)
    }

    /// The stored jobs of [`Keys::held`], by member.
    pub fn held_jobs(&self, route: &str) -> String {
        format!("{}:held-jobs:{route}", self.base)
    }

    /// Routes with held jobs in this partition.
    pub fn holding(&self) -> String {
        format!("{}:holding", self.base)
    }

    /// A replay job's record (partition 0).
    pub fn replay(&self, id: &str) -> String {
        format!("{}:replay:{id}", self.base)
    }

    /// A replay job's dead letters to replay, in order (partition 0).
    pub fn replay_items(&self, id: &str) -> String {
        format!("{}:replay-items:{id}", self.base)
    }

    /// Replay jobs by start time (partition 0).
    pub fn replays(&self) -> String {
        format!("{}:replays", self.base)
    }

    /// Replay jobs still running (partition 0).
    pub fn replays_running(&self) -> String {
        format!("{}:replays-running", self.base)
    }

    /// A lease on a task only one process runs at a time (partition 0).
    pub fn lease(&self, task: &str) -> String {
        format!("{}:lease:{task}", self.base)
    }

    /// The dedupe record of one delivery id of one source.
    pub fn seen(&self, source: &str, delivery_id: &str) -> String {
        format!("{}:seen:{source}:{delivery_id}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = Keys::new("switchyard");
        assert_eq!(keys.jobs(), "{switchyard}:jobs");
        assert_eq!(keys.seen("github", "abc"), "{switchyard}:seen:github:abc");
    }
}
