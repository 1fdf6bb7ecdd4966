//! Replay jobs: bulk replays run detached from the request that asked for
//! them, at an optional pace, with progress in Redis, a cancel, and one
//! audit entry when they start and one when they end.
//!
//! The request fixes the list of dead letters to replay and records the job
//! as running; then any gateway process may run it, one at a time (a lease
//! in Redis). Every process looks for running jobs nobody runs, so a job
//! whose process is gone (killed, restarted, or simply stopped) is taken on
//! by another, or by the same one after its restart, from where it stopped.
//! An item is replayed and then counted: a crash between the two leaves the
//! replayed dead letter gone, so the job counts it `gone` when it takes it
//! on again, never replays it twice.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::Rate;
use crate::queue::{
    AuditEntry, DeadLetterFilter, NewReplay, Queue, QueueError, ReplayOutcome, ReplayRecord,
    ReplayState, Replayed,
};
use crate::telemetry::Metrics;

/// How often each process looks for replay jobs nobody runs.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// The lease on one job: renewed every [`LOOK_EVERY`]; a job whose process
/// is gone is taken on this long after.
const LEASE_TTL: Duration = Duration::from_secs(5);
/// Items read per step; a cancel is noticed between steps.
const STEP_ITEMS: usize = 20;
/// Pause after a Redis error before the job goes on.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

/// A replay job as its request asks for it.
#[derive(Debug, Clone)]
pub struct ReplayRequest<'a> {
    /// The admin token's name.
    pub by: &'a str,
    /// Which dead letters.
    pub filter: &'a DeadLetterFilter,
    /// The filter as the audit log and the API show it (JSON).
    pub filter_json: &'a str,
    /// The routes of the running config: others' dead letters are skipped.
    pub configured: &'a [&'a str],
    /// The pace, if any.
    pub rate: Option<Rate>,
}

/// The replay jobs of this process.
pub struct Replays {
    queue: Queue,
    metrics: Arc<Metrics>,
    holder: String,
    running_here: Mutex<HashSet<String>>,
    wake: Notify,
}

impl Replays {
    /// Replay jobs run by this process, named `holder` for their leases.
    pub fn new(queue: Queue, metrics: Arc<Metrics>, holder: String) -> Arc<Self> {
        Arc::new(Self {
            queue,
            metrics,
            holder,
            running_here: Mutex::default(),
            wake: Notify::new(),
        })
    }

    /// Starts a replay job of what `request` selects; its record.
    pub async fn start(&self, request: &ReplayRequest<'_>) -> Result<ReplayRecord, QueueError> {
        let (items, skipped) = self
            .queue
            .matching_dead_letters(request.filter, request.configured)
            .await?;
        let id = ulid::Ulid::generate().to_string();
        let rate = request.rate.map(|r| r.to_string()).unwrap_or_default();
        self.queue
            .create_replay(
                &NewReplay {
                    id: &id,
                    by: request.by,
                    filter: request.filter_json,
                    rate: &rate,
                    skipped,
                    started_ms: now_ms(),
                },
                &items,
            )
            .await?;
        let pace = if rate.is_empty() {
            String::new()
        } else {
            format!(" at {rate}")
        };
        self.audit(
            request.by,
            "bulk_replay_start",
            request.filter_json,
            items.len(),
            &format!("replay job {id}{pace}"),
        )
        .await;
        self.wake.notify_one();
        self.queue
            .replay_record(&id)
            .await?
            .ok_or_else(|| QueueError::UnexpectedReply {
                url: self.queue.display_url().to_owned(),
                script: "replay record",
            })
    }

    /// Takes on running replay jobs nobody runs, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            match self.queue.running_replays().await {
                Ok(ids) => {
                    for id in ids {
                        self.take_on(id, &shutdown).await;
                    }
                }
                Err(err) => {
                    self.metrics.redis_error("replay");
                    tracing::debug!(error = %err, "cannot look for replay jobs now");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(LOOK_EVERY) => {}
            }
        }
    }

    async fn take_on(self: &Arc<Self>, id: String, shutdown: &CancellationToken) {
        if self.running_here().contains(&id) {
            return;
        }
        match self
            .queue
            .lease(&lease_task(&id), &self.holder, LEASE_TTL)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                tracing::debug!(error = %err, replay = %id, "cannot take the replay job's lease now");
                return;
            }
        }
        self.running_here().insert(id.clone());
        let (replays, shutdown) = (self.clone(), shutdown.clone());
        tokio::spawn(async move {
            replays.run_job(&id, &shutdown).await;
            replays.running_here().remove(&id);
        });
    }

    fn running_here(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running_here.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs job `id` while this process holds its lease.
    async fn run_job(&self, id: &str, shutdown: &CancellationToken) {
        let mut renewed = Instant::now();
        let mut next_send = Instant::now();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            if renewed.elapsed() >= LOOK_EVERY {
                match self
                    .queue
                    .lease(&lease_task(id), &self.holder, LEASE_TTL)
                    .await
                {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => {
                        tracing::warn!(replay = %id, "lost the replay job's lease; another process goes on with it");
                        return;
                    }
                    Err(err) => {
                        self.pause_after(&err, shutdown).await;
                        continue;
                    }
                }
            }
            let record = match self.queue.replay_record(id).await {
                Ok(Some(record)) => record,
                Ok(None) => return,
                Err(err) => {
                    self.pause_after(&err, shutdown).await;
                    continue;
                }
            };
            if record.state != ReplayState::Running.as_str() {
                return;
            }
            if record.cancel {
                self.finish(&record, ReplayState::Cancelled).await;
                return;
            }
            if record.next == 0 {
                tracing::info!(replay = %id, matched = record.matched, rate = %record.rate, "replay job running");
            }
            let items = match self.queue.replay_items(id, record.next, STEP_ITEMS).await {
                Ok(items) => items,
                Err(err) => {
                    self.pause_after(&err, shutdown).await;
                    continue;
                }
            };
            if items.is_empty() {
                self.finish(&record, ReplayState::Done).await;
                return;
            }
            let interval = record.rate.parse::<Rate>().ok().map(Rate::interval);
            for (offset, (tag, letter)) in items.iter().enumerate() {
                if let Some(interval) = interval {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep_until(next_send) => {}
                    }
                    // After a stall, go on at the pace rather than catch up.
                    next_send = (next_send + interval).max(Instant::now() - interval);
                }
                let index = record.next + offset as u64;
                let outcome = match self.queue.replay_dead_letter_in(tag, letter).await {
                    Ok(Replayed::Yes) => ReplayOutcome::Replayed,
                    Ok(Replayed::NotFound) => ReplayOutcome::Gone,
                    Ok(Replayed::Undecodable) => ReplayOutcome::Undecodable,
                    Err(err) => {
                        self.pause_after(&err, shutdown).await;
                        break;
                    }
                };
                if let Err(err) = self.queue.replay_step(id, index, outcome).await {
                    // The item is replayed but not counted: taken on again,
                    // it counts as gone.
                    self.pause_after(&err, shutdown).await;
                    break;
                }
            }
        }
    }

    async fn finish(&self, record: &ReplayRecord, state: ReplayState) {
        if let Err(err) = self.queue.finish_replay(&record.id, state, now_ms()).await {
            tracing::warn!(error = %err, replay = %record.id, "cannot record the end of the replay job; it will be finished again");
            return;
        }
        let remaining = record.matched.saturating_sub(record.next);
        let summary = format!(
            "replay job {} {}: {} replayed, {} gone before their turn, {} undecodable, {} not replayed, {} skipped (route not configured)",
            record.id,
            state.as_str(),
            record.replayed,
            record.gone,
            record.undecodable,
            remaining,
            record.skipped
        );
        tracing::info!(replay = %record.id, state = state.as_str(), replayed = record.replayed, remaining, "replay job ended");
        self.audit(
            &record.by,
            "bulk_replay_end",
            &record.filter,
            record.replayed as usize,
            &summary,
        )
        .await;
    }

    async fn audit(&self, token: &str, action: &str, target: &str, count: usize, reason: &str) {
        let entry = AuditEntry {
            token,
            action,
            target,
            count,
            reason,
            at_ms: now_ms(),
        };
        tracing::info!(token, action, target, count, reason, "admin action");
        if let Err(err) = self.queue.audit(&entry).await {
            tracing::error!(error = %err, token, action, target, "cannot write the audit log");
        }
    }

    async fn pause_after(&self, err: &QueueError, shutdown: &CancellationToken) {
        self.metrics.redis_error("replay");
        tracing::warn!(error = %err, "replay job: redis operation failed; going on shortly");
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(ERROR_PAUSE) => {}
        }
    }
}

fn lease_task(id: &str) -> String {
    format!("replay:{id}")
}
