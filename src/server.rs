//! Wiring: binds the listeners, starts the background tasks, serves until
//! shutdown is requested, then drains in-flight requests within a deadline.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, HttpMakeClassifier, TraceLayer};
use tracing::Level;

use crate::admin::{self, AdminState};
use crate::alerts::Alerts;
use crate::config::Config;
use crate::delivery::Engine;
use crate::listener::{self, Limits};
use crate::queue::{self, Eviction, Queue, QueueError, RedisReport};
use crate::replays::Replays;
use crate::telemetry::Metrics;
use crate::{housekeeping, ingest};

/// The two sockets the gateway serves.
pub struct Listeners {
    /// Webhooks from senders.
    pub public: TcpListener,
    /// Admin API, probes, metrics, dashboard.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses of `config.server`.
    pub async fn bind(config: &Config) -> Result<Self, ServerError> {
        let bind = |addr| listener::bind(addr).map_err(|source| ServerError::Bind { addr, source });
        Ok(Self {
            public: bind(config.server.listen)?,
            admin: bind(config.server.admin_listen)?,
        })
    }
}

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listen address is taken or not ours.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A listener failed while serving.
    #[error("{listener} listener failed")]
    Serve {
        /// `public` or `admin`.
        listener: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The Redis client could not be set up.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The HTTP client of owner alerts could not be set up (TLS roots, say).
    #[error("cannot set up the HTTP client for owner alerts")]
    Outbound(#[source] reqwest::Error),
}

/// Runs the gateway until `shutdown` is cancelled, then stops accepting,
/// lets in-flight requests finish for up to `server.shutdown_timeout`, and
/// returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let config = Arc::new(config);
    #[cfg(unix)]
    if config.server.ingest {
        raise_open_file_limit(
            (config.server.max_connections
                + config.server.admin_max_connections
                + config.delivery.concurrency
                + OTHER_FILES) as u64,
        );
    }
    let queue = Queue::connect_lazy(&config.redis)?.for_routes(&config.routes);
    queue
        .refuse_unsafe_eviction(config.redis.allow_eviction)
        .await?;
    // Before serving, so admin reads see earlier layouts' partitions; a
    // Redis that is down or hangs now (bounded, as the eviction check is)
    // is asked again until it answers (below).
    match tokio::time::timeout(LAYOUT_LOOK_TIMEOUT, queue.register_partitions()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "cannot read the partition layouts yet"),
        Err(_) => tracing::debug!("redis does not answer; reading the partition layouts later"),
    }
    let metrics = Metrics::new();
    let watcher = tokio::spawn(queue::watch(
        queue.clone(),
        config.redis.allow_eviction,
        {
            let metrics = metrics.clone();
            move |report: &RedisReport| {
                if let Some(bytes) = report.used_memory_bytes {
                    metrics.redis_used_memory.set(saturating_i64(bytes));
                }
                metrics.redis_keys.set(saturating_i64(report.keys));
                let evicts = matches!(report.eviction, Some(Eviction::AnyKey(_)));
                metrics.redis_evicts_jobs.set(i64::from(evicts));
            }
        },
        shutdown.clone(),
    ));
    let alerts = Alerts::new(config.clone(), queue.clone()).map_err(ServerError::Outbound)?;
    tokio::spawn(housekeeping::run(
        config.clone(),
        queue.clone(),
        metrics.clone(),
        alerts.clone(),
        shutdown.clone(),
    ));

    let consumer = consumer_name();
    let (workers, flow) = if config.delivery.workers {
        tokio::spawn(alerts.clone().run(shutdown.clone()));
        let engine = Engine::new(
            config.clone(),
            queue.clone(),
            metrics.clone(),
            alerts,
            consumer.clone(),
        );
        let flow = engine.flow();
        let run = engine.run(shutdown.clone(), config.server.shutdown_timeout);
        (Some(tokio::spawn(run)), Some(flow))
    } else {
        // Nobody else here records the layout this process writes.
        let (queue, shutdown) = (queue.clone(), shutdown.clone());
        tokio::spawn(async move { queue.register_partitions_until_done(&shutdown).await });
        (None, None)
    };

    let replays = Replays::new(queue.clone(), metrics.clone(), consumer.clone());
    tokio::spawn(replays.clone().run(shutdown.clone()));
    let admin_app = admin::router(AdminState {
        config: config.clone(),
        queue: queue.clone(),
        metrics: metrics.clone(),
        replays,
        flow,
    })
    .layer(quiet_failures_trace())
    .layer(CatchPanicLayer::new());
    let admin_addr = local_addr(&listeners.admin, "admin")?;
    let admin = listener::serve(
        listeners.admin,
        admin_app,
        shutdown.clone(),
        Limits {
            name: "admin",
            limit_key: "server.admin_max_connections",
            header_timeout: config.server.request_timeout,
            max_connections: config.server.admin_max_connections,
            open_connections: metrics.admin_open_connections.clone(),
            limit_reached: metrics.admin_connection_limit_reached.clone(),
            accept_failures: metrics.accept_failures_of("admin"),
        },
    );

    let public = if config.server.ingest {
        // Composed statically and boxed once (by the fallback), rather than
        // once per layer as `Router::layer` would, for every request.
        let stack = ServiceBuilder::new()
            .layer(CatchPanicLayer::new())
            // Every request gets an id (or keeps the sender's), which is
            // logged, stored with the event, sent downstream and echoed back.
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(quiet_failures_trace())
            .service(ingest::service(&config, queue.clone(), metrics.clone()));
        let public_app = axum::Router::new().fallback_service(stack);
        let public_addr = local_addr(&listeners.public, "public")?;
        tracing::info!(public = %public_addr, "ingest listening");
        // HTTP/1.1 only (what webhook senders use): hyper's auto server
        // would also sniff for HTTP/2, with no deadline on the sniffing.
        Some(listener::serve(
            listeners.public,
            public_app,
            shutdown.clone(),
            Limits {
                name: "public",
                limit_key: "server.max_connections",
                header_timeout: config.server.request_timeout,
                max_connections: config.server.max_connections,
                open_connections: metrics.open_connections.clone(),
                limit_reached: metrics.connection_limit_reached.clone(),
                accept_failures: metrics.accept_failures_of("public"),
            },
        ))
    } else {
        // A delivery-only process: the public socket is closed unused.
        drop(listeners.public);
        None
    };

    tracing::info!(
        admin = %admin_addr,
        redis = %queue.display_url(),
        ingest = config.server.ingest,
        workers = config.delivery.workers,
        sources = config.sources.len(),
        routes = config.routes.len(),
        "switchyard running"
    );

    let serving = async {
        tokio::join!(
            async {
                if let Some(public) = public {
                    public.await;
                }
            },
            admin
        );
    };
    let workers_done = async {
        if let Some(workers) = workers
            && let Err(err) = workers.await
        {
            tracing::error!(error = %err, "delivery workers ended abnormally");
        }
    };
    let deadline = async {
        shutdown.cancelled().await;
        tracing::info!(
            deadline = %humantime::format_duration(config.server.shutdown_timeout),
            "shutting down: no new connections or jobs, finishing what is in flight"
        );
        tokio::time::sleep(config.server.shutdown_timeout).await;
    };
    tokio::select! {
        ((), ()) = async { tokio::join!(serving, workers_done) } => {}
        () = deadline => {
            tracing::warn!("shutdown deadline passed; dropping work still in flight");
        }
    };
    watcher.abort();
    tracing::info!("switchyard stopped");
    Ok(())
}

/// tower-http's trace layer with its per-response failure line at DEBUG:
/// failures are logged where they are decided (a refusal, a Redis error),
/// floods of them throttled, and Redis going down once per change; an ERROR
/// line per 5xx here would be a second, unthrottled one (a `/readyz` probe
/// every 2 s while Redis is down, a flood of shed webhooks).
fn quiet_failures_trace() -> TraceLayer<HttpMakeClassifier> {
    TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::DEBUG))
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn local_addr(listener: &TcpListener, name: &'static str) -> Result<SocketAddr, ServerError> {
    listener.local_addr().map_err(|source| ServerError::Serve {
        listener: name,
        source,
    })
}

/// Files open besides connections and deliveries: listeners, Redis
/// connections, alert requests, the config file.
const OTHER_FILES: usize = 256;

/// A Redis that answers at all answers in milliseconds; start-up must not
/// wait longer on one that does not.
const LAYOUT_LOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Raises the soft open-file limit to `needed` where the hard limit allows
/// (systemd starts services at 1,024, below the default connection limit);
/// says so when it cannot.
#[cfg(unix)]
fn raise_open_file_limit(needed: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= needed {
        return;
    }
    let raised = needed.min(hard);
    match setrlimit(Resource::RLIMIT_NOFILE, raised, hard) {
        Ok(()) => tracing::info!(from = soft, to = raised, "raised the open-file limit"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-file limit"),
    }
    if raised < needed {
        tracing::warn!(
            limit = raised,
            needed,
            "the open-file limit is below server.max_connections + server.admin_max_connections + delivery.concurrency + {OTHER_FILES}: \
             past it, connections are refused; raise the hard limit (LimitNOFILE) or lower max_connections"
        );
    }
}

/// Names this process in the consumer group: host, pid and a random suffix,
/// so a restarted process never inherits a dead one's pending jobs by name
/// (they are reclaimed by idle time instead).
fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "switchyard".to_owned());
    let suffix = ulid::Ulid::generate().to_string();
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &suffix[suffix.len() - 6..]
    )
}
