//! The load generator: signed requests over HTTP/1.1 keep-alive, open loop
//! (fixed schedule) or closed loop (N connections, back to back).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body;
use crate::report::latency_histogram;
use crate::schedule::OpenLoop;
use crate::signer::Signer;
use crate::sink::unix_ns;

/// How requests are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    Open { rate: f64 },
    Closed { connections: usize },
}

pub struct Target {
    pub uri: hyper::Uri,
    pub signer: Signer,
    pub body_bytes: usize,
    pub timeout: Duration,
    pub run: String,
}

#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    pub ok: AtomicU64,
}

pub struct Results {
    pub status_counts: BTreeMap<u16, u64>,
    pub latency: Histogram<u64>,
    /// Sequence numbers the gateway answered with a 2xx.
    pub acked: Vec<u64>,
    /// Sequence numbers answered otherwise, or not at all.
    pub unacked: Vec<u64>,
}

pub struct Generator {
    target: Target,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Wall clock and monotonic clock read together, to stamp intended send times.
    wall_start_ns: u64,
    mono_start: Instant,
    pub counters: Counters,
    pub results: Mutex<Results>,
}

impl Generator {
    pub fn new(target: Target) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Arc::new(Self {
            target,
            client,
            wall_start_ns: unix_ns(SystemTime::now()),
            mono_start: Instant::now(),
            counters: Counters::default(),
            results: Mutex::new(Results {
                status_counts: BTreeMap::new(),
                latency: latency_histogram(),
                acked: Vec::new(),
                unacked: Vec::new(),
            }),
        })
    }

    /// Runs the load for `duration`, then waits (at most the request
    /// timeout) for the requests still in flight. Returns the load phase's
    /// length, from the first send to the last answer.
    pub async fn run(self: &Arc<Self>, load: &Load, duration: Duration) -> Duration {
        let start = Instant::now();
        match *load {
            Load::Open { rate } => self.open_loop(start, rate, duration).await,
            Load::Closed { connections } => self.closed_loop(start, connections, duration).await,
        }
        start.elapsed()
    }

    async fn open_loop(self: &Arc<Self>, start: Instant, rate: f64, duration: Duration) {
        let schedule = OpenLoop::new(rate, duration);
        let mut tasks = tokio::task::JoinSet::new();
        for seq in 0..schedule.len() {
            let due = start + schedule.offset(seq);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            } else if seq % 256 == 0 {
                // Behind schedule: catch up, but let the other tasks run.
                tokio::task::yield_now().await;
            }
            let this = self.clone();
            tasks.spawn(async move { this.one(seq, due).await });
            // Reap finished tasks so the set stays the size of what is in flight.
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn closed_loop(self: &Arc<Self>, start: Instant, connections: usize, duration: Duration) {
        let end = start + duration;
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..connections {
            let this = self.clone();
            let next = next.clone();
            tasks.spawn(async move {
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    this.one(seq, now).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Sends request `seq`, due at `due`, and records its answer.
    async fn one(&self, seq: u64, due: Instant) {
        let t = &self.target;
        let id = body::request_id(&t.run, seq);
        let sent_ns = self.wall_start_ns + due.duration_since(self.mono_start).as_nanos() as u64;
        let payload = body::build(&id, sent_ns, t.body_bytes);
        let mut req = Request::post(t.uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::new()))
            .expect("valid request");
        for (name, value) in t.signer.headers(&id, sent_ns / 1_000_000_000, &payload) {
            req.headers_mut().insert(name, value);
        }
        *req.body_mut() = Full::new(Bytes::from(payload));
        self.counters.sent.fetch_add(1, Ordering::Relaxed);

        let exchange = async {
            let resp = self.client.request(req).await?;
            let status = resp.status().as_u16();
            resp.into_body().collect().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
        };
        let outcome = tokio::time::timeout(t.timeout, exchange).await;
        let latency_us = (due.elapsed().as_micros() as u64).max(1);
        let mut r = self.results.lock().unwrap();
        match outcome {
            Ok(Ok(status)) => {
                self.counters.completed.fetch_add(1, Ordering::Relaxed);
                r.latency.saturating_record(latency_us);
                *r.status_counts.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    self.counters.ok.fetch_add(1, Ordering::Relaxed);
                    r.acked.push(seq);
                } else {
                    r.unacked.push(seq);
                }
            }
            Ok(Err(_)) | Err(_) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                r.unacked.push(seq);
            }
        }
    }
}
