//! The receiver the gateway delivers to: reads the id and send time from
//! each body, records end-to-end latency, counts unique and duplicate
//! deliveries per request path (see `deliveries`), and can fail a share of
//! requests or answer late, on every path or on one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::body;
use crate::deliveries::{Deliveries, Recorded};
use crate::keys::KeyLedger;
use crate::schedule::should_fail;

/// How the sink misbehaves on purpose.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkOptions {
    /// Share of requests answered 503 (0.0 to 1.0).
    pub fail_ratio: f64,
    /// Fail only requests to this path; `None`: any path.
    pub fail_path: Option<String>,
    /// How long to wait before answering.
    pub delay: Duration,
    /// Delay only requests to this path; `None`: any path.
    pub delay_path: Option<String>,
}

/// Whether a behaviour limited to `only` (or to no path) applies to `path`.
fn applies_to(only: Option<&str>, path: &str) -> bool {
    only.is_none_or(|only| only == path)
}

pub struct SinkState {
    pub deliveries: Deliveries,
    pub keys: KeyLedger,
    /// Bodies that were not this run's, or arrived on a path past `MAX_PATHS`.
    pub foreign: u64,
}

pub struct Sink {
    run: String,
    options: SinkOptions,
    /// Requests the fail ratio applied to so far: their rank drives the
    /// deterministic `should_fail`, so with `fail_path` the ratio holds for
    /// that path rather than for all traffic.
    fail_candidates: AtomicU64,
    pub injected_failures: AtomicU64,
    pub state: Mutex<SinkState>,
}

impl Sink {
    /// Distinct (path, event) pairs of this run delivered so far.
    pub fn delivered(&self) -> u64 {
        self.state.lock().unwrap().deliveries.pairs()
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return answer(StatusCode::BAD_REQUEST),
        };
        let ours = body::parse(&bytes).filter(|p| p.run == self.run);
        let key = ours.as_ref().and_then(|p| p.key);
        if let Some(key) = key {
            self.state.lock().unwrap().keys.opened(key);
        }
        let status = self.answer_to(path).await;
        let now_ns = unix_ns(SystemTime::now());
        let mut state = self.state.lock().unwrap();
        if let Some(key) = key {
            state.keys.closed(key);
        }
        if status != StatusCode::OK {
            return answer(status);
        }
        match ours {
            Some(p) => {
                let latency_us = (now_ns.saturating_sub(p.sent_ns) / 1000).max(1);
                match state
                    .deliveries
                    .record(path, p.seq, latency_us, now_ns / 1000)
                {
                    Recorded::First => {
                        if let Some(key) = key {
                            state.keys.delivered(key, p.seq);
                        }
                    }
                    Recorded::Duplicate => {}
                    Recorded::Untracked => state.foreign += 1,
                }
            }
            None => state.foreign += 1,
        }
        answer(StatusCode::OK)
    }

    /// The status for a request to `path`, after the delay asked for.
    async fn answer_to(&self, path: &str) -> StatusCode {
        let options = &self.options;
        if !options.delay.is_zero() && applies_to(options.delay_path.as_deref(), path) {
            tokio::time::sleep(options.delay).await;
        }
        if applies_to(options.fail_path.as_deref(), path) {
            let k = self.fail_candidates.fetch_add(1, Ordering::Relaxed);
            if should_fail(k, options.fail_ratio) {
                self.injected_failures.fetch_add(1, Ordering::Relaxed);
                return StatusCode::SERVICE_UNAVAILABLE;
            }
        }
        StatusCode::OK
    }
}

fn answer(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Binds `addr` and serves until the process ends.
pub async fn start(
    addr: SocketAddr,
    run: String,
    options: SinkOptions,
) -> anyhow::Result<Arc<Sink>> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("sink: cannot listen on {addr}"))?;
    Ok(serve(listener, run, options))
}

/// Serves on `listener` until the process ends.
fn serve(listener: TcpListener, run: String, options: SinkOptions) -> Arc<Sink> {
    let sink = Arc::new(Sink {
        run,
        options,
        fail_candidates: AtomicU64::new(0),
        injected_failures: AtomicU64::new(0),
        state: Mutex::new(SinkState {
            deliveries: Deliveries::default(),
            keys: KeyLedger::default(),
            foreign: 0,
        }),
    });
    let accepting = sink.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let sink = accepting.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let sink = sink.clone();
                    async move { Ok::<_, Infallible>(sink.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    sink
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_behaviour_without_a_path_applies_to_every_path() {
        assert!(applies_to(None, "/a"));
        assert!(applies_to(Some("/slow"), "/slow"));
        assert!(!applies_to(Some("/slow"), "/fast"));
        assert!(!applies_to(Some("/slow"), "/slow/"));
    }

    /// POSTs this run's event `seq` to `path` on the sink; the answer's status.
    async fn deliver(addr: SocketAddr, path: &str, run: &str, seq: u64) -> u16 {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let payload = body::build(
            &body::request_id(run, seq),
            None,
            unix_ns(SystemTime::now()),
            100,
        );
        let req = Request::post(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::from(payload)))
            .unwrap();
        client.request(req).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn failures_and_duplicates_are_per_path() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let options = SinkOptions {
            fail_ratio: 1.0,
            fail_path: Some("/dead".into()),
            delay: Duration::ZERO,
            delay_path: None,
        };
        let sink = serve(listener, "run1".into(), options);
        assert_eq!(deliver(addr, "/a", "run1", 1).await, 200);
        assert_eq!(deliver(addr, "/b", "run1", 1).await, 200);
        assert_eq!(deliver(addr, "/a", "run1", 1).await, 200);
        assert_eq!(deliver(addr, "/dead", "run1", 1).await, 503);
        assert_eq!(deliver(addr, "/a", "other-run", 1).await, 200);
        assert_eq!(sink.injected_failures.load(Ordering::Relaxed), 1);
        let state = sink.state.lock().unwrap();
        assert_eq!(state.deliveries.paths_of(1), 2);
        assert_eq!(state.deliveries.pairs(), 2);
        assert_eq!(state.deliveries.duplicates(), 1);
        assert_eq!(state.foreign, 1);
    }

    #[tokio::test]
    async fn the_delay_applies_only_to_its_path() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let options = SinkOptions {
            fail_ratio: 0.0,
            fail_path: None,
            delay: Duration::from_millis(300),
            delay_path: Some("/slow".into()),
        };
        serve(listener, "run1".into(), options);
        let started = std::time::Instant::now();
        deliver(addr, "/fast", "run1", 1).await;
        let fast = started.elapsed();
        deliver(addr, "/slow", "run1", 1).await;
        let slow = started.elapsed() - fast;
        // Generous bounds: real time on a shared machine.
        assert!(fast < Duration::from_millis(250), "{fast:?}");
        assert!(slow >= Duration::from_millis(300), "{slow:?}");
    }
}
