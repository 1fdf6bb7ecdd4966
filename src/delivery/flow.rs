//! Pause, resume and drain, as every delivery process follows them.
//!
//! Each process keeps a view of the flow state in Redis (paused routes,
//! drain paces, routes with held jobs), refreshed every
//! [`REFRESH_INTERVAL`] and loaded before its first read, so a pause is
//! obeyed by every process within a second and after any restart. A job
//! read for a paused route, or for a route whose held jobs are still
//! draining (so it takes its turn behind them), is held rather than
//! attempted.
//!
//! Jobs its destination cannot take now (breaker open, every slot busy) are
//! held the same way, parked: they wait there without any Redis work until
//! the drain puts them back, and later jobs of the route take their turn
//! behind them.
//!
//! One process at a time (a lease in Redis) drains: it puts held jobs of
//! routes that are not paused back on the stream, oldest ack first across
//! partitions, at the route's drain pace: the rate given on resume, capped by
//! the destination's `rate_limit`; else as fast as the destination takes
//! them, found by feedback (see [`next_unpaced_rate`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::queue::{FlowState, HeldJob, Partition, Queue, QueueError, Stat};
use crate::telemetry::Metrics;

/// How often each process reads the flow state: a pause is obeyed within it
/// (and the time a job already read takes to start).
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(500);
/// The drain's step while something drains: fine enough that a paced drain
/// of up to 200/s puts jobs back one at a time, each on its own, so that
/// two processes taking consecutive ones cannot swap them.
const DRAIN_TICK: Duration = Duration::from_millis(5);
/// The drain's wait while nothing drains.
const IDLE_TICK: Duration = Duration::from_millis(200);
/// The drain lease: renewed every second, lost by a process gone this long.
const LEASE_TTL: Duration = Duration::from_secs(3);
const LEASE_RENEW: Duration = Duration::from_secs(1);
const LEASE_TASK: &str = "drain";
/// Where an unpaced drain starts, jobs per second.
const UNPACED_START: f64 = 100.0;
/// The fastest an unpaced drain goes (200 per step).
const UNPACED_MAX: f64 = 40_000.0;
/// The slowest: a trickle that finds out when a destination is back.
const UNPACED_MIN: f64 = 1.0;
/// How often an unpaced drain compares what it put back with what its
/// destination took.
const UNPACED_ADJUST: Duration = Duration::from_secs(1);
/// How much pace a stalled drain (a slow Redis, a busy CPU) may make up
/// afterwards, at most one step's worth (at least one job) per step; so a
/// drain keeps its rate over a run without sending bursts.
const PACE_CREDIT: Duration = Duration::from_millis(500);
/// How often a drain looks again at partitions where it found nothing held.
const RESCAN_INTERVAL: Duration = Duration::from_millis(500);
/// Held jobs read ahead per partition at least.
const READ_AHEAD: usize = 32;

#[derive(Default)]
struct View {
    state: FlowState,
    /// Routes with held jobs anywhere, as last read or since held here.
    holding: HashSet<String>,
}

/// This process's view of the flow state, and the drain.
pub struct Flow {
    queue: Queue,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    holder: String,
    view: RwLock<View>,
}

impl Flow {
    /// A view for `config`; `holder` names this process for the drain lease.
    pub fn new(config: Arc<Config>, queue: Queue, metrics: Arc<Metrics>, holder: String) -> Self {
        Self {
            queue,
            config,
            metrics,
            holder,
            view: RwLock::default(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|e| e.into_inner())
    }

    fn configured(&self, route: &str) -> bool {
        self.config.routes.iter().any(|r| r.name == route)
    }

    /// Whether a job of `route` read now is held instead of attempted. A
    /// pause of a route no longer configured holds nothing: its jobs go on
    /// to become `unroutable` dead letters, as without the pause.
    pub fn holds(&self, route: &str, released: bool) -> bool {
        let view = self.read();
        (view.state.paused.contains_key(route) && self.configured(route))
            || (!released && view.holding.contains(route))
    }

    /// Jobs of `route` were just held here.
    pub fn note_holding(&self, route: &str) {
        self.write().holding.insert(route.to_owned());
    }

    /// Reads the flow state from Redis, and sets the held and paused gauges.
    pub async fn refresh(&self) -> Result<(), QueueError> {
        let state = self.queue.flow_state().await?;
        let holding: HashSet<String> = self.queue.holding_routes().await?.into_iter().collect();
        let names: Vec<&str> = self
            .config
            .routes
            .iter()
            .map(|r| r.name.as_str())
            .filter(|name| holding.contains(*name))
            .collect();
        let counts = self.queue.held_counts(&names).await?;
        for route in &self.config.routes {
            let held = names
                .iter()
                .position(|n| *n == route.name)
                .map_or(0, |i| counts[i]);
            self.metrics
                .flow(&route.name, state.paused.contains_key(&route.name), held);
        }
        let mut view = self.write();
        view.state = state;
        view.holding = holding;
        Ok(())
    }

    /// Refreshes until `shutdown`.
    pub async fn refresh_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(REFRESH_INTERVAL) => {}
            }
            if let Err(err) = self.refresh().await {
                self.metrics.redis_error("flow_state");
                tracing::debug!(error = %err, "cannot read the flow state now");
            }
        }
    }

    /// Routes to drain now: held somewhere and not paused.
    fn drainable(&self) -> Vec<String> {
        let view = self.read();
        view.holding
            .iter()
            .filter(|route| !(view.state.paused.contains_key(*route) && self.configured(route)))
            .cloned()
            .collect()
    }

    /// Jobs per second a route drains at; `None`: as fast as its
    /// destination takes them.
    fn pace(&self, route: &str) -> Option<f64> {
        let given = self.read().state.drain_rates.get(route).copied();
        let limit = self
            .config
            .routes
            .iter()
            .find(|r| r.name == route)
            .and_then(|r| r.destination.rate_limit)
            .map(|l| l.rate);
        [given, limit]
            .into_iter()
            .flatten()
            .map(|rate| rate.per_second())
            .min_by(f64::total_cmp)
    }

    /// Drains while this process holds the lease, until `shutdown`.
    pub async fn drain_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut drains: HashMap<String, Drain> = HashMap::new();
        let mut leased = false;
        let mut renewed: Option<Instant> = None;
        loop {
            if renewed.is_none_or(|at| at.elapsed() >= LEASE_RENEW) {
                leased = match self.queue.lease(LEASE_TASK, &self.holder, LEASE_TTL).await {
                    Ok(leased) => leased,
                    Err(err) => {
                        self.metrics.redis_error("drain");
                        tracing::debug!(error = %err, "cannot take the drain lease now");
                        false
                    }
                };
                renewed = Some(Instant::now());
            }
            if leased {
                let routes = self.drainable();
                drains.retain(|route, _| routes.contains(route));
                for route in routes {
                    let drain = drains.entry(route.clone()).or_insert_with(|| {
                        tracing::info!(route = %route, "draining held jobs");
                        Drain::new(&self.queue.partitions())
                    });
                    if self.step(&route, drain).await == Step::Drained {
                        drains.remove(&route);
                        self.write().holding.remove(&route);
                        tracing::info!(route = %route, "held jobs drained");
                        if let Err(err) = self.queue.end_drain(&route).await {
                            tracing::debug!(error = %err, route = %route, "cannot clear the drain pace");
                        }
                    }
                }
            } else {
                drains.clear();
            }
            let tick = if drains.is_empty() {
                IDLE_TICK
            } else {
                DRAIN_TICK
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// Puts back as many of `route`'s held jobs as its pace allows now.
    async fn step(&self, route: &str, drain: &mut Drain) -> Step {
        let partitions = self.queue.partitions();
        if partitions.len() != drain.heads.len() {
            *drain = Drain::new(&partitions);
        }
        let now = Instant::now();
        let elapsed = now.duration_since(drain.last_step).as_secs_f64();
        drain.last_step = now;
        let per_second = match self.pace(route) {
            Some(per_second) => per_second,
            None => self.unpaced_rate(route, &mut drain.unpaced).await,
        };
        let credit = (per_second * PACE_CREDIT.as_secs_f64()).max(1.0);
        drain.credit = (drain.credit + elapsed * per_second).min(credit);
        let per_step = (per_second * DRAIN_TICK.as_secs_f64()).ceil() as usize;
        let wanted = (drain.credit.floor() as usize).min(per_step.max(1));
        if wanted == 0 {
            return Step::Going;
        }
        if drain.scanned.elapsed() >= RESCAN_INTERVAL {
            drain.scanned = now;
            drain.heads.iter_mut().for_each(|h| h.exhausted = false);
        }
        for (partition, heads) in partitions.iter().zip(drain.heads.iter_mut()) {
            if heads.queued.len() >= wanted || heads.exhausted {
                continue;
            }
            // Read afresh from the first: what was held meanwhile may come
            // earlier in ack order than what was read before.
            let count = wanted.max(READ_AHEAD);
            match self.queue.held_first(partition, route, count).await {
                Ok(found) => {
                    heads.exhausted = found.len() < count;
                    heads.queued = found.into();
                }
                Err(err) => {
                    self.drain_error(route, &err);
                    return Step::Going;
                }
            }
        }
        let picked = drain.pick(wanted);
        if picked.is_empty() {
            return if drain.heads.iter().all(|h| h.exhausted) {
                Step::Drained
            } else {
                Step::Going
            };
        }
        for (index, members) in picked {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            match self
                .queue
                .release(&partitions[index], route, &members)
                .await
            {
                Ok(released) => {
                    drain.credit -= released as f64;
                    drain.unpaced.released += released as u64;
                }
                Err(err) => {
                    self.drain_error(route, &err);
                    // Read them again: some may have moved before the error.
                    drain.heads[index] = Heads::default();
                }
            }
        }
        Step::Going
    }

    /// The pace of an unpaced drain of `route`, adjusted every
    /// [`UNPACED_ADJUST`] to what its destination took meanwhile.
    async fn unpaced_rate(&self, route: &str, unpaced: &mut Unpaced) -> f64 {
        if unpaced.since.elapsed() < UNPACED_ADJUST {
            return unpaced.per_second;
        }
        let reparked = match self.queue.stats(Stat::Reparked, &[route]).await {
            Ok(counts) => counts
                .first()
                .cloned()
                .flatten()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0),
            Err(err) => {
                self.drain_error(route, &err);
                return unpaced.per_second;
            }
        };
        let elapsed = unpaced.since.elapsed();
        unpaced.since = Instant::now();
        if let Some(before) = unpaced.reparked.replace(reparked) {
            unpaced.per_second = next_unpaced_rate(
                unpaced.per_second,
                unpaced.released,
                reparked.saturating_sub(before),
                elapsed,
            );
        }
        unpaced.released = 0;
        unpaced.per_second
    }

    fn drain_error(&self, route: &str, err: &QueueError) {
        self.metrics.redis_error("drain");
        tracing::warn!(route = %route, error = %err, "drain: redis operation failed; retrying");
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Going,
    Drained,
}

/// The next pace of an unpaced drain that put back `released` jobs over
/// `elapsed`, of which (or of those before) `reparked` came back because
/// their destination could not take them: twice as fast while nearly all
/// are taken (an attempt that fails is taken too: the destination
/// answered); else a tenth above what was taken, falling to half at most
/// per adjustment (a re-park may belong to an earlier one), and never
/// below [`UNPACED_MIN`]. A tenth above its pace, the destination gets a
/// little more than it takes: the rest waits in line in memory or is held
/// again, never cycled through Redis per wait.
fn next_unpaced_rate(per_second: f64, released: u64, reparked: u64, elapsed: Duration) -> f64 {
    if released == 0 {
        return per_second;
    }
    let next = if reparked as f64 <= 0.05 * released as f64 {
        per_second * 2.0
    } else {
        let taken = released.saturating_sub(reparked) as f64;
        (taken / elapsed.as_secs_f64().max(0.001) * 1.1).max(per_second / 2.0)
    };
    next.clamp(UNPACED_MIN, UNPACED_MAX)
}

/// One route's drain: held jobs read ahead per partition, and unused pace.
struct Drain {
    heads: Vec<Heads>,
    credit: f64,
    last_step: Instant,
    scanned: Instant,
    unpaced: Unpaced,
}

/// The pace of a drain with no rate, and what it put back since it was last
/// adjusted.
struct Unpaced {
    per_second: f64,
    since: Instant,
    released: u64,
    /// The route's re-parked count when last adjusted; `None` before.
    reparked: Option<u64>,
}

#[derive(Default)]
struct Heads {
    /// The first held jobs as last read, less those released since.
    queued: VecDeque<HeldJob>,
    /// The last read found all there was.
    exhausted: bool,
}

impl Drain {
    fn new(partitions: &[Partition]) -> Self {
        Self {
            heads: partitions.iter().map(|_| Heads::default()).collect(),
            // The first job goes at once.
            credit: 1.0,
            last_step: Instant::now(),
            scanned: Instant::now(),
            unpaced: Unpaced {
                per_second: UNPACED_START,
                // Adjusted at the first step, to learn what was taken so far.
                since: Instant::now()
                    .checked_sub(UNPACED_ADJUST)
                    .unwrap_or_else(Instant::now),
                released: 0,
                reparked: None,
            },
        }
    }

    /// Takes the `wanted` oldest read-ahead jobs in ack order over every
    /// partition; their members grouped by partition index.
    fn pick(&mut self, wanted: usize) -> Vec<(usize, Vec<String>)> {
        let mut picked: Vec<(usize, Vec<String>)> = Vec::new();
        for _ in 0..wanted {
            let Some(index) = (0..self.heads.len())
                .filter(|i| !self.heads[*i].queued.is_empty())
                .min_by_key(|i| self.heads[*i].queued.front().map(|job| job.at))
            else {
                break;
            };
            let Some(job) = self.heads[index].queued.pop_front() else {
                break;
            };
            match picked.iter_mut().find(|(i, _)| *i == index) {
                Some((_, members)) => members.push(job.member),
                None => picked.push((index, vec![job.member])),
            }
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn an_unpaced_drain_doubles_while_its_destination_takes_what_it_is_given() {
        assert_eq!(next_unpaced_rate(100.0, 100, 0, SECOND), 200.0);
        assert_eq!(next_unpaced_rate(100.0, 100, 5, SECOND), 200.0);
        assert_eq!(next_unpaced_rate(30_000.0, 30_000, 0, SECOND), UNPACED_MAX);
    }

    #[test]
    fn an_unpaced_drain_settles_a_tenth_above_what_its_destination_takes() {
        // A destination taking 40/s: what is put back beyond that comes back.
        let next = next_unpaced_rate(400.0, 400, 360, SECOND);
        assert_eq!(next, 200.0, "at most halved per adjustment");
        let next = next_unpaced_rate(next, 200, 160, SECOND);
        assert_eq!(next, 100.0);
        let next = next_unpaced_rate(next, 100, 60, SECOND);
        assert_eq!(next, 50.0);
        let next = next_unpaced_rate(next, 50, 10, SECOND);
        assert!((next - 44.0).abs() < 1e-9, "{next}");
        // Where it stays: 44 put back, 4 of them back again.
        let steady = next_unpaced_rate(next, 44, 4, SECOND);
        assert!((steady - 44.0).abs() < 1e-9, "{steady}");
    }

    #[test]
    fn an_unpaced_drain_trickles_while_everything_comes_back_and_waits_without_data() {
        let mut rate = 1000.0;
        for _ in 0..20 {
            rate = next_unpaced_rate(rate, rate as u64, rate as u64, SECOND);
        }
        assert_eq!(
            rate, UNPACED_MIN,
            "an open breaker: one a second finds out when it closes"
        );
        assert_eq!(
            next_unpaced_rate(250.0, 0, 0, SECOND),
            250.0,
            "nothing put back: nothing learnt"
        );
    }
}
