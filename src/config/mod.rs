//! Configuration: the TOML file (`file`), its validation into typed, checked
//! values (`validate`), and secret resolution (`secret`).
//!
//! Loading never stops at the first problem: every semantic error is collected
//! with its key path (`routes[2].owner: unknown owner "paymnts"`) and reported
//! at once, so one edit-and-retry cycle fixes a broken config.

mod file;
mod rate;
mod secret;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use rustls::pki_types::CertificateDer;
use url::Url;

pub use file::{AlertFormat, HmacAlgorithm, OnDeadLetter, SignatureEncoding};
pub use rate::{Rate, RateError};
pub use secret::Secret;

/// Where `switchyard` looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "config/switchyard.toml";

/// Environment variables that override top-level keys (DESIGN.md).
pub const ENV_REDIS_URL: &str = "SWITCHYARD_REDIS_URL";
/// Overrides `server.listen`.
pub const ENV_LISTEN: &str = "SWITCHYARD_LISTEN";
/// Overrides `server.admin_listen`.
pub const ENV_ADMIN_LISTEN: &str = "SWITCHYARD_ADMIN_LISTEN";

/// A validated configuration: every reference resolved, every secret loaded.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listeners and request limits.
    pub server: ServerConfig,
    /// Where the queue lives.
    pub redis: RedisConfig,
    /// Admin API tokens.
    pub admin: AdminConfig,
    /// Worker settings and the default retry policy.
    pub delivery: DeliveryConfig,
    /// Owners by id.
    pub owners: BTreeMap<String, Owner>,
    /// Sources by name.
    pub sources: BTreeMap<String, Source>,
    /// Routes in file order.
    pub routes: Vec<Route>,
    /// Dead-letter retention and size warning.
    pub dead_letters: DeadLetterConfig,
}

/// `[dead_letters]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterConfig {
    /// Delete dead letters older than this; `None`: keep until deleted.
    pub retention: Option<Duration>,
    /// Warn when more dead letters than this are stored.
    pub warn_above: u64,
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Public (webhook) listener address.
    pub listen: SocketAddr,
    /// Admin listener address.
    pub admin_listen: SocketAddr,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Webhook requests handled at once; more are shed with 503.
    pub max_concurrent_requests: usize,
    /// Connections open at once on the public listener; more wait in the
    /// kernel's accept queue.
    pub max_connections: usize,
    /// Connections open at once on the admin listener; likewise.
    pub admin_max_connections: usize,
    /// Whole-request deadline on the public listener.
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight work.
    pub shutdown_timeout: Duration,
    /// Whether this process serves the public listener.
    pub ingest: bool,
}

/// `[redis]`, validated.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Which Redis deployment, and how to reach it.
    pub target: RedisTarget,
    /// The target with any password replaced, safe for logs.
    pub display_url: String,
    /// Key prefix; partition 0's keys are `{prefix}:…`.
    pub prefix: String,
    /// Queue partitions, one hash slot each.
    pub partitions: u16,
    /// Replicas that must confirm a write (`WAIT`) before it is acked.
    pub ack_replicas: u32,
    /// How long `WAIT` may take before the write is answered 503.
    pub ack_replicas_timeout: Duration,
    /// Run (with an error logged) on a Redis whose `maxmemory-policy` can
    /// evict any key, queued jobs included; refused otherwise.
    pub allow_eviction: bool,
}

/// The three ways to run Redis under the gateway.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One Redis (a primary, with or without replicas): `redis.url`.
    Single(redis::ConnectionInfo),
    /// A primary found through Redis Sentinel, followed after a failover.
    Sentinel {
        /// The name the sentinels monitor the primary under.
        master: String,
        /// The sentinels; their URLs' credentials and database are also
        /// used for the primary.
        nodes: Vec<redis::ConnectionInfo>,
    },
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<redis::ConnectionInfo>),
}

impl RedisTarget {
    /// `url`, `sentinel` or `cluster`, as the config names the mode.
    pub fn mode(&self) -> &'static str {
        match self {
            RedisTarget::Single(_) => "url",
            RedisTarget::Sentinel { .. } => "sentinel",
            RedisTarget::Cluster(_) => "cluster",
        }
    }
}

/// `[admin]`, validated.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// Accepted bearer tokens.
    pub tokens: Vec<AdminToken>,
    /// Base URL of the admin listener for links (alerts); `http://<admin_listen>` by default.
    pub public_url: Option<Url>,
}

/// A named admin bearer token.
#[derive(Debug, Clone)]
pub struct AdminToken {
    /// Name recorded in the audit log.
    pub name: String,
    /// The token value.
    pub secret: Secret,
}

/// `[delivery]`, validated.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// In-flight deliveries per gateway process.
    pub concurrency: usize,
    /// Policy of routes that do not override it.
    pub retry: RetryPolicy,
    /// Whether this process runs delivery workers.
    pub workers: bool,
    /// A job pending this long on a consumer is reclaimed by another.
    pub visibility_timeout: Duration,
    /// When a destination's breaker opens and how long it stays open.
    pub breaker: BreakerPolicy,
    /// Certificate authorities trusted for outbound TLS besides Mozilla's
    /// roots (`tls_ca_file`, read and checked at load).
    pub ca_certificates: Vec<CertificateDer<'static>>,
}

/// Circuit breaker settings, shared by every destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive retryable failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before one probe is let through.
    pub cooldown: Duration,
}

/// How often and how patiently a failed delivery is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Upper bound of the first backoff.
    pub initial_backoff: Duration,
    /// Upper bound of any backoff.
    pub max_backoff: Duration,
}

/// A team that owns routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Owner id (the `[owners.<id>]` key).
    pub id: String,
    /// Team name.
    pub team: String,
    /// How to reach the team.
    pub contact: String,
    /// Runbook link.
    pub runbook: Option<String>,
    /// Where dead-letter alerts are posted.
    pub alert_url: Option<Url>,
    /// The alert body's format.
    pub alert_format: AlertFormat,
}

/// A webhook sender.
#[derive(Debug, Clone)]
pub struct Source {
    /// Source name (the `[sources.<name>]` key).
    pub name: String,
    /// Public path it posts to.
    pub path: String,
    /// How its requests are verified.
    pub scheme: Scheme,
    /// Accepted secrets; any one may match (rotation).
    pub secrets: Vec<Secret>,
    /// Accepted clock skew for timestamped schemes.
    pub tolerance: Duration,
    /// How long a delivery id is remembered.
    pub dedupe_window: Duration,
    /// Where an event's ordering key is: events with one key share a
    /// partition.
    pub ordering_key: Option<EventField>,
}

/// A signature scheme with its scheme-specific settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// GitHub.
    Github,
    /// Stripe.
    Stripe,
    /// Slack.
    Slack,
    /// Shopify.
    Shopify,
    /// Standard Webhooks / Svix.
    StandardWebhooks,
    /// GitLab.
    Gitlab,
    /// Twilio, which signs the URL it was configured with.
    Twilio {
        /// The URL as configured at Twilio.
        public_url: Url,
    },
    /// Generic HMAC over the body.
    Hmac(HmacScheme),
    /// No verification.
    None,
}

/// Settings of the generic `hmac` scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacScheme {
    /// Header carrying the signature.
    pub header: HeaderName,
    /// Digest.
    pub algorithm: HmacAlgorithm,
    /// Signature encoding.
    pub encoding: SignatureEncoding,
    /// Text before the signature, e.g. `sha256=`.
    pub prefix: Option<String>,
    /// Header carrying the delivery id, for deduplication.
    pub dedupe_header: Option<HeaderName>,
}

impl Scheme {
    /// The name used in config, logs and the inventory.
    pub fn name(&self) -> &'static str {
        match self {
            Scheme::Github => "github",
            Scheme::Stripe => "stripe",
            Scheme::Slack => "slack",
            Scheme::Shopify => "shopify",
            Scheme::StandardWebhooks => "standard-webhooks",
            Scheme::Gitlab => "gitlab",
            Scheme::Twilio { .. } => "twilio",
            Scheme::Hmac(_) => "hmac",
            Scheme::None => "none",
        }
    }
}

/// Where events of one source go, and who answers for it.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique name.
    pub name: String,
    /// Source name.
    pub source: String,
    /// Owner id.
    pub owner: String,
    /// What the integration does.
    pub description: String,
    /// What breaks when it fails.
    pub on_failure: String,
    /// Which events match; all when `None`.
    pub filter: Option<Filter>,
    /// Where matching events go.
    pub destination: Destination,
    /// Effective retry policy (route override over the default).
    pub retry: RetryPolicy,
    /// Longest expected gap between events; longer is reported as silence.
    pub expect_within: Option<Duration>,
    /// Oldest an undelivered job may be; older is reported as lag.
    pub max_lag: Option<Duration>,
    /// Events of one ordering key go one at a time, in ack order.
    pub ordered: bool,
    /// What a key of an ordered route does when its head dead-letters.
    pub on_dead_letter: OnDeadLetter,
}

/// A route's downstream.
#[derive(Debug, Clone)]
pub struct Destination {
    /// http(s) URL.
    pub url: Url,
    /// The same URL as the request target, converted once.
    pub uri: http::Uri,
    /// `Authorization: Basic …` made from credentials written in the URL,
    /// which keeps none: so they never reach logs, metrics, dead letters or
    /// the admin API.
    pub authorization: Option<Secret>,
    /// Per-attempt deadline.
    pub timeout: Duration,
    /// Deliveries in flight to this destination at most (per process).
    pub max_in_flight: usize,
    /// Decoded Standard Webhooks key for signing outbound requests.
    pub signing_secret: Option<Secret>,
    /// Headers forwarded downstream; `None`: all but hop-by-hop ones.
    pub forward_headers: Option<Vec<HeaderName>>,
    /// Statuses retried besides 407, 408, 425, 429 and 5xx.
    pub retry_on: Vec<u16>,
    /// Requests per unit of time across every gateway process, if limited.
    pub rate_limit: Option<RateLimit>,
}

/// A destination's `rate_limit` and `rate_burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// The sustained rate.
    pub rate: Rate,
    /// Requests allowed at once after a quiet spell (at least 1).
    pub burst: u32,
}

/// Which events a route takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Every sub-filter matches.
    All(Vec<Filter>),
    /// At least one sub-filter matches.
    Any(Vec<Filter>),
    /// A value of the event passes a test.
    Test {
        /// Where the value comes from.
        field: EventField,
        /// What it must satisfy.
        test: FilterTest,
    },
}

/// A value of an event: what a filter test looks at, or a source's
/// ordering key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventField {
    /// RFC 6901 pointer into the JSON body.
    JsonPointer(String),
    /// A request header.
    Header(HeaderName),
}

/// A test on one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterTest {
    /// Equals this.
    Equals(String),
    /// Starts with this.
    Prefix(String),
    /// Equals one of these.
    AnyOf(Vec<String>),
}

impl Config {
    /// The owner of `route` (validation guarantees it exists).
    pub fn owner_of(&self, route: &Route) -> Option<&Owner> {
        self.owners.get(&route.owner)
    }
}

/// One semantic problem, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `routes[2].owner`.
    pub key: String,
    /// What is wrong, never quoting a secret.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config file", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has keys of the wrong type or unknown keys.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The file parsed but its content is inconsistent.
    #[error("{}: {} problem(s):\n{}", path.display(), problems.len(), ProblemList(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  {problem}")?;
        }
        Ok(())
    }
}

/// Loads `path`, applying `SWITCHYARD_*` overrides from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// Loads `path` with `env` standing in for the process environment (tests).
pub fn load_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    from_toml(&text, path, base_dir, env)
}

/// Parses and validates TOML text; `path` is only used in messages and
/// `base_dir` resolves relative `file:` secrets.
pub fn from_toml(
    text: &str,
    path: &Path,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let file: file::ConfigFile = toml::from_str(text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    validate::validate(file, base_dir, env).map_err(|problems| ConfigError::Invalid {
        path: path.to_owned(),
        problems,
    })
}
