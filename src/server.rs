//! Wiring: binds the listeners, starts the background tasks, serves until
//! shutdown is requested, then drains in-flight requests within a deadline.

use std::future::IntoFuture;
use std::io;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::ingest;
use crate::queue::{Queue, QueueError};
use crate::telemetry::Metrics;

/// How often the Redis watcher checks the connection; a state change is
/// logged once, so this only bounds how late the log line comes.
const REDIS_WATCH_INTERVAL: Duration = Duration::from_secs(2);

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
        let bind = |addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })
        };
        Ok(Self {
            public: bind(config.server.listen).await?,
            admin: bind(config.server.admin_listen).await?,
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
}

/// Runs the gateway until `shutdown` is cancelled, then stops accepting,
/// lets in-flight requests finish for up to `server.shutdown_timeout`, and
/// returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let queue = Queue::connect_lazy(&config.redis)?;
    let watcher = tokio::spawn(watch_redis(queue.clone(), shutdown.clone()));

    let metrics = Metrics::new();
    let public_app = ingest::router(&config, queue.clone(), metrics.clone())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            http::StatusCode::REQUEST_TIMEOUT,
            config.server.request_timeout,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::new());
    let admin_app = admin::router(AdminState {
        queue: queue.clone(),
        metrics,
    })
    .layer(TraceLayer::new_for_http())
    .layer(CatchPanicLayer::new());

    tracing::info!(
        public = %listeners.public.local_addr().map_err(|source| ServerError::Serve { listener: "public", source })?,
        admin = %listeners.admin.local_addr().map_err(|source| ServerError::Serve { listener: "admin", source })?,
        redis = %queue.display_url(),
        sources = config.sources.len(),
        routes = config.routes.len(),
        "switchyard listening"
    );

    let public = axum::serve(listeners.public, public_app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let admin = axum::serve(listeners.admin, admin_app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let serving = async {
        let (public, admin) = tokio::join!(public, admin);
        public.map_err(|source| ServerError::Serve {
            listener: "public",
            source,
        })?;
        admin.map_err(|source| ServerError::Serve {
            listener: "admin",
            source,
        })
    };
    let deadline = async {
        shutdown.cancelled().await;
        tracing::info!(
            deadline = %humantime::format_duration(config.server.shutdown_timeout),
            "shutting down: no new connections, finishing in-flight requests"
        );
        tokio::time::sleep(config.server.shutdown_timeout).await;
    };
    let result = tokio::select! {
        result = serving => result,
        () = deadline => {
            tracing::warn!("shutdown deadline passed; dropping requests still in flight");
            Ok(())
        }
    };
    watcher.abort();
    tracing::info!("switchyard stopped");
    result
}

/// Logs Redis going away and coming back (once per change, with the URL and
/// the cause), and checks persistence once Redis first answers.
async fn watch_redis(queue: Queue, shutdown: CancellationToken) {
    let mut up: Option<bool> = None;
    let mut persistence_checked = false;
    loop {
        match queue.ping(admin::READINESS_PING_TIMEOUT).await {
            Ok(()) => {
                if up != Some(true) {
                    tracing::info!(redis = %queue.display_url(), "redis reachable");
                }
                up = Some(true);
                if !persistence_checked {
                    persistence_checked = true;
                    warn_without_persistence(&queue).await;
                }
            }
            Err(err) => {
                if up != Some(false) {
                    tracing::error!(
                        redis = %queue.display_url(),
                        error = %err,
                        "redis unreachable; webhooks are refused with 503 until it returns, retrying"
                    );
                }
                up = Some(false);
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(REDIS_WATCH_INTERVAL) => {}
        }
    }
}

async fn warn_without_persistence(queue: &Queue) {
    match queue.persistence().await {
        Ok(p) if p.is_none() => tracing::warn!(
            redis = %queue.display_url(),
            "redis keeps nothing on disk (no AOF, no RDB save): acked webhooks die with Redis; \
             enable appendonly for production"
        ),
        Ok(p) => tracing::info!(aof = p.aof, rdb = p.rdb, "redis persistence"),
        Err(err) => tracing::info!(
            error = %err,
            "cannot read redis persistence settings (CONFIG disabled?); make sure AOF or RDB is on"
        ),
    }
}
