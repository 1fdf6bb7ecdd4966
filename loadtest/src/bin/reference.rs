//! switchyard-reference: the bare comparator of the ingest target (issue 7:
//! "within 15% of a bare reference: a bare hyper server doing one HMAC check
//! and one XADD per request").
//!
//! For every request it reads the whole body, checks GitHub's
//! `X-Hub-Signature-256` (HMAC-SHA256 of the body with `--secret`, compared
//! in constant time; the tool's own signer code), and adds the body to a
//! Redis stream with one `XADD <stream> * body <bytes>` through one
//! multiplexed connection shared by every request. It answers 202 with the
//! entry's id, 401 on a missing or bad signature, 503 when Redis fails.
//!
//! With `--dedupe` it also does the Redis work the gateway's contract adds
//! (DESIGN invariant 1): one Lua script per request that looks up the
//! `X-GitHub-Delivery` id, and only if it is new adds the entry and records
//! the id for a day, atomically; a repeat is answered 200. That is the fair
//! comparator for what Redis must do per event, without the gateway's
//! batching, routing, jobs or metrics.
//!
//! It is bare on purpose: no routing, batching, limits, timeouts,
//! metrics or per-request logging, and hyper's HTTP/1 server with one task
//! per connection on a multi-thread runtime, like the gateway's listener
//! (and, like it, default socket options). Whatever the gateway costs beyond
//! this server is what it does beyond "verify and store once"; this server's
//! rate, measured on the same machine with the same tool and Redis, is the
//! floor the target is stated against.
//!
//! ```sh
//! switchyard-reference --listen 127.0.0.1:8090 --redis-url redis://127.0.0.1:6390 --secret S
//! switchyard-loadtest --scenario ingest-max --url http://127.0.0.1:8090/hooks/lt --secret S
//! ```

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderName;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use redis::aio::MultiplexedConnection;
use switchyard_loadtest::signer::{Scheme, Signer};
use tokio::net::TcpListener;

/// Stream the bodies go to when `--stream` is absent: its own key, so a run
/// never mixes with the gateway's streams in a shared Redis.
const DEFAULT_STREAM: &str = "switchyard-reference:ingest";
/// Pause after a failed accept (out of file descriptors, say) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

static GITHUB_SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature-256");
static GITHUB_DELIVERY: HeaderName = HeaderName::from_static("x-github-delivery");

/// `--dedupe`: KEYS stream, seen key; ARGV body, TTL (ms). Returns the entry
/// id, or false when the delivery id was seen before.
const DEDUPE_AND_ADD: &str = r"
if redis.call('GET', KEYS[2]) then return false end
local id = redis.call('XADD', KEYS[1], '*', 'body', ARGV[1])
redis.call('SET', KEYS[2], id, 'PX', ARGV[2])
return id
";
/// How long `--dedupe` remembers a delivery id (the gateway's default window).
const DEDUPE_TTL_MS: u64 = 24 * 60 * 60 * 1000;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Bare reference server: one HMAC check and one XADD per request"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Redis to add the bodies to (no default: it writes a stream entry per
    /// request, so it should never land in a shared Redis by accident).
    #[arg(long)]
    redis_url: String,
    /// The GitHub signing secret requests must be signed with.
    #[arg(
        long,
        env = "SWITCHYARD_LOADTEST_SECRET",
        default_value = "demo-webhook-secret",
        hide_env_values = true
    )]
    secret: String,
    /// Stream key the bodies are added to.
    #[arg(long, default_value = DEFAULT_STREAM)]
    stream: String,
    /// Dedupe by `X-GitHub-Delivery` atomically with the XADD, in one Lua
    /// script per request.
    #[arg(long)]
    dedupe: bool,
}

/// What every request needs, shared by all connections.
struct State {
    signer: Signer,
    redis: MultiplexedConnection,
    stream: String,
    /// `--dedupe`'s script, when on.
    dedupe: Option<redis::Script>,
    /// Whether a Redis error was logged already: the first is enough.
    redis_error_logged: AtomicBool,
}

impl State {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::POST {
            return answer(StatusCode::METHOD_NOT_ALLOWED, Bytes::new());
        }
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return answer(StatusCode::BAD_REQUEST, Bytes::new()),
        };
        let signed = parts
            .headers
            .get(&GITHUB_SIGNATURE)
            .is_some_and(|sig| self.signer.github_signature_matches(sig.as_bytes(), &body));
        if !signed {
            return answer(StatusCode::UNAUTHORIZED, Bytes::new());
        }
        let added: redis::RedisResult<Option<String>> = match &self.dedupe {
            Some(script) => {
                let delivery = parts
                    .headers
                    .get(&GITHUB_DELIVERY)
                    .map_or(&b""[..], |v| v.as_bytes());
                let mut seen_key = format!("{}:seen:", self.stream).into_bytes();
                seen_key.extend_from_slice(delivery);
                script
                    .key(&self.stream)
                    .key(seen_key)
                    .arg(&body[..])
                    .arg(DEDUPE_TTL_MS)
                    .invoke_async(&mut self.redis.clone())
                    .await
            }
            None => {
                redis::cmd("XADD")
                    .arg(&self.stream)
                    .arg("*")
                    .arg("body")
                    .arg(&body[..])
                    .query_async(&mut self.redis.clone())
                    .await
            }
        };
        match added {
            Ok(Some(id)) => answer(StatusCode::ACCEPTED, Bytes::from(id)),
            Ok(None) => answer(StatusCode::OK, Bytes::from_static(b"duplicate")),
            Err(err) => {
                if !self.redis_error_logged.swap(true, Ordering::Relaxed) {
                    eprintln!("switchyard-reference: XADD failed (logged once): {err}");
                }
                answer(StatusCode::SERVICE_UNAVAILABLE, Bytes::new())
            }
        }
    }
}

fn answer(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let redis = redis::Client::open(cli.redis_url.as_str())
        .context("--redis-url")?
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("cannot connect to {}", cli.redis_url))?;
    let state = Arc::new(State {
        signer: Signer::new(Scheme::Github, cli.secret.as_bytes())?,
        redis,
        stream: cli.stream,
        dedupe: cli.dedupe.then(|| redis::Script::new(DEDUPE_AND_ADD)),
        redis_error_logged: AtomicBool::new(false),
    });
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    eprintln!("switchyard-reference: listening on {}", cli.listen);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                eprintln!("switchyard-reference: accept failed: {err}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(state.handle(req).await) }
            });
            // A client that goes away or breaks HTTP ends only its connection.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
