//! Delivery workers: read jobs from the stream through the consumer group,
//! deliver each to its route's destination, and move it on (delivered,
//! rescheduled, dead-lettered). Alongside, a scheduler moves due retries
//! back to the stream and a reclaimer takes over jobs left pending by dead
//! workers. Every state move is one atomic queue operation, so a crash can
//! repeat a delivery but never lose one (at-least-once).

mod backoff;
mod breaker;
mod client;
mod flow;
mod proxy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerts::Alerts;
use crate::clock::now_ms;
use crate::config::{Config, Destination, OnDeadLetter, Route};
use crate::queue::{
    AttemptRecord, Claimed, Completer, DeadReason, Entry, Job, NewDeadLetter, Partition, Queue,
    QueueError, Stat, ToHold,
};
use crate::telemetry::{LogThrottle, Metrics, RouteLabels, RouteOutcomeLabels};

pub use backoff::{next_delay, parse_retry_after};
pub use breaker::{Admission, Breaker, BreakerState};
pub use client::{NotAttempted, Outbound, Outcome};

pub use flow::Flow;

use breaker::Gates;

/// How long one read blocks waiting for new jobs; bounds how late shutdown
/// notices, not how late jobs are seen (a new job wakes the read at once).
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Jobs taken per read at most.
const READ_BATCH: usize = 64;
/// How often due retries are moved back; "a due retry starts within 1 s".
const PROMOTE_INTERVAL: Duration = Duration::from_millis(200);
/// Retries moved per script call, so one call never blocks Redis for long.
const PROMOTE_BATCH: usize = 500;
/// A consumer idle this long with no pending job belongs to a process that
/// is gone (a live one reads every second); it is removed from the group.
const CONSUMER_GONE_AFTER: Duration = Duration::from_secs(3600);
/// How often gone consumers are looked for.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);
/// Pause after a Redis error before the loop tries again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// How long a job waits when this process could not attempt it (out of file
/// descriptors, say): long enough for connections to close, short enough
/// that deliveries resume soon after.
const NOT_ATTEMPTED_WAIT: Duration = Duration::from_secs(1);
/// How late a job may come back for the send time its rate limiter reserved
/// and still use it: beyond the promotion interval and a read, so an on-time
/// job is never sent back, and small against a second, so late ones add
/// little to any one second's count.
const RATE_SLOT_SLACK: Duration = Duration::from_millis(500);
/// How often running short of our own resources is logged at most: it
/// happens to every job at once.
const NOT_ATTEMPTED_LOG_EVERY: Duration = Duration::from_secs(10);

/// A route as delivery needs it, with its metrics looked up once (not by
/// label per attempt).
struct RouteState {
    route: Route,
    delivered_attempts: Counter,
    retryable_attempts: Counter,
    rejected_attempts: Counter,
    attempt_latency: Histogram,
    end_to_end_latency: Histogram,
}

impl RouteState {
    fn new(route: &Route, metrics: &Metrics) -> Self {
        let attempts = |outcome: &str| {
            metrics
                .delivery_attempts
                .get_or_create(&RouteOutcomeLabels {
                    route: route.name.clone(),
                    outcome: outcome.to_owned(),
                })
                .clone()
        };
        let labels = RouteLabels {
            route: route.name.clone(),
        };
        Self {
            delivered_attempts: attempts(Outcome::DELIVERED),
            retryable_attempts: attempts(Outcome::RETRYABLE),
            rejected_attempts: attempts(Outcome::REJECTED),
            attempt_latency: metrics.attempt_latency.get_or_create(&labels).clone(),
            end_to_end_latency: metrics.end_to_end_latency.get_or_create(&labels).clone(),
            route: route.clone(),
        }
    }

    /// Counts one attempt by outcome and records its latency.
    fn record_attempt(&self, outcome: &Outcome, latency: Duration) {
        match outcome {
            Outcome::Delivered { .. } => &self.delivered_attempts,
            Outcome::Retryable { .. } => &self.retryable_attempts,
            Outcome::Rejected { .. } => &self.rejected_attempts,
        }
        .inc();
        self.attempt_latency.observe(latency.as_secs_f64());
    }

    /// Records the end-to-end latency of a delivered job.
    fn record_delivered(&self, received_ms: u64, delivered_ms: u64) {
        let seconds = delivered_ms.saturating_sub(received_ms) as f64 / 1000.0;
        self.end_to_end_latency.observe(seconds);
    }
}

/// The delivery engine of one gateway process.
pub struct Engine {
    config: Arc<Config>,
    routes: HashMap<String, RouteState>,
    queue: Queue,
    completer: Completer,
    metrics: Arc<Metrics>,
    outbound: Outbound,
    gates: Gates,
    slots: Arc<Semaphore>,
    consumer: String,
    tasks: TaskTracker,
    alerts: Arc<Alerts>,
    not_attempted_log: LogThrottle,
    flow: Arc<Flow>,
}

impl Engine {
    /// An engine for `config`; `consumer` names this process in the group.
    /// Call it inside a Tokio runtime: it starts the completer's task.
    pub fn new(
        config: Arc<Config>,
        queue: Queue,
        metrics: Arc<Metrics>,
        alerts: Arc<Alerts>,
        consumer: String,
    ) -> Arc<Self> {
        let routes = config
            .routes
            .iter()
            .map(|r| (r.name.clone(), RouteState::new(r, &metrics)))
            .collect();
        let flow = Arc::new(Flow::new(
            config.clone(),
            queue.clone(),
            metrics.clone(),
            consumer.clone(),
        ));
        Arc::new(Self {
            routes,
            gates: Gates::new(config.delivery.breaker),
            slots: Arc::new(Semaphore::new(config.delivery.concurrency)),
            outbound: Outbound::new(&config.delivery.ca_certificates),
            config,
            completer: queue.completer(),
            queue,
            metrics,
            consumer,
            tasks: TaskTracker::new(),
            alerts,
            not_attempted_log: LogThrottle::new(NOT_ATTEMPTED_LOG_EVERY),
            flow,
        })
    }

    /// This process's view of pauses and drains.
    pub fn flow(&self) -> Arc<Flow> {
        self.flow.clone()
    }

    /// Runs until `shutdown`; then stops reading and waits up to `deadline`
    /// for attempts in flight. Jobs not finished stay pending in the group
    /// and are reclaimed by the next worker after the visibility timeout.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, deadline: Duration) {
        tracing::info!(consumer = %self.consumer, "delivery workers starting");
        if !self.queue.register_partitions_until_done(&shutdown).await {
            return;
        }
        // Paused routes are known before the first read, also after a restart.
        while let Err(err) = self.flow.refresh().await {
            self.redis_failed("flow_state", &err, &shutdown).await;
            if shutdown.is_cancelled() {
                return;
            }
        }
        // One blocking reader per partition: on a cluster each may be on
        // another primary, and one partition's reads never wait on another's.
        let mut loops: Vec<_> = self
            .queue
            .partitions()
            .iter()
            .map(|partition| {
                tokio::spawn(self.clone().read_loop(partition.clone(), shutdown.clone()))
            })
            .collect();
        loops.push(tokio::spawn(self.clone().reclaim_loop(shutdown.clone())));
        loops.push(tokio::spawn(self.clone().promote_loop(shutdown.clone())));
        loops.push(tokio::spawn(
            self.flow.clone().refresh_loop(shutdown.clone()),
        ));
        loops.push(tokio::spawn(self.flow.clone().drain_loop(shutdown.clone())));
        for handle in loops {
            if let Err(err) = handle.await {
                tracing::error!(error = %err, "delivery loop ended abnormally");
            }
        }
        self.tasks.close();
        if tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.tasks.len(),
                "shutdown deadline passed; unfinished jobs stay pending for another worker"
            );
        }
        tracing::info!("delivery workers stopped");
    }

    async fn read_loop(self: Arc<Self>, partition: Partition, shutdown: CancellationToken) {
        let mut reader = match self.queue.reader(&partition, &self.consumer, READ_BLOCK) {
            Ok(reader) => reader,
            Err(err) => {
                tracing::error!(error = %err, "cannot set up the job reader");
                return;
            }
        };
        let mut group_ready = false;
        while !shutdown.is_cancelled() {
            if !group_ready {
                match self.queue.ensure_group(&partition).await {
                    Ok(()) => group_ready = true,
                    Err(err) => {
                        self.redis_failed("ensure_group", &err, &shutdown).await;
                        continue;
                    }
                }
            }
            // Each partition's reader holds its slots while it blocks, so
            // each asks for its share of the free ones.
            let share = self.slots.available_permits() / self.queue.partitions().len();
            let wanted = share.clamp(1, READ_BATCH);
            let permits = tokio::select! {
                () = shutdown.cancelled() => return,
                permits = self.slots.clone().acquire_many_owned(wanted as u32) => match permits {
                    Ok(permits) => permits,
                    Err(_) => return,
                },
            };
            let jobs = tokio::select! {
                () = shutdown.cancelled() => return,
                jobs = reader.read(wanted) => jobs,
            };
            match jobs {
                Ok(jobs) => self.take(jobs, permits).await,
                Err(err) => {
                    // A NOGROUP after a Redis restart without persistence, say.
                    group_ready = false;
                    self.redis_failed("read", &err, &shutdown).await;
                }
            }
        }
    }

    async fn reclaim_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let visibility = self.config.delivery.visibility_timeout;
        let every = (visibility / 4).clamp(Duration::from_millis(500), Duration::from_secs(15));
        let mut last_prune = Instant::now();
        loop {
            if last_prune.elapsed() >= PRUNE_INTERVAL {
                last_prune = Instant::now();
                for partition in self.queue.partitions().iter() {
                    match self
                        .queue
                        .prune_consumers(partition, CONSUMER_GONE_AFTER)
                        .await
                    {
                        Ok(gone) if !gone.is_empty() => {
                            tracing::info!(consumers = ?gone, partition = %partition.tag, "removed consumers of processes that are gone");
                        }
                        Ok(_) => {}
                        Err(err) => tracing::debug!(error = %err, "cannot prune consumers now"),
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            for partition in self.queue.partitions().iter() {
                if !self.reclaim(partition, visibility).await {
                    self.redis_failed_pause(&shutdown).await;
                }
            }
        }
    }

    /// Takes over what `partition` holds pending past the visibility
    /// timeout; false after a Redis error.
    async fn reclaim(self: &Arc<Self>, partition: &Partition, visibility: Duration) -> bool {
        let wanted = self.slots.available_permits().min(READ_BATCH);
        let Ok(permits) = self.slots.clone().try_acquire_many_owned(wanted as u32) else {
            return true;
        };
        if wanted == 0 {
            return true;
        }
        match self
            .queue
            .claim_stale(partition, &self.consumer, visibility, wanted)
            .await
        {
            Ok(jobs) => {
                if !jobs.is_empty() {
                    tracing::warn!(
                        count = jobs.len(),
                        partition = %partition.tag,
                        "took over jobs left pending by another worker"
                    );
                    self.metrics.jobs_reclaimed.inc_by(jobs.len() as u64);
                }
                self.take(jobs, permits).await;
                true
            }
            Err(err) => {
                self.redis_error("reclaim", &err);
                false
            }
        }
    }

    async fn promote_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(PROMOTE_INTERVAL) => {}
            }
            for partition in self.queue.partitions().iter() {
                loop {
                    match self
                        .queue
                        .promote_due(partition, now_ms(), PROMOTE_BATCH)
                        .await
                    {
                        Ok(moved) if moved == PROMOTE_BATCH => continue,
                        Ok(_) => break,
                        Err(err) => {
                            // One partition's primary gone must not hold up the others.
                            self.redis_error("promote", &err);
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Holds the jobs of `jobs` that their route's flow holds (paused, or
    /// in line behind held jobs) before any other read of the partition;
    /// starts the others.
    async fn take(self: &Arc<Self>, jobs: Vec<Claimed>, permits: OwnedSemaphorePermit) {
        // A drain puts jobs back only for routes that are not paused: one
        // that looks paused here means this process has not yet seen the
        // resume (it reads the flow state every 500 ms), so it looks again
        // rather than hold the first jobs of the drain a second time.
        let stale = jobs.iter().any(|claimed| {
            claimed.released.is_some()
                && claimed
                    .job
                    .as_ref()
                    .is_ok_and(|job| self.flow.holds(&job.route, true))
        });
        if stale && let Err(err) = self.flow.refresh().await {
            self.redis_error("flow_state", &err);
        }
        let (held, go): (Vec<Claimed>, Vec<Claimed>) = jobs.into_iter().partition(|claimed| {
            claimed
                .job
                .as_ref()
                .is_ok_and(|job| self.flow.holds(&job.route, claimed.released.is_some()))
        });
        self.dispatch(go, permits);
        let mut by_route: Vec<(&str, &Partition, Vec<ToHold<'_>>)> = Vec::new();
        for claimed in &held {
            let Ok(job) = &claimed.job else { continue };
            let encoded = ToHold {
                entry_id: &claimed.entry.id,
                place: claimed.released.as_deref().unwrap_or(&claimed.entry.id),
                job_id: &job.id,
                job: job.encode(),
            };
            match by_route.iter_mut().find(|(route, partition, _)| {
                *route == job.route && partition.index == claimed.entry.partition.index
            }) {
                Some((_, _, jobs)) => jobs.push(encoded),
                None => by_route.push((&job.route, &claimed.entry.partition, vec![encoded])),
            }
        }
        for (route, partition, jobs) in by_route {
            match self.queue.hold(partition, route, &jobs, false).await {
                Ok(held) => {
                    self.flow.note_holding(route);
                    for _ in 0..held {
                        self.metrics.deferred(route, "held");
                    }
                }
                // They stay pending, and are read again after the
                // visibility timeout.
                Err(err) => self.redis_error("hold", &err),
            }
        }
    }

    /// Starts one task per job, each holding one of `permits`.
    fn dispatch(self: &Arc<Self>, jobs: Vec<Claimed>, mut permits: OwnedSemaphorePermit) {
        for claimed in jobs {
            let Some(permit) = permits.split(1) else {
                // Never more jobs than permits were asked for; keep it safe anyway.
                tracing::error!("more jobs than delivery slots; leaving the rest pending");
                return;
            };
            let engine = self.clone();
            self.tasks.spawn(async move {
                engine.handle(claimed).await;
                drop(permit);
            });
        }
    }

    async fn redis_failed(&self, operation: &str, err: &QueueError, shutdown: &CancellationToken) {
        self.redis_error(operation, err);
        self.redis_failed_pause(shutdown).await;
    }

    fn redis_error(&self, operation: &str, err: &QueueError) {
        self.metrics.redis_error(operation);
        tracing::warn!(operation, error = %err, "delivery: redis operation failed; retrying");
    }

    async fn redis_failed_pause(&self, shutdown: &CancellationToken) {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(ERROR_PAUSE) => {}
        }
    }

    /// One job, from the stream to its next state.
    async fn handle(&self, claimed: Claimed) {
        let Claimed {
            entry,
            job,
            released,
        } = claimed;
        let mut job = match job {
            Ok(job) => job,
            Err(err) => {
                tracing::error!(entry_id = %entry.id, error = %err, "undecodable job; dead-lettering it as is");
                self.dead_letter_undecodable(&entry).await;
                return;
            }
        };
        let Some(state) = self.routes.get(&job.route) else {
            self.dead_letter(&entry, &job, None, DeadReason::Unroutable, None)
                .await;
            return;
        };
        let route = &state.route;
        let destination = &route.destination;
        let gate = self
            .gates
            .gate(destination.url.as_str(), destination.max_in_flight);
        let (admission, change) = gate.admit(Instant::now());
        self.breaker_changed(destination.url.as_str(), change).await;
        if let Admission::WaitUntil(_) = admission {
            self.park(&entry, &job, route, released.as_deref(), "breaker_open")
                .await;
            return;
        }
        // A job waiting in line holds one of the process's slots; the line
        // is only as long as the destination clears within MAX_SLOT_WAIT, so
        // a slow destination holds few slots beyond its own. One that was
        // quick and stops answering can fill the spare slots for one
        // MAX_SLOT_WAIT; its line then shrinks as it makes no progress.
        let Some(_slot) = gate.slot(destination.timeout).await else {
            gate.not_attempted(Instant::now());
            self.park(
                &entry,
                &job,
                route,
                released.as_deref(),
                "destination_saturated",
            )
            .await;
            return;
        };
        if let Some(wait) = self.rate_wait(&mut job, destination).await {
            // The slot goes back with the job: waiting for its send time
            // holds nothing of this process.
            self.defer(&entry, &job, route, wait, "rate_limited").await;
            return;
        }

        let started_ms = now_ms();
        let (outcome, latency) = match self.outbound.attempt(destination, &job).await {
            Ok(attempted) => attempted,
            Err(NotAttempted { error }) => {
                // Not the destination's fault: no attempt spent, no breaker
                // count, no failure recorded for the route.
                gate.not_attempted(Instant::now());
                if let Some(deferred) = self.not_attempted_log.note() {
                    tracing::warn!(
                        route = %route.name,
                        error = %error,
                        deferred,
                        "this process is short of its own resources (file descriptors, local ports); \
                         jobs are put back without spending an attempt"
                    );
                }
                let wait = NOT_ATTEMPTED_WAIT + jitter(1000);
                self.defer(&entry, &job, route, wait, "local_resources")
                    .await;
                return;
            }
        };
        let change = gate.record(
            !matches!(outcome, Outcome::Retryable { .. }),
            latency,
            Instant::now(),
        );
        self.breaker_changed(destination.url.as_str(), change).await;
        if !matches!(outcome, Outcome::Delivered { .. })
            && let Err(err) = self
                .queue
                .set_stat(Stat::LastFailure, &route.name, &started_ms.to_string())
                .await
        {
            self.metrics.redis_error("stats");
            tracing::debug!(error = %err, "cannot record the last failure");
        }
        state.record_attempt(&outcome, latency);
        let error = match &outcome {
            Outcome::Retryable { error, .. } | Outcome::Rejected { error, .. } => error.clone(),
            Outcome::Delivered { .. } => None,
        };
        tracing::info!(
            event_id = %job.event_id,
            job_id = %job.id,
            source = %job.source,
            route = %route.name,
            owner = %route.owner,
            attempt = job.attempt,
            outcome = outcome.label(),
            status = outcome.status(),
            latency_ms = latency.as_millis() as u64,
            // What went wrong when nothing was answered; an answer's body
            // may carry the event's data, so it stays in the dead letter.
            error = outcome.status().is_none().then_some(error.as_deref()).flatten(),
            "delivery attempt"
        );
        job.history.push(AttemptRecord {
            attempt: job.attempt,
            at_ms: started_ms,
            status: outcome.status(),
            error,
            latency_ms: latency.as_millis() as u64,
        });

        match outcome {
            Outcome::Delivered { .. } => {
                self.settle("complete", self.completer.complete(&entry, &job).await);
                state.record_delivered(job.received_ms, now_ms());
            }
            Outcome::Rejected { status, .. } => {
                self.dead_letter(
                    &entry,
                    &job,
                    Some(route),
                    DeadReason::Rejected,
                    Some(status),
                )
                .await;
            }
            Outcome::Retryable {
                status,
                retry_after,
                ..
            } => {
                if job.attempt >= route.retry.max_attempts {
                    self.dead_letter(&entry, &job, Some(route), DeadReason::Exhausted, status)
                        .await;
                    return;
                }
                let delay = next_delay(&route.retry, job.attempt, retry_after, &mut rand::rng());
                job.attempt += 1;
                let due = now_ms() + delay.as_millis() as u64;
                self.settle(
                    "reschedule",
                    self.queue
                        .reschedule(&entry, &job, due)
                        .await
                        .map(|n| n.is_some()),
                );
            }
        }
    }

    /// Logs, counts and publishes (for the inventory) a breaker's new state.
    async fn breaker_changed(&self, destination: &str, change: Option<BreakerState>) {
        let Some(state) = change else {
            return;
        };
        tracing::warn!(
            destination,
            breaker = state.as_str(),
            "circuit breaker changed"
        );
        self.metrics.breaker(destination, state.openness());
        if let Err(err) = self
            .queue
            .set_stat(Stat::Breaker, destination, state.as_str())
            .await
        {
            self.metrics.redis_error("stats");
            tracing::debug!(error = %err, "cannot publish the breaker state");
        }
    }

    /// How long `job` must wait for its destination's rate limit: `None` to
    /// go now. A job asks the limiter once per attempt and waits for the
    /// send time it reserved; back in time (within [`RATE_SLOT_SLACK`]) it
    /// goes without asking again. One that comes back later than that
    /// reserves anew, so late jobs cannot bunch into a burst above the limit.
    /// A limiter that cannot be asked holds the job a moment: the limit is
    /// a promise to the destination, so nothing goes unpaced.
    async fn rate_wait(&self, job: &mut Job, destination: &Destination) -> Option<Duration> {
        let limit = destination.rate_limit?;
        let now = now_ms();
        if let Some(slot) = job.rate_slot_ms.take()
            && now <= slot + RATE_SLOT_SLACK.as_millis() as u64
        {
            return None;
        }
        match self
            .queue
            .reserve_send(destination.url.as_str(), limit)
            .await
        {
            Ok(wait) if wait.is_zero() => None,
            Ok(wait) => {
                job.rate_slot_ms = Some(now + wait.as_millis() as u64);
                Some(wait)
            }
            Err(err) => {
                self.metrics.redis_error("rate_limit");
                tracing::warn!(error = %err, "cannot reach the rate limiter; the job waits");
                Some(NOT_ATTEMPTED_WAIT + jitter(1000))
            }
        }
    }

    /// Puts a job back in the schedule for `wait` without spending an attempt.
    async fn defer(
        &self,
        entry: &Entry,
        job: &Job,
        route: &Route,
        wait: Duration,
        reason: &'static str,
    ) {
        self.metrics.deferred(&route.name, reason);
        let due = now_ms() + wait.as_millis() as u64;
        let moved = self.queue.reschedule(entry, job, due).await;
        self.settle("defer", moved.map(|n| n.is_some()));
    }

    /// Holds a job its destination cannot take now (see [`flow`]) without
    /// spending an attempt: it waits without Redis work until the drain
    /// puts it back at the pace the destination takes, and the route's
    /// later jobs take their turn behind it. One the drain had `released`
    /// keeps its place in line, and is counted: it tells the drain to go
    /// slower.
    async fn park(
        &self,
        entry: &Entry,
        job: &Job,
        route: &Route,
        released: Option<&str>,
        reason: &'static str,
    ) {
        self.metrics.deferred(&route.name, reason);
        let parked = ToHold {
            entry_id: &entry.id,
            place: released.unwrap_or(&entry.id),
            job_id: &job.id,
            job: job.encode(),
        };
        match self
            .queue
            .hold(&entry.partition, &route.name, &[parked], released.is_some())
            .await
        {
            Ok(held) => {
                self.flow.note_holding(&route.name);
                self.settle("park", Ok(held == 1));
            }
            Err(err) => self.settle("park", Err(err)),
        }
    }

    async fn dead_letter(
        &self,
        entry: &Entry,
        job: &Job,
        route: Option<&Route>,
        reason: DeadReason,
        status: Option<u16>,
    ) {
        let owner = route.and_then(|r| self.config.owner_of(r));
        let dead = NewDeadLetter {
            id: &job.id,
            job: job.encode(),
            route: &job.route,
            source: &job.source,
            event_id: &job.event_id,
            owner: route.map_or("", |r| r.owner.as_str()),
            team: owner.map_or("", |o| o.team.as_str()),
            contact: owner.map_or("", |o| o.contact.as_str()),
            runbook: owner.and_then(|o| o.runbook.as_deref()).unwrap_or_default(),
            destination: route.map_or("", |r| r.destination.url.as_str()),
            reason,
            status,
            attempts: job.history.len(),
            failed_ms: now_ms(),
            ordering_key: job.ordering_key.as_deref(),
            blocks_key: route.is_some_and(|r| r.on_dead_letter == OnDeadLetter::Block),
        };
        tracing::warn!(
            event_id = %job.event_id,
            job_id = %job.id,
            route = %job.route,
            owner = dead.owner,
            reason = reason.as_str(),
            status,
            attempts = job.history.len(),
            "dead letter"
        );
        self.metrics
            .dead_lettered(&job.route, dead.owner, reason.as_str());
        let moved = self.queue.dead_letter(entry, &dead).await;
        // A dead letter the replicas did not confirm in time stands on the
        // primary (its script ran), so its owner is told. Should the primary
        // die before a replica has it, the job is pending again on the
        // promoted replica and comes back here: the owner may hear twice,
        // never not at all.
        let written = matches!(moved, Ok(true) | Err(QueueError::NotReplicated { .. }));
        if let (true, Some(route)) = (written, route) {
            let reason = match status {
                Some(status) => format!("{} ({status})", reason.as_str()),
                None => reason.as_str().to_owned(),
            };
            self.alerts.record(route, &reason);
        }
        self.settle("dead_letter", moved);
    }

    async fn dead_letter_undecodable(&self, entry: &Entry) {
        let dead = NewDeadLetter {
            id: &entry.id,
            job: Vec::new(),
            route: "",
            source: "",
            event_id: "",
            owner: "",
            team: "",
            contact: "",
            runbook: "",
            destination: "",
            reason: DeadReason::Undecodable,
            status: None,
            attempts: 0,
            failed_ms: now_ms(),
            ordering_key: None,
            blocks_key: false,
        };
        self.metrics
            .dead_lettered("", "", DeadReason::Undecodable.as_str());
        self.settle("dead_letter", self.queue.dead_letter(entry, &dead).await);
    }

    /// Logs the end of a state move. `Ok(false)`: another worker had taken
    /// the job over (ours ran past the visibility timeout) and moved it.
    /// An error leaves the job pending; it is reclaimed and retried later.
    fn settle(&self, operation: &str, result: Result<bool, QueueError>) {
        match result {
            Ok(true) => {}
            Ok(false) => tracing::info!(operation, "job already moved by another worker"),
            Err(err @ QueueError::NotReplicated { .. }) => {
                self.metrics.redis_error(operation);
                tracing::warn!(operation, error = %err, "job moved on the primary, not yet on its replicas; a failover before they have it moves it again");
            }
            Err(err) => {
                self.metrics.redis_error(operation);
                tracing::error!(operation, error = %err, "cannot move job; it stays pending and will be retried");
            }
        }
    }
}

fn jitter(max_ms: u64) -> Duration {
    Duration::from_millis(rand::rng().random_range(0..=max_ms))
}
