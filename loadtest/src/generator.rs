//! The load generator: signed requests over HTTP/1.1 keep-alive, open loop
//! (fixed schedule) or closed loop (N connections, back to back).
//!
//! The tool shares the machine with what it measures, so the hot path is
//! kept cheap: hyper's connection-level HTTP/1 senders instead of a pooled
//! client (no pool key, checkout or spawned return per request), each
//! closed loop driving its own connection inside its own task (no task
//! switch per request), and every loop recording into its own [`Results`],
//! merged once at the end (no lock per request). Only the [`Counters`] of
//! the progress line are shared.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use switchyard_loadtest::signer::Signer;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::body;
use crate::report::latency_histogram;
use crate::schedule::OpenLoop;
use crate::sink::unix_ns;

/// How requests are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    Open { rate: f64 },
    Closed { connections: usize },
}

pub struct Target {
    pub uri: Uri,
    pub signer: Signer,
    pub body_bytes: usize,
    /// Ordering keys the events are spread over (`lt_key`), if any.
    pub keys: Option<u64>,
    pub timeout: Duration,
    pub run: String,
}

/// Running totals, read once a second by the progress line.
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    pub ok: AtomicU64,
}

/// What the requests got back: one per loop while running, merged at the end.
pub struct Results {
    pub status_counts: BTreeMap<u16, u64>,
    pub latency: Histogram<u64>,
    /// Sequence numbers the gateway answered with a 2xx, ascending.
    pub acked: Vec<u64>,
    /// Sequence numbers answered otherwise, or not at all, ascending.
    pub unacked: Vec<u64>,
}

impl Results {
    fn new() -> Self {
        Self {
            status_counts: BTreeMap::new(),
            latency: latency_histogram(),
            acked: Vec::new(),
            unacked: Vec::new(),
        }
    }

    /// Request `seq` was answered `status` after `latency_us`, or failed (`None`).
    fn record(&mut self, seq: u64, status: Option<u16>, latency_us: u64) {
        match status {
            Some(status) => {
                self.latency.saturating_record(latency_us);
                *self.status_counts.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    self.acked.push(seq);
                } else {
                    self.unacked.push(seq);
                }
            }
            None => self.unacked.push(seq),
        }
    }

    fn merge(&mut self, other: Results) {
        self.latency
            .add(&other.latency)
            .expect("every histogram has the same bounds");
        for (status, n) in other.status_counts {
            *self.status_counts.entry(status).or_default() += n;
        }
        self.acked.extend(other.acked);
        self.unacked.extend(other.unacked);
    }
}

/// A request's sending half of one HTTP/1.1 connection.
type Sender = SendRequest<Full<Bytes>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct Generator {
    target: Target,
    /// The target's address, resolved once.
    addr: SocketAddr,
    /// The target's path and query: HTTP/1.1 requests carry the origin form.
    path: Uri,
    /// The `Host` header every request carries.
    host: HeaderValue,
    /// Wall clock and monotonic clock read together, to stamp intended send times.
    wall_start_ns: u64,
    mono_start: Instant,
    /// Open loop: connections between requests. A request takes one, or
    /// opens one when none is idle, and puts it back after its answer.
    idle: Mutex<Vec<Sender>>,
    pub counters: Counters,
}

impl Generator {
    /// A generator for `target`; resolves its host once, here.
    pub async fn new(target: Target) -> anyhow::Result<Arc<Self>> {
        let authority = target.uri.authority().context("--url has no host")?.clone();
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        let path = match target.uri.path_and_query() {
            Some(pq) => Uri::from(pq.clone()),
            None => Uri::from_static("/"),
        };
        Ok(Arc::new(Self {
            addr,
            path,
            host: HeaderValue::from_str(authority.as_str()).context("--url host")?,
            target,
            wall_start_ns: unix_ns(SystemTime::now()),
            mono_start: Instant::now(),
            idle: Mutex::new(Vec::new()),
            counters: Counters::default(),
        }))
    }

    /// Runs the load for `duration`, then waits (at most the request
    /// timeout) for the requests still in flight. Returns the load phase's
    /// length, from the first send to the last answer, and the answers.
    pub async fn run(self: &Arc<Self>, load: &Load, duration: Duration) -> (Duration, Results) {
        let start = Instant::now();
        let mut results = match *load {
            Load::Open { rate } => self.open_loop(start, rate, duration).await,
            Load::Closed { connections } => self.closed_loop(start, connections, duration).await,
        };
        let elapsed = start.elapsed();
        results.acked.sort_unstable();
        results.unacked.sort_unstable();
        (elapsed, results)
    }

    async fn open_loop(self: &Arc<Self>, start: Instant, rate: f64, duration: Duration) -> Results {
        let schedule = OpenLoop::new(rate, duration);
        let mut results = Results::new();
        let mut tasks = JoinSet::new();
        for seq in 0..schedule.len() {
            let due = start + schedule.offset(seq);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            } else if seq % 256 == 0 {
                // Behind schedule: catch up, but let the other tasks run.
                tokio::task::yield_now().await;
            }
            let this = self.clone();
            tasks.spawn(async move { this.open_one(seq, due).await });
            // Reap finished tasks so the set stays the size of what is in flight.
            while let Some(answer) = tasks.try_join_next() {
                let (seq, status, latency_us) = answer.expect("a request task panicked");
                results.record(seq, status, latency_us);
            }
        }
        while let Some(answer) = tasks.join_next().await {
            let (seq, status, latency_us) = answer.expect("a request task panicked");
            results.record(seq, status, latency_us);
        }
        results
    }

    /// Open loop: sends request `seq`, due at `due`, on an idle connection
    /// or a new one. Returns its sequence number, status (`None`: failed)
    /// and latency from `due`.
    async fn open_one(&self, seq: u64, due: Instant) -> (u64, Option<u16>, u64) {
        let req = self.request(seq, due);
        let exchange = async {
            let mut sender = self.checkout().await?;
            let status = exchange(&mut sender, req).await?;
            self.idle.lock().unwrap().push(sender);
            Ok::<_, BoxError>(status)
        };
        let status = tokio::time::timeout(self.target.timeout, exchange)
            .await
            .ok()
            .and_then(Result::ok);
        self.count(status);
        (seq, status, latency_us(due))
    }

    /// An idle connection ready for a request, or a new one.
    async fn checkout(&self) -> Result<Sender, BoxError> {
        loop {
            let idle = self.idle.lock().unwrap().pop();
            let Some(mut sender) = idle else {
                let (sender, conn) = self.connect().await?;
                // Shared between request tasks, so driven by a task of its own.
                tokio::spawn(conn);
                return Ok(sender);
            };
            // Closed while idle (the server hung up): not this request's
            // failure, take another.
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
    }

    async fn closed_loop(
        self: &Arc<Self>,
        start: Instant,
        connections: usize,
        duration: Duration,
    ) -> Results {
        let end = start + duration;
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..connections {
            let this = self.clone();
            let next = next.clone();
            tasks.spawn(async move { this.closed_one(end, &next).await });
        }
        let mut results = Results::new();
        while let Some(one) = tasks.join_next().await {
            results.merge(one.expect("a closed loop panicked"));
        }
        results
    }

    /// One closed loop: requests back to back on a connection of its own
    /// until `end`, a new connection after each failure.
    async fn closed_one(&self, end: Instant, next: &AtomicU64) -> Results {
        let mut results = Results::new();
        while Instant::now() < end {
            let connected = tokio::time::timeout(self.target.timeout, self.connect()).await;
            let Ok(Ok((sender, conn))) = connected else {
                // The request this connection was for fails.
                let seq = next.fetch_add(1, Ordering::Relaxed);
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
                self.count(None);
                results.record(seq, None, 0);
                continue;
            };
            // The connection is driven here, beside the requests, so an
            // answer wakes this task alone. When the requests stop (the end,
            // or a failure) the connection is dropped, closing it. If it ends
            // first, it is dropped too (select! owns it), which fails the
            // request in flight or the wait for readiness: the requests stop.
            let mut sending = pin!(self.back_to_back(sender, end, next, &mut results));
            let conn_ended = tokio::select! {
                biased;
                () = &mut sending => false,
                _ = conn => true,
            };
            if conn_ended {
                sending.await;
            }
        }
        results
    }

    /// Sends on `sender` back to back until `end` or a failure.
    async fn back_to_back(
        &self,
        mut sender: Sender,
        end: Instant,
        next: &AtomicU64,
        results: &mut Results,
    ) {
        // Not ready: the connection closed between requests, nothing was sent.
        while sender.ready().await.is_ok() {
            let now = Instant::now();
            if now >= end {
                return;
            }
            let seq = next.fetch_add(1, Ordering::Relaxed);
            let req = self.request(seq, now);
            let status = tokio::time::timeout(self.target.timeout, exchange(&mut sender, req))
                .await
                .ok()
                .and_then(Result::ok);
            self.count(status);
            results.record(seq, status, latency_us(now));
            if status.is_none() {
                return;
            }
        }
    }

    /// A new connection to the target (no delay on small writes).
    async fn connect(
        &self,
    ) -> Result<(Sender, http1::Connection<TokioIo<TcpStream>, Full<Bytes>>), BoxError> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(http1::handshake(TokioIo::new(stream)).await?)
    }

    /// Request `seq`, due at `due`: its body stamped with the intended send
    /// time, signed. Counts it as sent.
    fn request(&self, seq: u64, due: Instant) -> Request<Full<Bytes>> {
        let t = &self.target;
        let id = body::request_id(&t.run, seq);
        let sent_ns = self.wall_start_ns + due.duration_since(self.mono_start).as_nanos() as u64;
        let key = t.keys.map(|keys| body::key_of(seq, keys));
        let payload = body::build(&id, key.as_deref(), sent_ns, t.body_bytes);
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(HOST, self.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        t.signer
            .sign(&mut headers, &id, sent_ns / 1_000_000_000, &payload);
        let mut req = Request::new(Full::new(Bytes::from(payload)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.path.clone();
        *req.headers_mut() = headers;
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        req
    }

    /// Counts an answer with `status`, or a failure (`None`).
    fn count(&self, status: Option<u16>) {
        let c = &self.counters;
        match status {
            Some(status) => {
                c.completed.fetch_add(1, Ordering::Relaxed);
                if (200..300).contains(&status) {
                    c.ok.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Sends `req` and reads the whole answer; its status.
async fn exchange(sender: &mut Sender, req: Request<Full<Bytes>>) -> Result<u16, BoxError> {
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(status)
}

/// Microseconds since `due`, at least 1 (the histogram's floor).
fn latency_us(due: Instant) -> u64 {
    (due.elapsed().as_micros() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;

    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper::{Response, StatusCode};
    use switchyard_loadtest::signer::Scheme;
    use tokio::net::TcpListener;

    use super::*;

    const SECRET: &[u8] = b"generator-test-secret";

    /// What the test server saw.
    #[derive(Default)]
    struct Seen {
        connections: AtomicUsize,
        signed: AtomicUsize,
        forged: AtomicUsize,
    }

    /// A server on 127.0.0.1:0 that checks each request's GitHub signature
    /// and answers 202 (401 when forged); with `keep_alive` false it closes
    /// every connection after one answer, with `answer` false it never answers.
    async fn server(keep_alive: bool, answer: bool) -> (SocketAddr, Arc<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let signer = Arc::new(Signer::new(Scheme::Github, SECRET).unwrap());
        let counting = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counting.connections.fetch_add(1, Ordering::Relaxed);
                let (seen, signer) = (counting.clone(), signer.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (seen, signer) = (seen.clone(), signer.clone());
                        async move {
                            if !answer {
                                std::future::pending::<()>().await;
                            }
                            let sig = req.headers()["x-hub-signature-256"].clone();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let status = if signer.github_signature_matches(sig.as_bytes(), &body) {
                                seen.signed.fetch_add(1, Ordering::Relaxed);
                                StatusCode::ACCEPTED
                            } else {
                                seen.forged.fetch_add(1, Ordering::Relaxed);
                                StatusCode::UNAUTHORIZED
                            };
                            let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *resp.status_mut() = status;
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, seen)
    }

    async fn generator(addr: SocketAddr, secret: &[u8], timeout: Duration) -> Arc<Generator> {
        Generator::new(Target {
            uri: format!("http://{addr}/hooks/lt").parse().unwrap(),
            signer: Signer::new(Scheme::Github, secret).unwrap(),
            body_bytes: 1024,
            keys: None,
            timeout,
            run: "t".into(),
        })
        .await
        .unwrap()
    }

    fn load(g: &Generator) -> [u64; 4] {
        let c = &g.counters;
        [&c.sent, &c.completed, &c.ok, &c.errors].map(|n| n.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn closed_loops_keep_one_connection_each() {
        let (addr, seen) = server(true, true).await;
        let g = generator(addr, SECRET, Duration::from_secs(5)).await;
        let closed = Load::Closed { connections: 4 };
        let (_, results) = g.run(&closed, Duration::from_millis(300)).await;
        let [sent, completed, ok, errors] = load(&g);
        assert!(sent > 4, "{sent}");
        assert_eq!((completed, ok, errors), (sent, sent, 0));
        assert_eq!(results.acked, (0..sent).collect::<Vec<_>>());
        assert!(results.unacked.is_empty());
        assert_eq!(results.latency.len(), sent);
        assert_eq!(results.status_counts, BTreeMap::from([(202, sent)]));
        assert_eq!(seen.signed.load(Ordering::Relaxed) as u64, sent);
        assert_eq!(seen.connections.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_closed_connection_is_replaced_without_an_error() {
        let (addr, seen) = server(false, true).await;
        let g = generator(addr, SECRET, Duration::from_secs(5)).await;
        let closed = Load::Closed { connections: 2 };
        let (_, results) = g.run(&closed, Duration::from_millis(200)).await;
        let [sent, _, ok, errors] = load(&g);
        assert_eq!((ok, errors), (sent, 0));
        assert_eq!(results.acked.len() as u64, sent);
        // One connection per request, give or take the last ones.
        assert!(seen.connections.load(Ordering::Relaxed) as u64 >= sent);
    }

    #[tokio::test]
    async fn the_open_loop_sends_the_schedule_and_reuses_connections() {
        let (addr, seen) = server(true, true).await;
        let g = generator(addr, b"not the secret", Duration::from_secs(5)).await;
        let open = Load::Open { rate: 200.0 };
        let (_, results) = g.run(&open, Duration::from_millis(500)).await;
        assert_eq!(load(&g), [100, 100, 0, 0]);
        assert_eq!(results.status_counts, BTreeMap::from([(401, 100)]));
        assert_eq!(results.unacked, (0..100).collect::<Vec<_>>());
        assert_eq!(seen.forged.load(Ordering::Relaxed), 100);
        // 5 ms apart, answered at once: far fewer connections than requests.
        assert!(seen.connections.load(Ordering::Relaxed) < 20);
    }

    #[tokio::test]
    async fn unanswered_requests_time_out_and_count_as_errors() {
        let (addr, seen) = server(true, false).await;
        let g = generator(addr, SECRET, Duration::from_millis(50)).await;
        let closed = Load::Closed { connections: 2 };
        let (_, results) = g.run(&closed, Duration::from_millis(120)).await;
        let [sent, completed, _, errors] = load(&g);
        assert_eq!((completed, errors), (0, sent));
        assert_eq!(results.unacked, (0..sent).collect::<Vec<_>>());
        // Each timeout costs its connection.
        assert_eq!(seen.connections.load(Ordering::Relaxed) as u64, sent);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_failed_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let g = generator(addr, SECRET, Duration::from_secs(5)).await;
        let open = Load::Open { rate: 100.0 };
        let (_, results) = g.run(&open, Duration::from_millis(100)).await;
        assert_eq!(load(&g), [10, 0, 0, 10]);
        assert_eq!(results.unacked.len(), 10);
        let closed = Load::Closed { connections: 1 };
        g.run(&closed, Duration::from_millis(20)).await;
        let [sent, _, _, errors] = load(&g);
        assert!(sent > 10 && errors == sent, "{sent} {errors}");
    }
}
