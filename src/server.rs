//! Wiring: binds the listeners, starts the background tasks, serves until
//! shutdown is requested, then drains in-flight requests within a deadline.

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

use crate::admin::{self, AdminState};
use crate::alerts::Alerts;
use crate::config::Config;
use crate::delivery::Engine;
use crate::queue::{self, Eviction, Queue, QueueError, RedisReport};
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
        let bind = |addr| listen(addr).map_err(|source| ServerError::Bind { addr, source });
        Ok(Self {
            public: bind(config.server.listen)?,
            admin: bind(config.server.admin_listen)?,
        })
    }
}

/// Connections the kernel holds for `accept`. Senders open many at once (at
/// start, after a pause); when the queue is full the kernel drops their SYNs
/// and they retry only a second later, which showed as 1 s latency spikes
/// under load with tokio's default of 1024. The kernel caps it at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 8192;

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does on Unix: a restart can bind while old
    // connections of the previous process linger in TIME_WAIT. (On Windows
    // the option would let another process take the port.)
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
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
            (config.server.max_connections + config.delivery.concurrency + OTHER_FILES) as u64,
        );
    }
    let queue = Queue::connect_lazy(&config.redis)?;
    queue
        .refuse_unsafe_eviction(config.redis.allow_eviction)
        .await?;
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

    let workers = if config.delivery.workers {
        tokio::spawn(alerts.clone().run(shutdown.clone()));
        let engine = Engine::new(
            config.clone(),
            queue.clone(),
            metrics.clone(),
            alerts,
            consumer_name(),
        );
        Some(tokio::spawn(
            engine.run(shutdown.clone(), config.server.shutdown_timeout),
        ))
    } else {
        None
    };

    let admin_app = admin::router(AdminState {
        config: config.clone(),
        queue: queue.clone(),
        metrics: metrics.clone(),
    })
    .layer(TraceLayer::new_for_http())
    .layer(CatchPanicLayer::new());
    let admin_addr = local_addr(&listeners.admin, "admin")?;
    let admin = serve("admin", listeners.admin, admin_app, &shutdown);

    let public = if config.server.ingest {
        // Composed statically and boxed once (by the fallback), rather than
        // once per layer as `Router::layer` would, for every request.
        let stack = ServiceBuilder::new()
            .layer(CatchPanicLayer::new())
            // Every request gets an id (or keeps the sender's), which is
            // logged, stored with the event, sent downstream and echoed back.
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            // Refusals are logged where they are decided, floods of them
            // at most once a second; a line per 5xx here would be a second,
            // unthrottled one.
            .layer(
                TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
            )
            .service(ingest::service(&config, queue.clone(), metrics.clone()));
        let public_app = axum::Router::new().fallback_service(stack);
        let public_addr = local_addr(&listeners.public, "public")?;
        tracing::info!(public = %public_addr, "ingest listening");
        Some(serve_public(
            listeners.public,
            public_app,
            shutdown.clone(),
            PublicLimits {
                header_timeout: config.server.request_timeout,
                max_connections: config.server.max_connections,
            },
            metrics.clone(),
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
        let (public, admin) = tokio::join!(
            async {
                match public {
                    Some(public) => public.await,
                    None => Ok(()),
                }
            },
            admin
        );
        public.and(admin)
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
    let result = tokio::select! {
        (result, ()) = async { tokio::join!(serving, workers_done) } => result,
        () = deadline => {
            tracing::warn!("shutdown deadline passed; dropping work still in flight");
            Ok(())
        }
    };
    watcher.abort();
    tracing::info!("switchyard stopped");
    result
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

/// Serves `app` on `listener` until `shutdown`, then drains connections.
fn serve(
    name: &'static str,
    listener: TcpListener,
    app: axum::Router,
    shutdown: &CancellationToken,
) -> impl Future<Output = Result<(), ServerError>> + use<> {
    let serving = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    async move {
        serving.await.map_err(|source| ServerError::Serve {
            listener: name,
            source,
        })
    }
}

/// Files open besides public connections and deliveries: listeners, Redis
/// connections, admin clients, alert requests, the config file.
const OTHER_FILES: usize = 256;

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
            "the open-file limit is below server.max_connections + delivery.concurrency + {OTHER_FILES}: \
             past it, connections are refused; raise the hard limit (LimitNOFILE) or lower max_connections"
        );
    }
}

/// How often reaching `server.max_connections` is logged at most.
const LIMIT_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Limits of the public listener's connections.
struct PublicLimits {
    /// Deadline for a request's headers (slowloris).
    header_timeout: Duration,
    /// Connections open at once; at the limit the listener stops accepting,
    /// so a flood of connections waits in the kernel's accept queue (and
    /// beyond it is refused) instead of growing memory without bound.
    max_connections: usize,
}

/// Serves the public listener with hyper's HTTP/1.1 server directly (not
/// `axum::serve`, which also sniffs for HTTP/2 with no deadline). Senders
/// are untrusted, so every request's headers, the first included, must
/// arrive within `limits.header_timeout` of the server starting to wait for
/// them (hyper closes the connection otherwise): a client that trickles its
/// headers (slowloris), sends nothing or idles between requests cannot hold
/// one of the `limits.max_connections` for longer. On shutdown it stops
/// accepting and waits for open connections to finish.
async fn serve_public(
    listener: TcpListener,
    app: axum::Router,
    shutdown: CancellationToken,
    limits: PublicLimits,
    metrics: Arc<Metrics>,
) -> Result<(), ServerError> {
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut keep_alive = http1::Builder::new();
    keep_alive
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut one_request = keep_alive.clone();
    one_request.keep_alive(false);
    let pressure = limits.max_connections / 4;
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut last_warned: Option<Instant> = None;
    loop {
        let permit = match open.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                metrics.connection_limit_reached.inc();
                // Under a flood this happens per connection: say it once a minute.
                if last_warned.is_none_or(|at| at.elapsed() >= LIMIT_WARNING_EVERY) {
                    last_warned = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "public listener at server.max_connections; accepting again as connections close"
                    );
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    // Never closed: an error cannot happen, and would end the loop.
                    permit = open.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, say: pause instead of spinning.
                    tracing::warn!(error = %err, "public listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        // With under a quarter of the places left, a new connection serves
        // one request and closes: places turn over instead of idling in
        // senders' connection pools while others wait to be accepted.
        let builder = if open.available_permits() < pressure {
            &one_request
        } else {
            &keep_alive
        };
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        let open_connections = metrics.open_connections.clone();
        open_connections.inc();
        tokio::spawn(async move {
            // A client that goes away or breaks HTTP ends only its connection.
            let _ = connection.await;
            open_connections.dec();
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
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
