//! The public listener: each source, found by its path, behind its own
//! stack (load shedding → body limit and signature verification → handler),
//! every answer counted by outcome. An event is answered 2xx only once every
//! job of it is written to Redis.

mod filter;
mod handler;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::{Method, Request, StatusCode, header};
use prometheus_client::metrics::counter::Counter;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};

use crate::api_error::{ApiError, ErrorCode};
use crate::config::{Config, EventField, Filter};
use crate::queue::{EventWriter, Queue};
use crate::signature::{self, VerifyLayer};
use crate::telemetry::{LogThrottle, Metrics, RouteLabels, SourceLabels};

pub use filter::EventView;
pub use handler::Outcome;

use handler::RequestDeadline;

/// Floods of one failure are logged at most this often.
const FLOOD_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Label of requests that reached no source.
const UNKNOWN_SOURCE_LABEL: &str = "unknown";

/// A route as ingest needs it: a name to enqueue, a filter to match, and
/// its counter (looked up once, not per request).
struct RouteMatch {
    name: String,
    filter: Option<Filter>,
    enqueued: Counter,
    /// An ordered route's count of events without an ordering key.
    unordered: Option<Counter>,
}

/// What the handler of one source needs.
struct SourceState {
    name: String,
    dedupe_window: std::time::Duration,
    ordering_key: Option<EventField>,
    routes: Vec<RouteMatch>,
    /// Events that matched no route.
    unrouted: Counter,
    /// Requests answered `accepted` and `duplicate`, the outcomes of nearly
    /// every request (others are looked up when they happen).
    accepted_requests: Counter,
    duplicate_requests: Counter,
    writer: EventWriter,
    metrics: Arc<Metrics>,
    /// Refusals for overload, logged at most once a second (see
    /// [`LogThrottle`]); shared by every source, as the limit is.
    shed_log: Arc<LogThrottle>,
    /// This source's refusals for Redis failures, logged the same way.
    queue_unavailable_log: LogThrottle,
}

/// One source as the public service holds it: its state and its stack
/// (load shedding, verification, handler).
struct SourceEntry<S> {
    state: Arc<SourceState>,
    stack: S,
}

/// The public service: finds the source by exact path, refuses what the
/// request head alone shows to be wrong, runs the source's stack and counts
/// every answer by outcome. Written as one service with one boxed future per
/// request: as an axum router with per-source layers it boxed a future per
/// layer.
pub struct Ingest<S> {
    sources: Arc<HashMap<String, SourceEntry<S>>>,
    max_body_bytes: usize,
    request_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl<S> Clone for Ingest<S> {
    fn clone(&self) -> Self {
        Self {
            sources: self.sources.clone(),
            max_body_bytes: self.max_body_bytes,
            request_timeout: self.request_timeout,
            metrics: self.metrics.clone(),
        }
    }
}

/// The public service for every configured source.
pub fn service(
    config: &Config,
    queue: Queue,
    metrics: Arc<Metrics>,
) -> Ingest<
    impl Service<Request<Body>, Response = Response, Error = BoxError, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static,
> {
    let mut by_source: HashMap<&str, Vec<RouteMatch>> = HashMap::new();
    for route in &config.routes {
        by_source
            .entry(&route.source)
            .or_default()
            .push(RouteMatch {
                name: route.name.clone(),
                filter: route.filter.clone(),
                enqueued: metrics
                    .jobs_enqueued
                    .get_or_create(&RouteLabels {
                        route: route.name.clone(),
                    })
                    .clone(),
                unordered: route.ordered.then(|| {
                    metrics
                        .unordered_events
                        .get_or_create(&RouteLabels {
                            route: route.name.clone(),
                        })
                        .clone()
                }),
            });
    }
    let writer = queue.event_writer();
    let shed_log = Arc::new(LogThrottle::new(FLOOD_LOG_INTERVAL));
    // One limit for all sources: it protects the process, not a source.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(
        config.server.max_concurrent_requests,
    ));
    let mut sources = HashMap::new();
    for source in config.sources.values() {
        let state = Arc::new(SourceState {
            name: source.name.clone(),
            dedupe_window: source.dedupe_window,
            ordering_key: source.ordering_key.clone(),
            routes: by_source.remove(source.name.as_str()).unwrap_or_default(),
            unrouted: metrics
                .unrouted_events
                .get_or_create(&SourceLabels {
                    source: source.name.clone(),
                })
                .clone(),
            accepted_requests: metrics.ingest_counter(&source.name, Outcome::Accepted.label()),
            duplicate_requests: metrics.ingest_counter(&source.name, Outcome::Duplicate.label()),
            writer: writer.clone(),
            metrics: metrics.clone(),
            shed_log: shed_log.clone(),
            queue_unavailable_log: LogThrottle::new(FLOOD_LOG_INTERVAL),
        });
        let handler_state = state.clone();
        let stack = ServiceBuilder::new()
            .layer(LoadShedLayer::new())
            .layer(GlobalConcurrencyLimitLayer::with_semaphore(
                in_flight.clone(),
            ))
            .layer(VerifyLayer::new(
                source.name.as_str(),
                signature::verifier_for(source),
                config.server.max_body_bytes,
            ))
            .service(service_fn(move |request| {
                handler::accept(handler_state.clone(), request)
            }));
        sources.insert(source.path.clone(), SourceEntry { state, stack });
    }
    Ingest {
        sources: Arc::new(sources),
        max_body_bytes: config.server.max_body_bytes,
        request_timeout: config.server.request_timeout,
        metrics,
    }
}

impl<S> Service<Request<Body>> for Ingest<S>
where
    S: Service<Request<Body>, Response = Response, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is the source stack's, checked per request by `oneshot`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let Some(source) = self.sources.get(request.uri().path()) else {
            self.metrics
                .ingest(UNKNOWN_SOURCE_LABEL, ErrorCode::UnknownSource.as_str());
            let response = ApiError::unknown_source(request.uri().path()).into_response();
            return Box::pin(std::future::ready(Ok(response)));
        };
        let state = source.state.clone();
        let stack = source.stack.clone();
        let max_body_bytes = self.max_body_bytes;
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        request.extensions_mut().insert(RequestDeadline(deadline));
        Box::pin(async move {
            let response = if request.method() != Method::POST {
                method_not_allowed()
            } else if declared_length(&request).is_some_and(|length| length > max_body_bytes) {
                ApiError::body_too_large().into_response()
            } else {
                // Shedding is the stack's only error. The deadline covers
                // reading the body and verifying (408); the handler gives
                // queueing up at the same deadline (503).
                tokio::time::timeout_at(deadline, stack.oneshot(request))
                    .await
                    .map_or_else(
                        |_| request_timed_out(),
                        |answer| answer.unwrap_or_else(|_| overloaded(&state)),
                    )
            };
            count_outcome(&state, &response);
            Ok(response)
        })
    }
}

/// The body length the sender declared, if any.
fn declared_length<B>(request: &Request<B>) -> Option<usize> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Counts every answer of a source by outcome.
fn count_outcome(state: &SourceState, response: &Response) {
    match Outcome::of(response) {
        Outcome::Accepted => {
            state.accepted_requests.inc();
        }
        Outcome::Duplicate => {
            state.duplicate_requests.inc();
        }
        refused => state.metrics.ingest(&state.name, refused.label()),
    }
}

/// The answer when `server.max_concurrent_requests` are already in flight:
/// at once, before reading the body, so an overload costs little.
fn overloaded(state: &SourceState) -> Response {
    // `shed`: requests answered so since the last such line.
    if let Some(shed) = state.shed_log.note() {
        tracing::warn!(
            shed,
            "overloaded (server.max_concurrent_requests in flight); answering 503"
        );
    }
    with_header(
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Overloaded,
            "too many requests in flight; retry later",
        ),
        header::RETRY_AFTER,
        "1",
    )
}

fn method_not_allowed() -> Response {
    // A 405 names the methods the resource takes (RFC 9110, 15.5.6).
    with_header(
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            "webhooks are delivered with POST",
        ),
        header::ALLOW,
        "POST",
    )
}

/// `error`'s answer with one more header.
fn with_header(error: ApiError, name: header::HeaderName, value: &'static str) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(name, http::HeaderValue::from_static(value));
    response
}

/// The answer when a request was not read, verified and queued within
/// `server.request_timeout`.
fn request_timed_out() -> Response {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        ErrorCode::RequestTimeout,
        "the request was not received in time",
    )
    .into_response()
}
