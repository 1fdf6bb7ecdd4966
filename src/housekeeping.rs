//! Dead-letter housekeeping: the stored count as a metric, a loud warning
//! when it passes `dead_letters.warn_above`, and (only when configured)
//! deletion of dead letters older than `dead_letters.retention`. Nothing
//! expires silently: every deletion is logged and audited.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::queue::{AuditEntry, Queue};
use crate::telemetry::Metrics;

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
    shutdown: CancellationToken,
) {
    let interval = match config.dead_letters.retention {
        // A short retention (tests, or a strict policy) is applied promptly.
        Some(retention) => (retention / 4).clamp(Duration::from_secs(1), WATCH_INTERVAL),
        None => WATCH_INTERVAL,
    };
    let mut warned = false;
    loop {
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

async fn expire(queue: &Queue, retention: Duration) {
    let now = SystemTime::now();
    let Some(cutoff) = now.checked_sub(retention) else {
        return;
    };
    let cutoff_ms = cutoff
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
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
                    at_ms: now
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
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
