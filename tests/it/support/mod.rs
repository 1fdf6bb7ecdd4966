//! The test harness: a private `redis-server` per test (or a private Redis
//! Cluster or Sentinel setup), a scriptable HTTP receiver, and a gateway
//! running in-process or as a child process.
//! Everything started here is stopped by its owner's `Drop`, even when a test
//! fails.

pub mod config;
pub mod env;
pub mod gateway;
pub mod github;
pub mod process;
pub mod proxy;
pub mod receiver;
pub mod redis;
pub mod sender;
pub mod signing;
pub mod test_redis;
pub mod tls;
pub mod topology;

use std::net::TcpListener;
use std::time::Duration;

/// Heavy tests (hundreds of events, child processes, timing-sensitive
/// figures) take turns on this lock, so that on a small machine they do not
/// skew each other's timings.
pub static HEAVY_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Polls `check` every 50 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of a Prometheus counter's series whose labels contain `labels`.
pub fn counter(metrics: &str, name: &str, labels: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The last `lines` lines of a log, for failure messages.
pub fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
