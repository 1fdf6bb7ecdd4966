//! Periodic checks of the whole gateway's state:
//! - dead letters: the stored count as a metric, a loud warning when it
//!   passes `dead_letters.warn_above`, and (only when configured) deletion of
//!   dead letters older than `dead_letters.retention`, each logged and audited;
//! - the retry schedule's size as a metric;
//! - silence: a route with `expect_within` that has had no event for longer
//!   is marked silent (inventory, metric) and its owner told once, and again
//!   when events resume;
//! - lag: a route with `max_lag` whose oldest undelivered job is older is
//!   marked lagging (inventory, metric) and its owner told once, and again
//!   when it catches up;
//! - ordered routes' keys waiting and blocked, as metrics.
//!
//! The silent and lagging sets live in Redis, so exactly one gateway process
//! reports each change.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock::{now_ms, unix_ms};

use tokio_util::sync::CancellationToken;

use crate::alerts::Alerts;
use crate::config::{Config, Route};
use crate::queue::{AuditEntry, Queue, RouteMark, Stat};
use crate::telemetry::Metrics;

/// The window of ordered routes' key counts: like the other windows, they
/// are refreshed every quarter of it (5 s).
const ORDERED_WATCH: Duration = Duration::from_secs(20);
/// How often the count is read (and retention applied).
const WATCH_INTERVAL: Duration = Duration::from_secs(30);
/// Dead letters deleted per round at most, so one round stays short.
const RETENTION_BATCH: usize = 1000;
/// The audit log's token name for retention deletions.
const RETENTION_ACTOR: &str = "retention";

/// Runs until `shutdown`.
pub async fn run(
    config: Arc<Config>,
    queue: Queue,
    metrics: Arc<Metrics>,
    alerts: Arc<Alerts>,
    shutdown: CancellationToken,
) {
    // Short windows (tests, or strict policies) are checked promptly.
    let interval = config
        .routes
        .iter()
        .flat_map(|r| {
            [
                r.expect_within,
                r.max_lag,
                r.ordered.then_some(ORDERED_WATCH),
            ]
        })
        .flatten()
        .chain(config.dead_letters.retention)
        .map(|window| (window / 4).clamp(Duration::from_secs(1), WATCH_INTERVAL))
        .min()
        .unwrap_or(WATCH_INTERVAL);
    let mut warned = false;
    let mut lag_index_pruned = false;
    loop {
        if !lag_index_pruned {
            lag_index_pruned = prune_lag_index(&config, &queue).await;
        }
        watch_silence(&config, &queue, &metrics, &alerts).await;
        watch_lag(&config, &queue, &metrics, &alerts).await;
        watch_ordered_keys(&config, &queue, &metrics).await;
        match queue.retry_schedule_size().await {
            Ok(size) => {
                metrics.retry_scheduled.set(size as i64);
            }
            Err(err) => tracing::debug!(error = %err, "cannot read the retry schedule size"),
        }
        if let Some(retention) = config.dead_letters.retention {
            expire(&queue, retention).await;
        }
        match queue.dead_letter_count().await {
            Ok(count) => {
                metrics.dead_letters_stored.set(count as i64);
                let over = count > config.dead_letters.warn_above;
                if over && !warned {
                    tracing::warn!(
                        stored = count,
                        warn_above = config.dead_letters.warn_above,
                        "dead letters are piling up: see switchyard dlq list and the owners' runbooks"
                    );
                }
                warned = over;
            }
            Err(err) => tracing::debug!(error = %err, "cannot count dead letters"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

async fn watch_silence(config: &Config, queue: &Queue, metrics: &Metrics, alerts: &Arc<Alerts>) {
    let now = now_ms();
    for route in &config.routes {
        let Some(expect_within) = route.expect_within else {
            continue;
        };
        let since = match queue.watch_since(&route.name, now).await {
            Ok(since) => since,
            Err(err) => {
                tracing::debug!(error = %err, "cannot watch routes for silence now");
                return;
            }
        };
        let last = queue
            .stats(Stat::LastReceived, &[&route.name])
            .await
            .ok()
            .and_then(|v| v.into_iter().next().flatten())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_default();
        let quiet_for = Duration::from_millis(now.saturating_sub(last.max(since)));
        let silent = quiet_for > expect_within;
        metrics.silent(&route.name, silent);
        match queue
            .set_marked(RouteMark::Silent, &route.name, silent)
            .await
        {
            Ok(true) => {
                let quiet = humantime::format_duration(Duration::from_secs(quiet_for.as_secs()));
                if silent {
                    tracing::warn!(route = %route.name, quiet_for = %quiet, "route is silent");
                } else {
                    tracing::info!(route = %route.name, "route receives events again");
                }
                alerts.silence(route, silent, quiet_for);
            }
            Ok(false) => {}
            Err(err) => tracing::debug!(error = %err, "cannot record silence"),
        }
    }
}

/// Drops the lag index of routes without `max_lag` (left by a config that
/// had it); true once done.
async fn prune_lag_index(config: &Config, queue: &Queue) -> bool {
    let untracked: Vec<&str> = config
        .routes
        .iter()
        .filter(|r| r.max_lag.is_none() && !r.ordered)
        .map(|r| r.name.as_str())
        .collect();
    match queue.forget_lag(&untracked).await {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(error = %err, "cannot prune the lag index now");
            false
        }
    }
}

async fn watch_lag(config: &Config, queue: &Queue, metrics: &Metrics, alerts: &Arc<Alerts>) {
    let routes: Vec<&Route> = config
        .routes
        .iter()
        .filter(|r| r.max_lag.is_some())
        .collect();
    if routes.is_empty() {
        return;
    }
    let paused = match queue.flow_state().await {
        Ok(flow) => flow.paused,
        Err(err) => {
            tracing::debug!(error = %err, "cannot watch routes for lag now");
            return;
        }
    };
    // A paused route's held jobs wait on purpose: they count once it resumes.
    let asked: Vec<(&str, bool)> = routes
        .iter()
        .map(|r| (r.name.as_str(), !paused.contains_key(&r.name)))
        .collect();
    let oldest = match queue.oldest_undelivered(&asked).await {
        Ok(oldest) => oldest,
        Err(err) => {
            tracing::debug!(error = %err, "cannot watch routes for lag now");
            return;
        }
    };
    let now = now_ms();
    for (route, oldest) in routes.iter().zip(oldest) {
        let lag = Duration::from_millis(oldest.map_or(0, |ms| now.saturating_sub(ms)));
        metrics.lag(&route.name, lag);
        let lagging = route.max_lag.is_some_and(|max| lag > max);
        match queue
            .set_marked(RouteMark::Lagging, &route.name, lagging)
            .await
        {
            Ok(true) => {
                let behind = humantime::format_duration(Duration::from_secs(lag.as_secs()));
                if lagging {
                    tracing::warn!(route = %route.name, lag = %behind, "route is lagging");
                } else {
                    tracing::info!(route = %route.name, lag = %behind, "route has caught up");
                }
                alerts.lag(route, lagging, lag);
            }
            Ok(false) => {}
            Err(err) => tracing::debug!(error = %err, "cannot record lag"),
        }
    }
}

async fn watch_ordered_keys(config: &Config, queue: &Queue, metrics: &Metrics) {
    for route in config.routes.iter().filter(|r| r.ordered) {
        match queue.ordered_keys(&route.name).await {
            Ok(keys) => metrics.ordered_keys(&route.name, keys.active, keys.blocked_count),
            Err(err) => {
                tracing::debug!(error = %err, "cannot count ordered keys now");
                return;
            }
        }
    }
}

async fn expire(queue: &Queue, retention: Duration) {
    let now = SystemTime::now();
    let Some(cutoff) = now.checked_sub(retention) else {
        return;
    };
    let cutoff_ms = unix_ms(cutoff);
    let ids = match queue.dead_letters_before(cutoff_ms, RETENTION_BATCH).await {
        Ok(ids) => ids,
        Err(err) => {
            tracing::debug!(error = %err, "cannot read expired dead letters");
            return;
        }
    };
    for id in ids {
        match queue.delete_dead_letter(&id).await {
            Ok(true) => {
                tracing::info!(id, retention = %humantime::format_duration(retention), "dead letter expired");
                let entry = AuditEntry {
                    token: RETENTION_ACTOR,
                    action: "expire",
                    target: &id,
                    count: 1,
                    reason: "",
                    at_ms: unix_ms(now),
                };
                if let Err(err) = queue.audit(&entry).await {
                    tracing::warn!(error = %err, id, "cannot audit an expired dead letter");
                }
            }
            // Replayed or deleted meanwhile.
            Ok(false) => {}
            Err(err) => {
                tracing::debug!(error = %err, "cannot expire dead letters now");
                return;
            }
        }
    }
}
