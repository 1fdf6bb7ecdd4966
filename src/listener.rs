//! The accept loop both listeners share: HTTP/1.1 served by hyper directly,
//! a bound on open connections and a deadline on every request's headers.
//!
//! Neither listener's clients can be trusted to behave: senders are
//! strangers, and anything that reaches the admin port (a scanner, a stuck
//! probe, a script that leaks connections) shares the process's file
//! descriptors with ingest, Redis and deliveries. So each listener holds at
//! most its own number of connections (at the limit it stops accepting, and
//! further clients wait in the kernel's accept queue), and a client that
//! trickles its headers (slowloris), sends nothing, or idles between
//! requests loses its connection after the header deadline.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::telemetry::LogThrottle;

/// Connections the kernel holds for `accept`. Senders open many at once (at
/// start, after a pause); when the queue is full the kernel drops their SYNs
/// and they retry only a second later, which showed as 1 s latency spikes
/// under load with tokio's default of 1024. The kernel caps it at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 8192;

/// How often reaching the connection limit is logged at most.
const LIMIT_WARNING_EVERY: Duration = Duration::from_secs(60);

/// How often a failing `accept` is logged at most: out of file descriptors
/// it fails on every try, and a line per try flooded the log (2,285 lines
/// in two minutes).
const ACCEPT_WARNING_EVERY: Duration = Duration::from_secs(10);

/// How long to pause after a failed `accept` (out of file descriptors,
/// say) instead of spinning on it.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Binds `addr` with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
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

/// How one listener protects itself, and where it counts.
pub struct Limits {
    /// `public` or `admin`, for logs.
    pub name: &'static str,
    /// The config key of `max_connections`, for the warning at the limit.
    pub limit_key: &'static str,
    /// Deadline for a request's headers.
    pub header_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open now.
    pub open_connections: Gauge,
    /// Times the listener stopped accepting at the limit.
    pub limit_reached: Counter,
    /// Failed `accept` calls.
    pub accept_failures: Counter,
}

/// Serves `app` on `listener` until `shutdown`, then stops accepting and
/// waits for open connections to finish. Every request's headers, the first
/// included, must arrive within `limits.header_timeout` of the server
/// starting to wait for them, or hyper closes the connection.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let mut keep_alive = http1::Builder::new();
    keep_alive
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut one_request = keep_alive.clone();
    one_request.keep_alive(false);
    let pressure = limits.max_connections / 4;
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let at_limit_log = LogThrottle::new(LIMIT_WARNING_EVERY);
    let accept_failed_log = LogThrottle::new(ACCEPT_WARNING_EVERY);
    loop {
        let permit = match open.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                limits.limit_reached.inc();
                // Under a flood this happens per connection: say it once a minute.
                if let Some(times) = at_limit_log.note() {
                    tracing::warn!(
                        listener = limits.name,
                        setting = limits.limit_key,
                        max_connections = limits.max_connections,
                        times,
                        "listener at its connection limit; accepting again as connections close"
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
                    limits.accept_failures.inc();
                    if let Some(failures) = accept_failed_log.note() {
                        tracing::warn!(
                            listener = limits.name,
                            error = %err,
                            failures,
                            "accept failed; retrying"
                        );
                    }
                    tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        // With under a quarter of the places left, a new connection serves
        // one request and closes: places turn over instead of idling in
        // clients' connection pools while others wait to be accepted.
        let builder = if open.available_permits() < pressure {
            &one_request
        } else {
            &keep_alive
        };
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        let open_connections = limits.open_connections.clone();
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
}
