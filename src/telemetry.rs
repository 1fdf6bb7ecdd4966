//! Logs and metrics. Logging: `RUST_LOG` filters, and
//! `SWITCHYARD_LOG_FORMAT=json` turns human-readable lines into JSON lines for
//! log shippers. Metrics: one Prometheus registry per gateway, served at
//! `/metrics` on the admin listener; labels are bounded (names of sources,
//! routes and outcomes, never ids).

use tracing_subscriber::EnvFilter;

/// Chooses JSON lines over human-readable output.
pub const ENV_LOG_FORMAT: &str = "SWITCHYARD_LOG_FORMAT";
/// What is logged when `RUST_LOG` is unset: our info, others' warnings.
const DEFAULT_FILTER: &str = "warn,switchyard=info";

/// Installs the global subscriber; logs go to stderr so stdout stays for
/// command output (`switchyard check`, the ops CLI).
pub fn init_logging() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var(ENV_LOG_FORMAT).is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // try_init: a second call (tests) keeps the first subscriber.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use prometheus_client::registry::Unit;

/// Labels of inbound requests: which source, and how it ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    /// Source name (`unknown` for paths that belong to none).
    pub source: String,
    /// `accepted`, `duplicate`, or the error code answered.
    pub outcome: String,
}

/// Labels of per-route counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route name.
    pub route: String,
}

/// Labels of per-source counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// Source name.
    pub source: String,
}

/// Labels of per-route outcome counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOutcomeLabels {
    /// Route name.
    pub route: String,
    /// What happened.
    pub outcome: String,
}

/// Labels of dead-letter counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    /// Route name.
    pub route: String,
    /// Owner id.
    pub owner: String,
    /// `exhausted`, `rejected`, `unroutable`, `undecodable`.
    pub reason: String,
}

/// Labels of Redis error counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// What the gateway was doing, e.g. `enqueue`.
    pub operation: String,
}

/// Every metric of one gateway. Each gateway owns its registry (no global
/// state), so several gateways in one test process count separately.
pub struct Metrics {
    registry: Registry,
    /// Inbound webhook requests by source and outcome.
    pub ingest_requests: Family<IngestLabels, Counter>,
    /// Delivery jobs written to the queue, by route.
    pub jobs_enqueued: Family<RouteLabels, Counter>,
    /// Accepted events that matched no route, by source.
    pub unrouted_events: Family<SourceLabels, Counter>,
    /// Events of an ordered route delivered unordered: they had no ordering key.
    pub unordered_events: Family<RouteLabels, Counter>,
    /// Failed Redis operations, by operation.
    pub redis_errors: Family<OperationLabels, Counter>,
    /// Delivery attempts by route and outcome.
    pub delivery_attempts: Family<RouteOutcomeLabels, Counter>,
    /// Attempt latency by route, seconds.
    pub attempt_latency: Family<RouteLabels, Histogram>,
    /// Received to delivered, by route, seconds.
    pub end_to_end_latency: Family<RouteLabels, Histogram>,
    /// Jobs put back without an attempt (breaker open, destination saturated).
    pub deliveries_deferred: Family<RouteOutcomeLabels, Counter>,
    /// Jobs that became dead letters.
    pub dead_letters: Family<DeadLetterLabels, Counter>,
    /// Jobs taken over from workers that stopped answering.
    pub jobs_reclaimed: Counter,
    /// Dead letters stored (all routes, all processes).
    pub dead_letters_stored: Gauge,
    /// Jobs waiting in the retry schedule (all routes).
    pub retry_scheduled: Gauge,
    /// 1 while a destination's breaker is open (0 closed, 0.5 half-open).
    pub breaker_open: Family<DestinationLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// 1 while a route is silent past its `expect_within`.
    pub route_silent: Family<RouteLabels, Gauge>,
    /// Age of the oldest undelivered job of a route with `max_lag`, seconds.
    pub route_lag: Family<RouteLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Keys of an ordered route with events on their way or waiting.
    pub route_keys_waiting: Family<RouteLabels, Gauge>,
    /// Keys of an ordered route blocked by their head's dead letter.
    pub route_keys_blocked: Family<RouteLabels, Gauge>,
    /// 1 while a route is paused.
    pub route_paused: Family<RouteLabels, Gauge>,
    /// Jobs held for a route (paused, or in line behind held ones), all processes.
    pub route_held: Family<RouteLabels, Gauge>,
    /// Connections open on the public listener.
    pub open_connections: Gauge,
    /// Times the public listener held off accepting at `server.max_connections`.
    pub connection_limit_reached: Counter,
    /// Connections open on the admin listener.
    pub admin_open_connections: Gauge,
    /// Times the admin listener held off accepting at `server.admin_max_connections`.
    pub admin_connection_limit_reached: Counter,
    /// Failed `accept` calls (out of file descriptors, say), by listener.
    pub accept_failures: Family<ListenerLabels, Counter>,
    /// Redis's `used_memory`, as last read.
    pub redis_used_memory: Gauge,
    /// Keys in Redis (every database), as last read.
    pub redis_keys: Gauge,
    /// 1 while Redis's `maxmemory-policy` may evict queued jobs.
    pub redis_evicts_jobs: Gauge,
}

/// Labels of per-listener counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `public` or `admin`.
    pub listener: String,
}

/// Labels of per-destination gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    /// Destination URL (from config, so bounded).
    pub destination: String,
}

impl Metrics {
    /// A registry with every metric registered (names get `switchyard_`).
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("switchyard");
        let ingest_requests = Family::default();
        registry.register(
            "ingest_requests",
            "Inbound webhook requests by source and outcome",
            ingest_requests.clone(),
        );
        let jobs_enqueued = Family::default();
        registry.register(
            "jobs_enqueued",
            "Delivery jobs durably queued, by route",
            jobs_enqueued.clone(),
        );
        let unrouted_events = Family::default();
        registry.register(
            "unrouted_events",
            "Accepted events that matched no route, by source",
            unrouted_events.clone(),
        );
        let unordered_events = Family::default();
        registry.register(
            "unordered_events",
            "Events of an ordered route without an ordering key, delivered unordered, by route",
            unordered_events.clone(),
        );
        let redis_errors = Family::default();
        registry.register(
            "redis_errors",
            "Failed Redis operations, by operation",
            redis_errors.clone(),
        );
        let delivery_attempts = Family::default();
        registry.register(
            "delivery_attempts",
            "Delivery attempts by route and outcome (delivered, retryable, rejected)",
            delivery_attempts.clone(),
        );
        let attempt_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "delivery_attempt_duration",
            "Delivery attempt latency by route",
            Unit::Seconds,
            attempt_latency.clone(),
        );
        let end_to_end_latency =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "end_to_end_duration",
            "From receipt of the webhook to its delivery, by route",
            Unit::Seconds,
            end_to_end_latency.clone(),
        );
        let deliveries_deferred = Family::default();
        registry.register(
            "deliveries_deferred",
            "Jobs put back without spending an attempt, by route and reason",
            deliveries_deferred.clone(),
        );
        let dead_letters = Family::default();
        registry.register(
            "dead_letters",
            "Jobs that became dead letters, by route, owner and reason",
            dead_letters.clone(),
        );
        let jobs_reclaimed = Counter::default();
        registry.register(
            "jobs_reclaimed",
            "Jobs taken over from workers that stopped answering",
            jobs_reclaimed.clone(),
        );
        let dead_letters_stored = Gauge::default();
        registry.register(
            "dead_letters_stored",
            "Dead letters stored now, all routes",
            dead_letters_stored.clone(),
        );
        let retry_scheduled = Gauge::default();
        registry.register(
            "retry_scheduled",
            "Jobs waiting in the retry schedule, all routes",
            retry_scheduled.clone(),
        );
        let breaker_open = Family::default();
        registry.register(
            "breaker_open",
            "Circuit breaker per destination as seen by this process: 1 open, 0.5 half-open, 0 closed",
            breaker_open.clone(),
        );
        let route_silent = Family::default();
        registry.register(
            "route_silent",
            "1 while a route has had no event for longer than its expect_within",
            route_silent.clone(),
        );
        let route_lag = Family::default();
        registry.register(
            "route_lag_seconds",
            "Age of the oldest undelivered job (pending, retrying, or held unless paused) of a route with max_lag",
            route_lag.clone(),
        );
        let route_keys_waiting = Family::default();
        registry.register(
            "route_keys_waiting",
            "Keys of an ordered route with an event on its way or waiting behind one",
            route_keys_waiting.clone(),
        );
        let route_keys_blocked = Family::default();
        registry.register(
            "route_keys_blocked",
            "Keys of an ordered route blocked by their head's dead letter (on_dead_letter = block)",
            route_keys_blocked.clone(),
        );
        let route_paused = Family::default();
        registry.register(
            "route_paused",
            "1 while a route is paused (its jobs are held, not attempted)",
            route_paused.clone(),
        );
        let route_held = Family::default();
        registry.register(
            "route_held",
            "Jobs held for a route while it is paused or drains after a resume, all processes",
            route_held.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Connections open on the public listener",
            open_connections.clone(),
        );
        let connection_limit_reached = Counter::default();
        registry.register(
            "connection_limit_reached",
            "Times the public listener stopped accepting at server.max_connections",
            connection_limit_reached.clone(),
        );
        let admin_open_connections = Gauge::default();
        registry.register(
            "admin_open_connections",
            "Connections open on the admin listener",
            admin_open_connections.clone(),
        );
        let admin_connection_limit_reached = Counter::default();
        registry.register(
            "admin_connection_limit_reached",
            "Times the admin listener stopped accepting at server.admin_max_connections",
            admin_connection_limit_reached.clone(),
        );
        let accept_failures = Family::default();
        registry.register(
            "accept_failures",
            "Failed accepts of new connections (out of file descriptors, say), by listener",
            accept_failures.clone(),
        );
        let redis_used_memory = Gauge::default();
        registry.register_with_unit(
            "redis_used_memory",
            "Memory Redis reports in use (INFO used_memory), as last read",
            Unit::Bytes,
            redis_used_memory.clone(),
        );
        let redis_keys = Gauge::default();
        registry.register(
            "redis_keys",
            "Keys in Redis, every database (INFO keyspace), as last read",
            redis_keys.clone(),
        );
        let redis_evicts_jobs = Gauge::default();
        registry.register(
            "redis_evicts_jobs",
            "1 while Redis's maxmemory-policy may evict queued jobs (allkeys-*): webhooks are refused unless redis.allow_eviction",
            redis_evicts_jobs.clone(),
        );
        Arc::new(Self {
            admin_open_connections,
            admin_connection_limit_reached,
            accept_failures,
            redis_used_memory,
            redis_keys,
            redis_evicts_jobs,
            open_connections,
            connection_limit_reached,
            retry_scheduled,
            breaker_open,
            route_silent,
            route_lag,
            route_keys_waiting,
            route_keys_blocked,
            route_paused,
            route_held,
            dead_letters_stored,
            registry,
            ingest_requests,
            jobs_enqueued,
            unrouted_events,
            unordered_events,
            redis_errors,
            delivery_attempts,
            attempt_latency,
            end_to_end_latency,
            deliveries_deferred,
            dead_letters,
            jobs_reclaimed,
        })
    }

    /// Counts one inbound request.
    pub fn ingest(&self, source: &str, outcome: &str) {
        self.ingest_counter(source, outcome).inc();
    }

    /// The counter of inbound requests of `source` ending in `outcome`, for
    /// callers that count the same pair often and look it up once.
    pub fn ingest_counter(&self, source: &str, outcome: &str) -> Counter {
        self.ingest_requests
            .get_or_create(&IngestLabels {
                source: source.to_owned(),
                outcome: outcome.to_owned(),
            })
            .clone()
    }

    /// The accept-failure counter of `listener`.
    pub fn accept_failures_of(&self, listener: &str) -> Counter {
        self.accept_failures
            .get_or_create(&ListenerLabels {
                listener: listener.to_owned(),
            })
            .clone()
    }

    /// Counts one failed Redis operation.
    pub fn redis_error(&self, operation: &str) {
        self.redis_errors
            .get_or_create(&OperationLabels {
                operation: operation.to_owned(),
            })
            .inc();
    }

    /// Counts a job put back without an attempt.
    pub fn deferred(&self, route: &str, reason: &str) {
        self.deliveries_deferred
            .get_or_create(&RouteOutcomeLabels {
                route: route.to_owned(),
                outcome: reason.to_owned(),
            })
            .inc();
    }

    /// Records a destination's breaker: 1 open, 0.5 half-open, 0 closed.
    pub fn breaker(&self, destination: &str, openness: f64) {
        self.breaker_open
            .get_or_create(&DestinationLabels {
                destination: destination.to_owned(),
            })
            .set(openness);
    }

    /// Records whether a route is silent.
    pub fn silent(&self, route: &str, silent: bool) {
        self.route_silent
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .set(i64::from(silent));
    }

    /// Records how far behind a route with `max_lag` is.
    pub fn lag(&self, route: &str, lag: Duration) {
        self.route_lag
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .set(lag.as_secs_f64());
    }

    /// Records an ordered route's keys waiting and blocked.
    pub fn ordered_keys(&self, route: &str, waiting: u64, blocked: u64) {
        let labels = RouteLabels {
            route: route.to_owned(),
        };
        self.route_keys_waiting
            .get_or_create(&labels)
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.route_keys_blocked
            .get_or_create(&labels)
            .set(i64::try_from(blocked).unwrap_or(i64::MAX));
    }

    /// Records whether a route is paused and how many of its jobs are held.
    pub fn flow(&self, route: &str, paused: bool, held: u64) {
        let labels = RouteLabels {
            route: route.to_owned(),
        };
        self.route_paused
            .get_or_create(&labels)
            .set(i64::from(paused));
        self.route_held
            .get_or_create(&labels)
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// Counts a new dead letter.
    pub fn dead_lettered(&self, route: &str, owner: &str, reason: &str) {
        self.dead_letters
            .get_or_create(&DeadLetterLabels {
                route: route.to_owned(),
                owner: owner.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// 1 ms to ~33 s in doublings: webhook deliveries span that range.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// An error and each of its causes, outermost first, joined by `: `: the
/// whole story in one log field or attempt record.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Lets a log line through at most once per interval, with the number of
/// events it stands for. Failures that come in floods, one per request
/// (shedding, Redis down), are logged this way: a line per request would
/// add to the overload it reports, and their metrics count every one.
pub struct LogThrottle {
    every: Duration,
    started: Instant,
    /// When the last line was let through, in ms after `started` plus one;
    /// 0 before the first.
    last_line: AtomicU64,
    since_last_line: AtomicU64,
}

impl LogThrottle {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            started: Instant::now(),
            last_line: AtomicU64::new(0),
            since_last_line: AtomicU64::new(0),
        }
    }

    /// Counts one event; `Some(n)` when a line is due, `n` being the events
    /// since the last line, this one included.
    pub fn note(&self) -> Option<u64> {
        self.note_at(Instant::now())
    }

    fn note_at(&self, now: Instant) -> Option<u64> {
        self.since_last_line.fetch_add(1, Ordering::Relaxed);
        let now = millis(now.saturating_duration_since(self.started)) + 1;
        let last = self.last_line.load(Ordering::Relaxed);
        if last != 0 && now < last.saturating_add(millis(self.every)) {
            return None;
        }
        // One of the callers racing here writes the line.
        self.last_line
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        // Zero when another caller's line took this one's count.
        Some(self.since_last_line.swap(0, Ordering::Relaxed)).filter(|&n| n > 0)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_line_is_let_through_once_per_interval_with_the_count() {
        let throttle = LogThrottle::new(Duration::from_secs(1));
        let at = |ms| throttle.started + Duration::from_millis(ms);
        assert_eq!(throttle.note_at(at(0)), Some(1), "the first at once");
        assert_eq!(throttle.note_at(at(10)), None);
        assert_eq!(throttle.note_at(at(999)), None);
        assert_eq!(
            throttle.note_at(at(1000)),
            Some(3),
            "then what it stood for"
        );
        assert_eq!(throttle.note_at(at(1500)), None);
        assert_eq!(throttle.note_at(at(5000)), Some(2));
        assert_eq!(throttle.note_at(at(5001)), None);
    }
}
