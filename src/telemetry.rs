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

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

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
    /// Failed Redis operations, by operation.
    pub redis_errors: Family<OperationLabels, Counter>,
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
        let redis_errors = Family::default();
        registry.register(
            "redis_errors",
            "Failed Redis operations, by operation",
            redis_errors.clone(),
        );
        Arc::new(Self {
            registry,
            ingest_requests,
            jobs_enqueued,
            unrouted_events,
            redis_errors,
        })
    }

    /// Counts one inbound request.
    pub fn ingest(&self, source: &str, outcome: &str) {
        self.ingest_requests
            .get_or_create(&IngestLabels {
                source: source.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one failed Redis operation.
    pub fn redis_error(&self, operation: &str) {
        self.redis_errors
            .get_or_create(&OperationLabels {
                operation: operation.to_owned(),
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
