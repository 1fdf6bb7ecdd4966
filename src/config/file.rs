//! The configuration file exactly as written: serde types with every optional
//! key optional, so that `validate` can report all problems at once instead of
//! stopping at the first missing field.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// The whole TOML document.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Listeners and request limits.
    #[serde(default)]
    pub server: ServerFile,
    /// Where the queue lives.
    #[serde(default)]
    pub redis: RedisFile,
    /// Admin API access.
    #[serde(default)]
    pub admin: AdminFile,
    /// Delivery workers and the default retry policy.
    #[serde(default)]
    pub delivery: DeliveryFile,
    /// Teams that own routes, by owner id.
    #[serde(default)]
    pub owners: BTreeMap<String, OwnerFile>,
    /// Webhook senders, by source name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceFile>,
    /// Where events of each source go.
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    /// How long dead letters are kept and when their number is alarming.
    #[serde(default)]
    pub dead_letters: DeadLettersFile,
}

/// `[dead_letters]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLettersFile {
    /// Delete dead letters older than this; absent: keep until deleted.
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// Warn (log and metric) when more dead letters than this are stored.
    pub warn_above: Option<u64>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Address of the public (webhook) listener.
    pub listen: Option<String>,
    /// Address of the admin listener (admin API, health, metrics, dashboard).
    pub admin_listen: Option<String>,
    /// Largest accepted request body.
    pub max_body_bytes: Option<usize>,
    /// Webhook requests handled at once; more are answered 503 at once.
    pub max_concurrent_requests: Option<usize>,
    /// Connections open at once on the public listener; more wait to be accepted.
    pub max_connections: Option<usize>,
    /// Connections open at once on the admin listener; more wait to be accepted.
    pub admin_max_connections: Option<usize>,
    /// Whole-request deadline on the public listener.
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    /// How long shutdown waits for in-flight requests.
    #[serde(default, with = "humantime_serde")]
    pub shutdown_timeout: Option<Duration>,
    /// Serve the public listener (off: a delivery-only process).
    pub ingest: Option<bool>,
}

/// `[redis]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    /// `redis://` or `rediss://` URL of one Redis.
    pub url: Option<String>,
    /// A primary found through Redis Sentinel.
    pub sentinel: Option<SentinelFile>,
    /// Seed node URLs of a Redis Cluster.
    pub cluster: Option<Vec<String>>,
    /// Key prefix; partition 0's keys are `{prefix}:…`.
    pub prefix: Option<String>,
    /// Queue partitions, one hash slot each.
    pub partitions: Option<u16>,
    /// Replicas that must confirm a write before it is acked.
    pub ack_replicas: Option<u32>,
    /// How long replicas get to confirm it.
    #[serde(default, with = "humantime_serde")]
    pub ack_replicas_timeout: Option<Duration>,
    /// Run on a Redis whose `maxmemory-policy` may evict queued jobs.
    pub allow_eviction: Option<bool>,
}

/// `redis.sentinel`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelFile {
    /// The name the sentinels monitor the primary under.
    pub master: String,
    /// Sentinel URLs.
    pub nodes: Vec<String>,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Named bearer tokens accepted by the admin API.
    #[serde(default)]
    pub tokens: Vec<AdminTokenFile>,
    /// The admin listener's URL as people reach it, for links in alerts.
    pub public_url: Option<String>,
}

/// One entry of `[admin] tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenFile {
    /// Who holds the token; recorded in the audit log.
    pub name: Option<String>,
    /// The token itself, as a secret reference.
    pub secret: Option<String>,
}

/// `[delivery]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryFile {
    /// In-flight deliveries per gateway process.
    pub concurrency: Option<usize>,
    /// Default retry policy for every route.
    #[serde(default)]
    pub retry: RetryFile,
    /// Run delivery workers (off: an ingest-only process).
    pub workers: Option<bool>,
    /// PEM file of certificate authorities trusted for https destinations
    /// and owner alerts, besides Mozilla's roots.
    pub tls_ca_file: Option<String>,
    /// A job pending this long on a consumer is taken over by another.
    #[serde(default, with = "humantime_serde")]
    pub visibility_timeout: Option<Duration>,
    /// Default in-flight limit per destination.
    pub max_in_flight: Option<usize>,
    /// Circuit breaker per destination.
    #[serde(default)]
    pub breaker: BreakerFile,
}

/// `[delivery.breaker]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerFile {
    /// Consecutive retryable failures that open the breaker.
    pub failure_threshold: Option<u32>,
    /// How long it stays open before one probe is let through.
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Option<Duration>,
}

/// A retry policy, in `[delivery]` or on a route; missing keys inherit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    /// Attempts in all, the first one included.
    pub max_attempts: Option<u32>,
    /// Upper bound of the first backoff.
    #[serde(default, with = "humantime_serde")]
    pub initial_backoff: Option<Duration>,
    /// Upper bound of any backoff.
    #[serde(default, with = "humantime_serde")]
    pub max_backoff: Option<Duration>,
}

/// `[owners.<id>]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerFile {
    /// Team name shown to people.
    pub team: Option<String>,
    /// How to reach the team (mail, pager, channel).
    pub contact: Option<String>,
    /// Where the runbook for this team's integrations lives.
    pub runbook: Option<String>,
    /// Told when dead letters land on this owner's routes.
    pub alert_url: Option<String>,
    /// `json` (default) or `slack` (an incoming-webhook `text` payload).
    pub alert_format: Option<AlertFormat>,
}

/// The body of owner alerts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    /// A JSON document with every field.
    #[default]
    Json,
    /// Slack incoming-webhook `{"text": …}`.
    Slack,
}

/// The signature schemes of DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeName {
    /// `X-Hub-Signature-256`.
    Github,
    /// `Stripe-Signature`.
    Stripe,
    /// `X-Slack-Signature`.
    Slack,
    /// `X-Shopify-Hmac-Sha256`.
    Shopify,
    /// Standard Webhooks (`webhook-*` or `svix-*` headers).
    #[serde(alias = "svix")]
    StandardWebhooks,
    /// `X-Gitlab-Token`.
    Gitlab,
    /// `X-Twilio-Signature`.
    Twilio,
    /// Generic HMAC over the body.
    Hmac,
    /// No verification at all.
    None,
}

/// `[sources.<name>]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    /// Public path the sender posts to.
    pub path: Option<String>,
    /// Signature scheme.
    pub scheme: Option<SchemeName>,
    /// Secret references; several mean rotation (any one may match).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Accepted clock skew for timestamped schemes.
    #[serde(default, with = "humantime_serde")]
    pub tolerance: Option<Duration>,
    /// How long a delivery id is remembered for deduplication.
    #[serde(default, with = "humantime_serde")]
    pub dedupe_window: Option<Duration>,
    /// twilio: the URL the sender signs (as configured at Twilio).
    pub public_url: Option<String>,
    /// hmac: header carrying the signature.
    pub header: Option<String>,
    /// hmac: `sha1`, `sha256` or `sha512`.
    pub algorithm: Option<HmacAlgorithm>,
    /// hmac: `hex` or `base64`.
    pub encoding: Option<SignatureEncoding>,
    /// hmac: text before the signature in the header, e.g. `sha256=`.
    pub prefix: Option<String>,
    /// hmac: header carrying the sender's delivery id, for deduplication.
    pub dedupe_header: Option<String>,
    /// Where an event's ordering key is.
    pub ordering_key: Option<EventFieldFile>,
}

/// A value of an event: `json_pointer` into the body or a `header`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFieldFile {
    /// RFC 6901 pointer into the JSON body.
    pub json_pointer: Option<String>,
    /// A request header.
    pub header: Option<String>,
}

/// Digest of the generic `hmac` scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    /// HMAC-SHA1 (legacy senders only).
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// How the generic `hmac` scheme's signature is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    /// Lower- or upper-case hex.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// What an ordered route's key does when its head event dead-letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDeadLetter {
    /// The key moves on to its next event.
    #[default]
    Continue,
    /// The key waits until the dead letter is replayed or deleted.
    Block,
}

/// One `[[routes]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Unique route name.
    pub name: Option<String>,
    /// Source whose events this route takes.
    pub source: Option<String>,
    /// Owner id (a key of `[owners]`).
    pub owner: Option<String>,
    /// What the integration does.
    pub description: Option<String>,
    /// What breaks for whom when it fails.
    pub on_failure: Option<String>,
    /// Which events match; all of them when absent.
    pub filter: Option<FilterFile>,
    /// Where matching events are delivered.
    pub destination: Option<DestinationFile>,
    /// Overrides of the default retry policy.
    #[serde(default)]
    pub retry: RetryFile,
    /// Events are expected at least this often; longer silence is reported.
    #[serde(default, with = "humantime_serde")]
    pub expect_within: Option<Duration>,
    /// The oldest undelivered job may be this old; older is reported as lag.
    #[serde(default, with = "humantime_serde")]
    pub max_lag: Option<Duration>,
    /// Events of one ordering key are delivered one at a time, in ack order.
    #[serde(default)]
    pub ordered: bool,
    /// What an ordered route's key does when its head event dead-letters.
    pub on_dead_letter: Option<OnDeadLetter>,
}

/// A route filter: a leaf test (`json_pointer` or `header` with one of
/// `equals`, `prefix`, `any_of`) or a combination (`all`, `any`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterFile {
    /// RFC 6901 pointer into the JSON body.
    pub json_pointer: Option<String>,
    /// Request header name.
    pub header: Option<String>,
    /// The value equals this.
    pub equals: Option<String>,
    /// The value starts with this.
    pub prefix: Option<String>,
    /// The value equals one of these.
    pub any_of: Option<Vec<String>>,
    /// Every sub-filter matches.
    pub all: Option<Vec<FilterFile>>,
    /// At least one sub-filter matches.
    pub any: Option<Vec<FilterFile>>,
}

/// A route's `destination`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationFile {
    /// http(s) URL the event is POSTed to.
    pub url: Option<String>,
    /// Per-attempt deadline.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Deliveries in flight to this destination at most (per process).
    pub max_in_flight: Option<usize>,
    /// Standard Webhooks secret (`whsec_…`) to sign outbound requests with.
    pub signing_secret: Option<String>,
    /// Request headers forwarded downstream; all but hop-by-hop when absent.
    pub forward_headers: Option<Vec<String>>,
    /// Statuses retried besides 407, 408, 425, 429 and 5xx.
    pub retry_on: Option<Vec<u16>>,
    /// `"N/s"` or `"N/min"`, shared by every gateway process.
    pub rate_limit: Option<String>,
    /// Requests allowed at once after a quiet spell; one second's worth by default.
    pub rate_burst: Option<u32>,
}
