//! Turns a parsed `ConfigFile` into a `Config`, collecting every problem.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::HeaderName;
use redis::IntoConnectionInfo;
use rustls::pki_types::pem::PemObject;
use url::Url;

use super::file::{
    AdminFile, ConfigFile, DeliveryFile, DestinationFile, FilterFile, OwnerFile, RedisFile,
    RetryFile, RouteFile, SchemeName, SentinelFile, ServerFile, SourceFile,
};
use super::secret::{self, SecretRef};
use super::*;

/// Loopback only: a fresh install must not expose an unconfigured gateway.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Admin on its own port so it can be firewalled apart from the public one.
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
/// 1 MiB covers every major provider's largest payload (GitHub caps at 25 MB
/// but sends far less in practice; Stripe, Slack stay under 1 MiB).
const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Far above what a healthy process has in flight (each request takes a few
/// milliseconds); with `max_body_bytes` it bounds the memory bodies can take.
const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;
/// Each open connection costs about 30 KiB of buffers and task; a flood of
/// connections from senders that are not being answered fast enough would
/// otherwise grow memory without bound.
const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Operators, probes, Prometheus and the dashboard need a handful; the rest
/// of the process's file descriptors belong to ingest and deliveries, which
/// 4,650 idle admin connections once starved.
const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 256;
/// Senders time out at 10 s (GitHub) to 30 s (Stripe); answer well before.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Long enough for in-flight deliveries with default timeouts to finish.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// The local Redis of a development machine.
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// Namespaces every key so several gateways can share one Redis.
const DEFAULT_PREFIX: &str = "switchyard";
/// On a cluster: enough partitions to spread over up to 16 masters, few
/// enough that every process reading every partition stays cheap.
const DEFAULT_CLUSTER_PARTITIONS: u16 = 16;
/// Each partition costs every process a blocking reader and a few polls.
const MAX_PARTITIONS: u16 = 1024;
/// A replica on the same network confirms within a millisecond or two; a
/// sender waits seconds, so this bounds the worst case well inside that.
const DEFAULT_ACK_REPLICAS_TIMEOUT: Duration = Duration::from_millis(500);
/// Enough to keep a fast network busy without exhausting file descriptors.
const DEFAULT_CONCURRENCY: usize = 256;
/// About four hours of retries with the default backoff bounds.
const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// A blip (deploy, restart) is usually over within a second.
const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Long outages are retried at a steady, cheap pace.
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// Stripe's and Slack's own recommendation for replay windows.
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// Providers retry for up to a day (Stripe: 3 days in live mode, but with
/// the same event id only while the first is unanswered).
const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// Longer than any sane destination timeout, so a live worker's job is not
/// taken over; short enough that a crashed worker's jobs resume within a minute.
const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(60);
/// Enough parallelism for a healthy service; a hanging one ties up no more.
const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Five timeouts in a row is an outage, not bad luck.
const DEFAULT_BREAKER_THRESHOLD: u32 = 5;
/// Probe a failing destination twice a minute.
const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(30);
/// A backlog this large means a route has been failing unattended.
const DEFAULT_DEAD_LETTER_WARN_ABOVE: u64 = 10_000;
/// Most receivers answer in well under a second; 10 s leaves room for slow ones.
const DEFAULT_DESTINATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Collects problems while walking the file.
struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    fn add(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.list.push(Problem {
            key: key.into(),
            reason: reason.into(),
        });
    }

    /// A required, non-blank string.
    fn required(&mut self, key: &str, value: Option<String>) -> String {
        match value {
            Some(v) if !v.trim().is_empty() => v,
            Some(_) => {
                self.add(key, "must not be empty");
                String::new()
            }
            None => {
                self.add(key, "missing");
                String::new()
            }
        }
    }
}

pub(super) fn validate(
    file: ConfigFile,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<Problem>> {
    let mut problems = Problems { list: Vec::new() };
    let source_names: BTreeSet<String> = file.sources.keys().cloned().collect();
    let (admin, sources) = {
        let mut secrets = SecretResolver {
            env,
            base_dir,
            problems: &mut problems,
        };
        (
            admin(file.admin, &mut secrets),
            sources(file.sources, &mut secrets),
        )
    };
    let server = server(file.server, env, &mut problems);
    let redis = redis(file.redis, env, &mut problems);
    let (delivery, max_in_flight) = delivery(file.delivery, base_dir, &mut problems);
    let owners = owners(file.owners, &mut problems);
    let defaults = RouteDefaults {
        retry: delivery.retry,
        max_in_flight,
        env,
        base_dir,
    };
    let routes = routes(
        file.routes,
        &source_names,
        &owners,
        &defaults,
        &mut problems,
    );
    for (i, route) in routes.iter().enumerate() {
        if route.ordered
            && sources
                .get(&route.source)
                .is_some_and(|s| s.ordering_key.is_none())
        {
            problems.add(
                format!("routes[{i}].ordered"),
                format!(
                    "source {:?} names no ordering_key (sources.{}.ordering_key = {{ json_pointer = \"…\" }} or {{ header = \"…\" }})",
                    route.source, route.source
                ),
            );
        }
        if route.destination.timeout >= delivery.visibility_timeout {
            problems.add(
                format!("routes[{i}].destination.timeout"),
                format!(
                    "{} is not shorter than delivery.visibility_timeout {}; a slow attempt would be taken over and delivered twice",
                    humantime::format_duration(route.destination.timeout),
                    humantime::format_duration(delivery.visibility_timeout)
                ),
            );
        }
    }

    if file.dead_letters.retention.is_some_and(|r| r.is_zero()) {
        problems.add(
            "dead_letters.retention",
            "must be longer than 0s (omit it to keep dead letters until deleted)",
        );
    }
    let dead_letters = DeadLetterConfig {
        retention: file.dead_letters.retention,
        warn_above: file
            .dead_letters
            .warn_above
            .unwrap_or(DEFAULT_DEAD_LETTER_WARN_ABOVE),
    };

    match (server, redis) {
        (Some(server), Some(redis)) if problems.list.is_empty() => Ok(Config {
            dead_letters,
            server,
            redis,
            admin,
            delivery,
            owners,
            sources,
            routes,
        }),
        _ => Err(problems.list),
    }
}

struct SecretResolver<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    base_dir: &'a Path,
    problems: &'a mut Problems,
}

impl SecretResolver<'_> {
    fn resolve(&mut self, key: &str, spec: &str) -> Option<Secret> {
        if SecretRef::parse(spec) == SecretRef::Literal && !spec.is_empty() {
            tracing::warn!(
                key,
                "secret written literally in the config file; prefer env:NAME or file:PATH"
            );
        }
        match secret::resolve(spec, self.env, self.base_dir) {
            Ok(secret) => Some(secret),
            Err(reason) => {
                self.problems.add(key, reason);
                None
            }
        }
    }

    /// An admin token: stray bytes are an error, since a client cannot put
    /// them in an `Authorization` header and every admin request would be
    /// refused with nothing said.
    fn resolve_token(&mut self, key: &str, spec: &str) -> Option<Secret> {
        let secret = self.resolve(key, spec)?;
        match secret::stray_bytes(secret.expose()) {
            Some(why) => {
                self.problems.add(
                    key,
                    format!(
                        "the token from {} {why}; no client can send that in an Authorization header, \
                         so remove it",
                        SecretRef::parse(spec).origin()
                    ),
                );
                None
            }
            None => Some(secret),
        }
    }

    /// A webhook secret: stray bytes are a warning (the provider may truly
    /// sign with them, but almost never does).
    fn resolve_webhook_secret(&mut self, key: &str, spec: &str) -> Option<Secret> {
        let secret = self.resolve(key, spec)?;
        if let Some(why) = secret::stray_bytes(secret.expose()) {
            tracing::warn!(
                key,
                from = %SecretRef::parse(spec).origin(),
                problem = why,
                "webhook secret has stray bytes: it will not match the secret the provider shows, \
                 so its signatures will be refused; remove them unless the provider's secret has them too"
            );
        }
        Some(secret)
    }
}

fn socket_addr(
    key: &str,
    file_value: Option<String>,
    env_name: &str,
    default: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<SocketAddr> {
    let (value, origin) = match env(env_name) {
        Some(v) => (v, format!(" (from {env_name})")),
        None => (
            file_value.unwrap_or_else(|| default.to_owned()),
            String::new(),
        ),
    };
    match value.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.add(
                key,
                format!("{value:?}{origin} is not an address like 127.0.0.1:8080"),
            );
            None
        }
    }
}

fn server(
    file: ServerFile,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<ServerConfig> {
    let listen = socket_addr(
        "server.listen",
        file.listen,
        ENV_LISTEN,
        DEFAULT_LISTEN,
        env,
        problems,
    );
    let admin_listen = socket_addr(
        "server.admin_listen",
        file.admin_listen,
        ENV_ADMIN_LISTEN,
        DEFAULT_ADMIN_LISTEN,
        env,
        problems,
    );
    let max_body_bytes = file.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        problems.add("server.max_body_bytes", "must be at least 1");
    }
    let max_concurrent_requests = file
        .max_concurrent_requests
        .unwrap_or(DEFAULT_MAX_CONCURRENT_REQUESTS);
    if max_concurrent_requests == 0 {
        problems.add("server.max_concurrent_requests", "must be at least 1");
    }
    let max_connections = file.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        problems.add("server.max_connections", "must be at least 1");
    }
    let admin_max_connections = file
        .admin_max_connections
        .unwrap_or(DEFAULT_ADMIN_MAX_CONNECTIONS);
    if admin_max_connections == 0 {
        problems.add("server.admin_max_connections", "must be at least 1");
    }
    let request_timeout = positive(
        "server.request_timeout",
        file.request_timeout,
        DEFAULT_REQUEST_TIMEOUT,
        problems,
    );
    let shutdown_timeout = file.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    let ingest = file.ingest.unwrap_or(true);
    if let (Some(listen), Some(admin_listen)) = (listen, admin_listen) {
        // 0.0.0.0:8080 and 127.0.0.1:8080 clash too: the wildcard takes every address.
        let overlap = listen.ip() == admin_listen.ip()
            || listen.ip().is_unspecified()
            || admin_listen.ip().is_unspecified();
        if overlap && listen.port() == admin_listen.port() && listen.port() != 0 {
            problems.add(
                "server.admin_listen",
                format!(
                    "{admin_listen} is also server.listen; the admin API needs its own address"
                ),
            );
        }
    }
    Some(ServerConfig {
        listen: listen?,
        admin_listen: admin_listen?,
        max_body_bytes,
        max_concurrent_requests,
        max_connections,
        admin_max_connections,
        request_timeout,
        shutdown_timeout,
        ingest,
    })
}

fn positive(
    key: &str,
    value: Option<Duration>,
    default: Duration,
    problems: &mut Problems,
) -> Duration {
    let value = value.unwrap_or(default);
    if value.is_zero() {
        problems.add(key, "must be longer than 0s");
    }
    value
}

fn redis(
    file: RedisFile,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<RedisConfig> {
    let prefix = file.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
    if prefix.is_empty() || prefix.contains(['{', '}', ' ']) {
        problems.add(
            "redis.prefix",
            format!("{prefix:?} must be non-empty, without braces or spaces"),
        );
    }
    let (target, display_url) = redis_target(file.url, file.sentinel, file.cluster, env, problems)?;
    let default_partitions = match target {
        RedisTarget::Cluster(_) => DEFAULT_CLUSTER_PARTITIONS,
        _ => 1,
    };
    let partitions = file.partitions.unwrap_or(default_partitions);
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        problems.add(
            "redis.partitions",
            format!("{partitions} must be between 1 and {MAX_PARTITIONS}"),
        );
    }
    let ack_replicas_timeout = positive(
        "redis.ack_replicas_timeout",
        file.ack_replicas_timeout,
        DEFAULT_ACK_REPLICAS_TIMEOUT,
        problems,
    );
    Some(RedisConfig {
        target,
        display_url,
        prefix,
        partitions,
        ack_replicas: file.ack_replicas.unwrap_or(0),
        ack_replicas_timeout,
        allow_eviction: file.allow_eviction.unwrap_or(false),
    })
}

/// Exactly one of `url`, `sentinel` and `cluster` (none: the local Redis);
/// `SWITCHYARD_REDIS_URL` replaces whichever the file names.
fn redis_target(
    url: Option<String>,
    sentinel: Option<SentinelFile>,
    cluster: Option<Vec<String>>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<(RedisTarget, String)> {
    if let Some(url) = env(ENV_REDIS_URL) {
        let origin = format!(" (from {ENV_REDIS_URL})");
        let connection = redis_url(&url, "redis.url", &origin, problems)?;
        return Some((RedisTarget::Single(connection), redact_password(&url)));
    }
    let named = [url.is_some(), sentinel.is_some(), cluster.is_some()];
    if named.iter().filter(|n| **n).count() > 1 {
        problems.add("redis", "name exactly one of url, sentinel and cluster");
        return None;
    }
    if let Some(sentinel) = sentinel {
        if sentinel.master.trim().is_empty() {
            problems.add("redis.sentinel.master", "must not be empty");
        }
        let nodes = redis_urls("redis.sentinel.nodes", &sentinel.nodes, problems)?;
        let display = format!(
            "sentinel {} via {}",
            sentinel.master,
            redacted_list(&sentinel.nodes)
        );
        return Some((
            RedisTarget::Sentinel {
                master: sentinel.master,
                nodes,
            },
            display,
        ));
    }
    if let Some(cluster) = cluster {
        let nodes = redis_urls("redis.cluster", &cluster, problems)?;
        let display = format!("cluster {}", redacted_list(&cluster));
        return Some((RedisTarget::Cluster(nodes), display));
    }
    let url = url.unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());
    let connection = redis_url(&url, "redis.url", "", problems)?;
    Some((RedisTarget::Single(connection), redact_password(&url)))
}

/// Parses one Redis URL; a problem under `key` when it is not one.
fn redis_url(
    url: &str,
    key: &str,
    origin: &str,
    problems: &mut Problems,
) -> Option<redis::ConnectionInfo> {
    match url.into_connection_info() {
        Ok(connection) => Some(connection),
        Err(err) => {
            problems.add(
                key,
                format!("{}{origin} is not a Redis URL: {err}", redact_password(url)),
            );
            None
        }
    }
}

/// A non-empty list of Redis URLs, each checked.
fn redis_urls(
    key: &str,
    urls: &[String],
    problems: &mut Problems,
) -> Option<Vec<redis::ConnectionInfo>> {
    if urls.is_empty() {
        problems.add(key, "must name at least one node");
        return None;
    }
    let parsed: Vec<_> = urls
        .iter()
        .enumerate()
        .map(|(i, url)| redis_url(url, &format!("{key}[{i}]"), "", problems))
        .collect();
    parsed.into_iter().collect()
}

fn redacted_list(urls: &[String]) -> String {
    urls.iter()
        .map(|url| redact_password(url))
        .collect::<Vec<_>>()
        .join(",")
}

/// The URL with its password (if any) masked, for logs and messages.
fn redact_password(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // set_password only fails for URLs that cannot have one.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        // Unparseable: show the scheme only, the rest may hold credentials.
        Err(_) => format!("{}://…", url.split("://").next().unwrap_or("?")),
    }
}

fn admin(file: AdminFile, secrets: &mut SecretResolver<'_>) -> AdminConfig {
    if file.tokens.is_empty() {
        tracing::warn!("no admin tokens configured: every /admin request will be refused");
    }
    let mut tokens = Vec::new();
    let mut seen = HashMap::new();
    for (i, token) in file.tokens.into_iter().enumerate() {
        let key = format!("admin.tokens[{i}]");
        let name = secrets
            .problems
            .required(&format!("{key}.name"), token.name);
        if !name.is_empty()
            && let Some(first) = seen.insert(name.clone(), i)
        {
            secrets.problems.add(
                format!("{key}.name"),
                format!("{name:?} is already the name of admin.tokens[{first}]"),
            );
        }
        let secret = match token.secret {
            Some(spec) => secrets.resolve_token(&format!("{key}.secret"), &spec),
            None => {
                secrets.problems.add(format!("{key}.secret"), "missing");
                None
            }
        };
        if let Some(secret) = secret {
            tokens.push(AdminToken { name, secret });
        }
    }
    let public_url = file
        .public_url
        .and_then(|url| http_url("admin.public_url", &url, secrets.problems));
    AdminConfig { tokens, public_url }
}

fn retry_policy(
    key: &str,
    file: RetryFile,
    defaults: &RetryPolicy,
    problems: &mut Problems,
) -> RetryPolicy {
    let policy = RetryPolicy {
        max_attempts: file.max_attempts.unwrap_or(defaults.max_attempts),
        initial_backoff: file.initial_backoff.unwrap_or(defaults.initial_backoff),
        max_backoff: file.max_backoff.unwrap_or(defaults.max_backoff),
    };
    if policy.max_attempts == 0 {
        problems.add(format!("{key}.max_attempts"), "must be at least 1");
    }
    if policy.initial_backoff.is_zero() {
        problems.add(format!("{key}.initial_backoff"), "must be longer than 0s");
    }
    if policy.initial_backoff > policy.max_backoff {
        problems.add(
            format!("{key}.initial_backoff"),
            format!(
                "{} is longer than max_backoff {}",
                humantime::format_duration(policy.initial_backoff),
                humantime::format_duration(policy.max_backoff)
            ),
        );
    }
    policy
}

/// The delivery settings and the default per-destination in-flight limit.
fn delivery(
    file: DeliveryFile,
    base_dir: &Path,
    problems: &mut Problems,
) -> (DeliveryConfig, usize) {
    let concurrency = file.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    if concurrency == 0 {
        problems.add("delivery.concurrency", "must be at least 1");
    }
    let builtin = RetryPolicy {
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        initial_backoff: DEFAULT_INITIAL_BACKOFF,
        max_backoff: DEFAULT_MAX_BACKOFF,
    };
    let retry = retry_policy("delivery.retry", file.retry, &builtin, problems);
    let visibility_timeout = positive(
        "delivery.visibility_timeout",
        file.visibility_timeout,
        DEFAULT_VISIBILITY_TIMEOUT,
        problems,
    );
    let failure_threshold = file
        .breaker
        .failure_threshold
        .unwrap_or(DEFAULT_BREAKER_THRESHOLD);
    if failure_threshold == 0 {
        problems.add("delivery.breaker.failure_threshold", "must be at least 1");
    }
    let cooldown = positive(
        "delivery.breaker.cooldown",
        file.breaker.cooldown,
        DEFAULT_BREAKER_COOLDOWN,
        problems,
    );
    (
        DeliveryConfig {
            concurrency,
            retry,
            workers: file.workers.unwrap_or(true),
            visibility_timeout,
            breaker: BreakerPolicy {
                failure_threshold,
                cooldown,
            },
            ca_certificates: file
                .tls_ca_file
                .map(|path| ca_certificates(&base_dir.join(path), problems))
                .unwrap_or_default(),
        },
        file.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
    )
}

/// Removes `user:password@` from `url`, returning the `Authorization`
/// value they make (HTTP Basic, the credentials percent-decoded), if any.
fn take_credentials(url: &mut Url) -> Option<Secret> {
    use base64::Engine as _;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |part: &str| percent_encoding::percent_decode_str(part).collect::<Vec<u8>>();
    let mut credentials = decode(url.username());
    credentials.push(b':');
    credentials.extend(decode(url.password().unwrap_or_default()));
    // An http(s) URL with a host (checked before) takes both.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let value = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    );
    Some(Secret::new(value.into_bytes()))
}

/// An absolute http(s) URL with a host.
fn http_url(key: &str, value: &str, problems: &mut Problems) -> Option<Url> {
    match Url::parse(value) {
        Ok(url) if !matches!(url.scheme(), "http" | "https") => {
            problems.add(key, format!("{value:?} must be an http or https URL"));
            None
        }
        Ok(url) => Some(url),
        Err(err) => {
            problems.add(key, format!("{value:?} is not a URL: {err}"));
            None
        }
    }
}

/// The certificates of a PEM file, each checked to be usable as a trust
/// anchor, so a wrong file fails at load, not on the first https delivery.
fn ca_certificates(path: &Path, problems: &mut Problems) -> Vec<CertificateDer<'static>> {
    const KEY: &str = "delivery.tls_ca_file";
    let shown = path.display();
    let certificates = match CertificateDer::pem_file_iter(path) {
        Ok(certificates) => certificates.collect::<Result<Vec<_>, _>>(),
        Err(err) => Err(err),
    };
    let certificates = match certificates {
        Ok(certificates) if certificates.is_empty() => {
            problems.add(KEY, format!("{shown} holds no PEM certificate"));
            return Vec::new();
        }
        Ok(certificates) => certificates,
        Err(err) => {
            problems.add(KEY, format!("cannot read certificates from {shown}: {err}"));
            return Vec::new();
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    for (i, certificate) in certificates.iter().enumerate() {
        if let Err(err) = roots.add(certificate.clone()) {
            problems.add(
                KEY,
                format!("certificate {} of {shown} cannot be trusted: {err}", i + 1),
            );
        }
    }
    certificates
}

fn owners(file: BTreeMap<String, OwnerFile>, problems: &mut Problems) -> BTreeMap<String, Owner> {
    file.into_iter()
        .map(|(id, owner)| {
            let key = format!("owners.{id}");
            let team = problems.required(&format!("{key}.team"), owner.team);
            let contact = problems.required(&format!("{key}.contact"), owner.contact);
            let alert_url = owner
                .alert_url
                .and_then(|url| http_url(&format!("{key}.alert_url"), &url, problems));
            let owner = Owner {
                id: id.clone(),
                team,
                contact,
                runbook: owner.runbook,
                alert_url,
                alert_format: owner.alert_format.unwrap_or_default(),
            };
            (id, owner)
        })
        .collect()
}

fn header_name(key: &str, value: &str, problems: &mut Problems) -> Option<HeaderName> {
    match HeaderName::try_from(value) {
        Ok(name) => Some(name),
        Err(_) => {
            problems.add(key, format!("{value:?} is not a valid header name"));
            None
        }
    }
}

fn sources(
    file: BTreeMap<String, SourceFile>,
    secrets: &mut SecretResolver<'_>,
) -> BTreeMap<String, Source> {
    let mut paths: HashMap<String, String> = HashMap::new();
    let mut out = BTreeMap::new();
    for (name, source) in file {
        let key = format!("sources.{name}");
        let path = secrets
            .problems
            .required(&format!("{key}.path"), source.path.clone());
        if !path.is_empty() {
            if !path.starts_with('/') {
                secrets
                    .problems
                    .add(format!("{key}.path"), format!("{path:?} must start with /"));
            } else if let Some(other) = paths.insert(path.clone(), name.clone()) {
                secrets.problems.add(
                    format!("{key}.path"),
                    format!("{path:?} is already the path of sources.{other}"),
                );
            }
        }
        let scheme = scheme(&key, &source, secrets.problems);
        match source.scheme {
            Some(SchemeName::None) if !source.secrets.is_empty() => secrets.problems.add(
                format!("{key}.secrets"),
                "scheme \"none\" checks no secret; remove them",
            ),
            Some(name) if name != SchemeName::None && source.secrets.is_empty() => {
                secrets.problems.add(
                    format!("{key}.secrets"),
                    format!("scheme {:?} needs at least one secret", scheme_label(name)),
                )
            }
            _ => {}
        }
        let mut resolved = Vec::new();
        for (i, spec) in source.secrets.iter().enumerate() {
            let secret_key = format!("{key}.secrets[{i}]");
            let Some(secret) = secrets.resolve_webhook_secret(&secret_key, spec) else {
                continue;
            };
            if source.scheme == Some(SchemeName::StandardWebhooks) {
                match standard_webhooks_key(&secret) {
                    Ok(key) => resolved.push(key),
                    Err(reason) => secrets.problems.add(secret_key, reason),
                }
            } else {
                resolved.push(secret);
            }
        }
        let tolerance = positive(
            &format!("{key}.tolerance"),
            source.tolerance,
            DEFAULT_TOLERANCE,
            secrets.problems,
        );
        let dedupe_window = positive(
            &format!("{key}.dedupe_window"),
            source.dedupe_window,
            DEFAULT_DEDUPE_WINDOW,
            secrets.problems,
        );
        let ordering_key = source.ordering_key.as_ref().and_then(|field| {
            let key = format!("{key}.ordering_key");
            if field.json_pointer.is_some() == field.header.is_some() {
                secrets
                    .problems
                    .add(&key, "needs exactly one of json_pointer, header");
                return None;
            }
            event_field(
                &key,
                field.json_pointer.clone(),
                field.header.clone(),
                secrets.problems,
            )
        });
        if let Some(scheme) = scheme {
            out.insert(
                name.clone(),
                Source {
                    name,
                    path,
                    scheme,
                    secrets: resolved,
                    tolerance,
                    dedupe_window,
                    ordering_key,
                },
            );
        }
    }
    out
}

/// The scheme's name as written in config.
fn scheme_label(name: SchemeName) -> &'static str {
    match name {
        SchemeName::Github => "github",
        SchemeName::Stripe => "stripe",
        SchemeName::Slack => "slack",
        SchemeName::Shopify => "shopify",
        SchemeName::StandardWebhooks => "standard-webhooks",
        SchemeName::Gitlab => "gitlab",
        SchemeName::Twilio => "twilio",
        SchemeName::Hmac => "hmac",
        SchemeName::None => "none",
    }
}

/// Standard Webhooks secrets are `whsec_` + base64 of the key; the MAC key is
/// the decoded bytes. The reason never quotes the secret.
fn standard_webhooks_key(secret: &Secret) -> Result<Secret, &'static str> {
    use base64::Engine as _;
    let text = secret.expose();
    let encoded = text.strip_prefix(b"whsec_").unwrap_or(text);
    // The reference libraries accept secrets with or without base64 padding.
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    match engine.decode(encoded) {
        Ok(key) if !key.is_empty() => Ok(Secret::new(key)),
        _ => Err(
            "a standard-webhooks secret is \"whsec_\" followed by base64; this one does not decode",
        ),
    }
}

/// The scheme with its own settings; settings of other schemes are errors so
/// a typo'd scheme name does not silently ignore them.
fn scheme(key: &str, source: &SourceFile, problems: &mut Problems) -> Option<Scheme> {
    let Some(name) = source.scheme else {
        problems.add(
            format!("{key}.scheme"),
            "missing (use \"none\" to accept unsigned requests)",
        );
        return None;
    };
    let hmac_keys = [
        ("header", source.header.is_some()),
        ("algorithm", source.algorithm.is_some()),
        ("encoding", source.encoding.is_some()),
        ("prefix", source.prefix.is_some()),
        ("dedupe_header", source.dedupe_header.is_some()),
    ];
    if name != SchemeName::Hmac {
        for (field, present) in hmac_keys {
            if present {
                problems.add(
                    format!("{key}.{field}"),
                    "only the \"hmac\" scheme uses this key",
                );
            }
        }
    }
    if name != SchemeName::Twilio && source.public_url.is_some() {
        problems.add(
            format!("{key}.public_url"),
            "only the \"twilio\" scheme uses this key",
        );
    }
    Some(match name {
        SchemeName::Github => Scheme::Github,
        SchemeName::Stripe => Scheme::Stripe,
        SchemeName::Slack => Scheme::Slack,
        SchemeName::Shopify => Scheme::Shopify,
        SchemeName::StandardWebhooks => Scheme::StandardWebhooks,
        SchemeName::Gitlab => Scheme::Gitlab,
        SchemeName::None => Scheme::None,
        SchemeName::Twilio => {
            let field = format!("{key}.public_url");
            let Some(url) = &source.public_url else {
                problems.add(field, "missing: twilio signs the URL configured at Twilio");
                return None;
            };
            Scheme::Twilio {
                public_url: http_url(&field, url, problems)?,
            }
        }
        SchemeName::Hmac => {
            let mut require = |field: &str, present: bool| {
                if !present {
                    problems.add(
                        format!("{key}.{field}"),
                        "missing: the hmac scheme needs it",
                    );
                }
            };
            require("header", source.header.is_some());
            require("algorithm", source.algorithm.is_some());
            require("encoding", source.encoding.is_some());
            let header = source
                .header
                .as_deref()
                .and_then(|h| header_name(&format!("{key}.header"), h, problems));
            let dedupe_header = source
                .dedupe_header
                .as_deref()
                .map(|h| header_name(&format!("{key}.dedupe_header"), h, problems));
            Scheme::Hmac(HmacScheme {
                header: header?,
                algorithm: source.algorithm?,
                encoding: source.encoding?,
                prefix: source.prefix.clone(),
                dedupe_header: dedupe_header.map_or(Some(None), |h| h.map(Some))?,
            })
        }
    })
}

/// What routes inherit, and how their secrets resolve.
struct RouteDefaults<'a> {
    retry: RetryPolicy,
    max_in_flight: usize,
    env: &'a dyn Fn(&str) -> Option<String>,
    base_dir: &'a Path,
}

fn routes(
    file: Vec<RouteFile>,
    sources: &BTreeSet<String>,
    owners: &BTreeMap<String, Owner>,
    defaults: &RouteDefaults<'_>,
    problems: &mut Problems,
) -> Vec<Route> {
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut limits = SharedRateLimits::default();
    let mut out = Vec::new();
    for (i, route) in file.into_iter().enumerate() {
        let key = format!("routes[{i}]");
        let name = problems.required(&format!("{key}.name"), route.name);
        if name.chars().any(char::is_control) {
            problems.add(
                format!("{key}.name"),
                format!("{name:?} contains control characters"),
            );
        }
        if route.expect_within.is_some_and(|d| d.is_zero()) {
            problems.add(format!("{key}.expect_within"), "must be longer than 0s");
        }
        if route.max_lag.is_some_and(|d| d.is_zero()) {
            problems.add(format!("{key}.max_lag"), "must be longer than 0s");
        }
        if route.on_dead_letter.is_some() && !route.ordered {
            problems.add(
                format!("{key}.on_dead_letter"),
                "applies to ordered routes only (ordered = true)",
            );
        }
        if !name.is_empty()
            && let Some(first) = names.insert(name.clone(), i)
        {
            problems.add(
                format!("{key}.name"),
                format!("{name:?} is already the name of routes[{first}]"),
            );
        }
        let source = problems.required(&format!("{key}.source"), route.source);
        if !source.is_empty() && !sources.contains(&source) {
            problems.add(
                format!("{key}.source"),
                format!("unknown source {source:?}"),
            );
        }
        let owner = match route.owner {
            Some(owner) if owners.contains_key(&owner) => owner,
            Some(owner) => {
                problems.add(format!("{key}.owner"), format!("unknown owner {owner:?}"));
                owner
            }
            None => {
                problems.add(
                    format!("{key}.owner"),
                    "missing: every route needs an owner from [owners]",
                );
                String::new()
            }
        };
        let description = problems.required(&format!("{key}.description"), route.description);
        let on_failure = problems.required(&format!("{key}.on_failure"), route.on_failure);
        let filter = route
            .filter
            .and_then(|f| filter(&format!("{key}.filter"), f, problems));
        // A route that overrides nothing inherits an already-checked policy;
        // checking it again would repeat [delivery.retry]'s problems per route.
        let overrides = route.retry.max_attempts.is_some()
            || route.retry.initial_backoff.is_some()
            || route.retry.max_backoff.is_some();
        let retry = if overrides {
            retry_policy(
                &format!("{key}.retry"),
                route.retry,
                &defaults.retry,
                problems,
            )
        } else {
            defaults.retry
        };
        let Some(destination) = destination(
            &format!("{key}.destination"),
            route.destination,
            defaults,
            problems,
        ) else {
            continue;
        };
        limits.check(&key, &destination, problems);
        out.push(Route {
            expect_within: route.expect_within,
            max_lag: route.max_lag,
            ordered: route.ordered,
            on_dead_letter: route.on_dead_letter.unwrap_or_default(),
            name,
            source,
            owner,
            description,
            on_failure,
            filter,
            destination,
            retry,
        });
    }
    out
}

/// A rate limit belongs to the destination, not to the route: routes sending
/// to one URL share one limiter, so they must state the same limit.
#[derive(Default)]
struct SharedRateLimits {
    first: HashMap<String, (String, Option<RateLimit>)>,
}

impl SharedRateLimits {
    fn check(&mut self, key: &str, destination: &Destination, problems: &mut Problems) {
        let limit = destination.rate_limit;
        match self.first.get(destination.url.as_str()) {
            Some((other_key, other)) if *other != limit => problems.add(
                format!("{key}.destination.rate_limit"),
                format!(
                    "{other_key} sends to the same URL with {}; routes to one destination share its limit, so state the same rate_limit and rate_burst",
                    describe_limit(*other)
                ),
            ),
            Some(_) => {}
            None => {
                self.first
                    .insert(destination.url.to_string(), (key.to_owned(), limit));
            }
        }
    }
}

fn describe_limit(limit: Option<RateLimit>) -> String {
    match limit {
        Some(RateLimit { rate, burst }) => format!("rate_limit {rate} (burst {burst})"),
        None => "no rate_limit".to_owned(),
    }
}

fn destination(
    key: &str,
    file: Option<DestinationFile>,
    defaults: &RouteDefaults<'_>,
    problems: &mut Problems,
) -> Option<Destination> {
    let Some(file) = file else {
        problems.add(key, "missing");
        return None;
    };
    let timeout = positive(
        &format!("{key}.timeout"),
        file.timeout,
        DEFAULT_DESTINATION_TIMEOUT,
        problems,
    );
    let max_in_flight = file.max_in_flight.unwrap_or(defaults.max_in_flight);
    if max_in_flight == 0 {
        problems.add(format!("{key}.max_in_flight"), "must be at least 1");
    }
    let signing_secret = file.signing_secret.and_then(|spec| {
        let secret_key = format!("{key}.signing_secret");
        let mut resolver = SecretResolver {
            env: defaults.env,
            base_dir: defaults.base_dir,
            problems: &mut *problems,
        };
        let secret = resolver.resolve(&secret_key, &spec)?;
        standard_webhooks_key(&secret)
            .map_err(|reason| problems.add(secret_key, reason))
            .ok()
    });
    let forward_headers = file.forward_headers.map(|names| {
        names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                header_name(&format!("{key}.forward_headers[{i}]"), name, problems)
            })
            .collect()
    });
    let retry_on = file.retry_on.unwrap_or_default();
    for (i, status) in retry_on.iter().enumerate() {
        if !(100..=599).contains(status) {
            problems.add(
                format!("{key}.retry_on[{i}]"),
                format!("{status} is not an HTTP status"),
            );
        }
    }
    let rate_limit = rate_limit(key, file.rate_limit, file.rate_burst, problems);
    let url_key = format!("{key}.url");
    let url = problems.required(&url_key, file.url);
    if url.is_empty() {
        return None;
    }
    let mut url = http_url(&url_key, &url, problems)?;
    let authorization = take_credentials(&mut url);
    let uri = match http::Uri::try_from(url.as_str()) {
        Ok(uri) => uri,
        Err(err) => {
            problems.add(
                url_key,
                format!("{url:?} cannot be a request target: {err}"),
            );
            return None;
        }
    };
    Some(Destination {
        url,
        uri,
        authorization,
        timeout,
        max_in_flight,
        signing_secret,
        forward_headers,
        retry_on,
        rate_limit,
    })
}

fn rate_limit(
    key: &str,
    rate: Option<String>,
    burst: Option<u32>,
    problems: &mut Problems,
) -> Option<RateLimit> {
    let Some(rate) = rate else {
        if burst.is_some() {
            problems.add(
                format!("{key}.rate_burst"),
                "needs rate_limit (a burst of what rate?)",
            );
        }
        return None;
    };
    let rate: Rate = rate
        .parse()
        .map_err(|err: RateError| problems.add(format!("{key}.rate_limit"), err.to_string()))
        .ok()?;
    let burst = burst.unwrap_or(rate.per_second_ceil());
    if burst == 0 {
        problems.add(format!("{key}.rate_burst"), "must be at least 1");
        return None;
    }
    Some(RateLimit { rate, burst })
}

/// The value `json_pointer` or (without one) `header` names, under `key`.
fn event_field(
    key: &str,
    json_pointer: Option<String>,
    header: Option<String>,
    problems: &mut Problems,
) -> Option<EventField> {
    if let Some(pointer) = json_pointer {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            problems.add(
                format!("{key}.json_pointer"),
                format!("{pointer:?} must be empty or start with / (RFC 6901)"),
            );
            return None;
        }
        return Some(EventField::JsonPointer(pointer));
    }
    let header = header?;
    Some(EventField::Header(header_name(
        &format!("{key}.header"),
        &header,
        problems,
    )?))
}

fn filter(key: &str, file: FilterFile, problems: &mut Problems) -> Option<Filter> {
    let kinds = [
        file.json_pointer.is_some(),
        file.header.is_some(),
        file.all.is_some(),
        file.any.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        problems.add(key, "needs exactly one of json_pointer, header, all, any");
        return None;
    }
    let combine = |list: Vec<FilterFile>, problems: &mut Problems, name: &str| {
        if list.is_empty() {
            problems.add(format!("{key}.{name}"), "must list at least one filter");
        }
        // Validate every sub-filter before giving up, so all problems are reported.
        let checked: Vec<Option<Filter>> = list
            .into_iter()
            .enumerate()
            .map(|(i, f)| filter(&format!("{key}.{name}[{i}]"), f, problems))
            .collect();
        checked.into_iter().collect::<Option<Vec<_>>>()
    };
    let has_test = file.equals.is_some() || file.prefix.is_some() || file.any_of.is_some();
    if (file.all.is_some() || file.any.is_some()) && has_test {
        problems.add(
            key,
            "all/any combine sub-filters; put equals, prefix or any_of inside them",
        );
        return None;
    }
    if let Some(all) = file.all {
        return combine(all, problems, "all").map(Filter::All);
    }
    if let Some(any) = file.any {
        return combine(any, problems, "any").map(Filter::Any);
    }
    let tests = [
        file.equals.is_some(),
        file.prefix.is_some(),
        file.any_of.is_some(),
    ];
    if tests.iter().filter(|t| **t).count() != 1 {
        problems.add(key, "needs exactly one of equals, prefix, any_of");
        return None;
    }
    let field = event_field(key, file.json_pointer, file.header, problems)?;
    let test = match (file.equals, file.prefix, file.any_of) {
        (Some(value), _, _) => FilterTest::Equals(value),
        (_, Some(prefix), _) => FilterTest::Prefix(prefix),
        (_, _, Some(values)) if values.is_empty() => {
            problems.add(format!("{key}.any_of"), "must list at least one value");
            return None;
        }
        (_, _, Some(values)) => FilterTest::AnyOf(values),
        (None, None, None) => return None,
    };
    Some(Filter::Test { field, test })
}
