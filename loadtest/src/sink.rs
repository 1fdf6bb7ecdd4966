//! The receiver the gateway delivers to: reads the id and send time from
//! each body, records end-to-end latency, counts unique and duplicate
//! deliveries, and can fail a share of requests or answer late.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::body;
use crate::report::latency_histogram;
use crate::schedule::should_fail;

#[derive(Clone, Debug)]
pub struct SinkOptions {
    pub fail_ratio: f64,
    pub delay: Duration,
}

pub struct SinkState {
    pub seen: HashSet<u64>,
    pub duplicates: u64,
    pub foreign: u64,
    pub e2e: Histogram<u64>,
}

pub struct Sink {
    run: String,
    options: SinkOptions,
    requests: AtomicU64,
    pub injected_failures: AtomicU64,
    pub state: Mutex<SinkState>,
}

impl Sink {
    /// Distinct events of this run delivered so far.
    pub fn delivered(&self) -> u64 {
        self.state.lock().unwrap().seen.len() as u64
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let k = self.requests.fetch_add(1, Ordering::Relaxed);
        let bytes = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return answer(StatusCode::BAD_REQUEST),
        };
        if !self.options.delay.is_zero() {
            tokio::time::sleep(self.options.delay).await;
        }
        if should_fail(k, self.options.fail_ratio) {
            self.injected_failures.fetch_add(1, Ordering::Relaxed);
            return answer(StatusCode::SERVICE_UNAVAILABLE);
        }
        let now_ns = unix_ns(SystemTime::now());
        let mut state = self.state.lock().unwrap();
        match body::parse(&bytes) {
            Some(p) if p.run == self.run => {
                if state.seen.insert(p.seq) {
                    let us = now_ns.saturating_sub(p.sent_ns) / 1000;
                    state.e2e.saturating_record(us.max(1));
                } else {
                    state.duplicates += 1;
                }
            }
            _ => state.foreign += 1,
        }
        answer(StatusCode::OK)
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
    let sink = Arc::new(Sink {
        run,
        options,
        requests: AtomicU64::new(0),
        injected_failures: AtomicU64::new(0),
        state: Mutex::new(SinkState {
            seen: HashSet::new(),
            duplicates: 0,
            foreign: 0,
            e2e: latency_histogram(),
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
    Ok(sink)
}
