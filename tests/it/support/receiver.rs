//! A real HTTP server standing in for a webhook destination. It records
//! every request (method, path, headers, body bytes) and answers from a
//! script: a status a number of times, after a delay, with `Retry-After`, or
//! by closing the connection without an answer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One answer of the script.
#[derive(Debug, Clone)]
pub struct Reply {
    status: StatusCode,
    delay: Duration,
    retry_after: Option<String>,
    close: bool,
    times: usize,
}

impl Reply {
    /// Answers `status` once.
    pub fn status(status: u16) -> Self {
        Self {
            status: StatusCode::from_u16(status).expect("valid status"),
            delay: Duration::ZERO,
            retry_after: None,
            close: false,
            times: 1,
        }
    }

    /// `200 OK` once.
    pub fn ok() -> Self {
        Self::status(200)
    }

    /// Closes the connection without answering.
    pub fn close() -> Self {
        Self {
            close: true,
            ..Self::ok()
        }
    }

    /// Repeats this answer `n` times.
    pub fn times(self, n: usize) -> Self {
        Self { times: n, ..self }
    }

    /// Waits `delay` before answering.
    pub fn delay(self, delay: Duration) -> Self {
        Self { delay, ..self }
    }

    /// Adds a `Retry-After` header.
    pub fn retry_after(self, value: &str) -> Self {
        Self {
            retry_after: Some(value.to_owned()),
            ..self
        }
    }
}

/// A request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// Every header.
    pub headers: HeaderMap,
    /// Body bytes exactly.
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
    /// The answer, once it is ready to go (after the scripted delay); `None`
    /// while delayed, and for a closed or abandoned request.
    pub answered: Option<Answered>,
    /// When the connection went away before the answer (the receiver
    /// closed it, or the client left).
    pub abandoned: Option<Instant>,
}

impl Recorded {
    /// When the request was over at the receiver: answered or abandoned.
    pub fn ended(&self) -> Option<Instant> {
        self.answered.map(|a| a.at).or(self.abandoned)
    }

    /// Header `name` as text; empty when absent or not text.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

/// The answer the receiver gave to one request.
#[derive(Debug, Clone, Copy)]
pub struct Answered {
    /// The status sent.
    pub status: StatusCode,
    /// When it was sent.
    pub at: Instant,
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    fallback: Option<Reply>,
    recorded: Vec<Recorded>,
}

impl Script {
    fn next_reply(&mut self) -> Reply {
        if let Some(front) = self.replies.front_mut() {
            let reply = front.clone();
            front.times -= 1;
            if front.times == 0 {
                self.replies.pop_front();
            }
            return reply;
        }
        self.fallback.clone().unwrap_or_else(Reply::ok)
    }
}

/// The running receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts on a free port of 127.0.0.1, answering 200 until scripted.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let script = Arc::new(Mutex::new(Script::default()));
        let arrived = Arc::new(Notify::new());
        let task = tokio::spawn(accept_loop(listener, script.clone(), arrived.clone()));
        Self {
            addr,
            script,
            arrived,
            task,
        }
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Appends answers to the script; they are used in order.
    pub fn then(&self, reply: Reply) -> &Self {
        self.lock().replies.push_back(reply);
        self
    }

    /// The answer once the script is used up (200 unless set).
    pub fn otherwise(&self, reply: Reply) {
        self.lock().fallback = Some(reply);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().recorded.clone()
    }

    /// The requests answered with a 2xx so far: what the destination took.
    pub fn accepted(&self) -> Vec<Recorded> {
        self.lock()
            .recorded
            .iter()
            .filter(|r| r.answered.is_some_and(|a| a.status.is_success()))
            .cloned()
            .collect()
    }

    /// Waits until at least `n` requests arrived or `within` passed, and
    /// returns what arrived.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.arrived.notified();
            let seen = self.requests();
            if seen.len() >= n {
                return seen;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.requests();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        // A test that panicked while holding the lock is already failing.
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, script: Arc<Mutex<Script>>, arrived: Arc<Notify>) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let script = script.clone();
        let arrived = arrived.clone();
        connections.spawn(async move {
            let close = Arc::new(Notify::new());
            let close_signal = close.clone();
            let service = service_fn(move |request| {
                answer(
                    request,
                    script.clone(),
                    arrived.clone(),
                    close_signal.clone(),
                )
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            // Dropping the connection future closes the socket mid-request.
            tokio::select! {
                _ = connection => {}
                () = close.notified() => {}
            }
        });
    }
}

/// Marks its request abandoned when dropped unanswered: hyper drops the
/// answering future when the connection goes away.
struct Unanswered {
    script: Arc<Mutex<Script>>,
    index: usize,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let mut script = self.script.lock().unwrap_or_else(|e| e.into_inner());
        let request = &mut script.recorded[self.index];
        if request.answered.is_none() {
            request.abandoned = Some(Instant::now());
        }
    }
}

async fn answer(
    request: Request<Incoming>,
    script: Arc<Mutex<Script>>,
    arrived: Arc<Notify>,
    close: Arc<Notify>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (index, reply) = {
        let mut script = script.lock().unwrap_or_else(|e| e.into_inner());
        script.recorded.push(Recorded {
            method: parts.method,
            uri: parts.uri.to_string(),
            headers: parts.headers,
            body,
            at: Instant::now(),
            answered: None,
            abandoned: None,
        });
        (script.recorded.len() - 1, script.next_reply())
    };
    let _unanswered = Unanswered {
        script: script.clone(),
        index,
    };
    arrived.notify_waiters();
    // If hyper drops this future because the client went away, the request
    // stays unanswered.
    tokio::time::sleep(reply.delay).await;
    if reply.close {
        close.notify_one();
        std::future::pending::<()>().await;
    }
    script.lock().unwrap_or_else(|e| e.into_inner()).recorded[index].answered = Some(Answered {
        status: reply.status,
        at: Instant::now(),
    });
    let mut response = Response::builder().status(reply.status);
    if let Some(retry_after) = &reply.retry_after {
        response = response.header(http::header::RETRY_AFTER, retry_after);
    }
    Ok(response
        .body(Full::new(Bytes::new()))
        .expect("valid response"))
}
