//! The public listener: one route per source, each behind its own stack
//! (outcome counting → body limit → load shedding → signature verification →
//! handler). An event is answered 2xx only once every job of it is written
//! to Redis.

mod filter;
mod handler;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{StatusCode, Uri, header};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::util::MapResponseLayer;
use tower_http::limit::RequestBodyLimitLayer;

use crate::api_error::ApiError;
use crate::config::{Config, Filter};
use crate::queue::{EventWriter, Queue};
use crate::signature::{self, Refused, VerifyLayer};
use crate::telemetry::{Metrics, RouteLabels, SourceLabels};
use prometheus_client::metrics::counter::Counter;

pub use filter::EventView;
pub use handler::Outcome;

/// Label of requests that reached no source.
const UNKNOWN_SOURCE_LABEL: &str = "unknown";

/// A route as ingest needs it: a name to enqueue, a filter to match, and
/// its counter (looked up once, not per request).
struct RouteMatch {
    name: String,
    filter: Option<Filter>,
    enqueued: Counter,
}

/// What the handler of one source needs.
struct SourceState {
    name: String,
    dedupe_window: std::time::Duration,
    routes: Vec<RouteMatch>,
    /// Events that matched no route.
    unrouted: Counter,
    /// Requests answered `accepted` and `duplicate`, the outcomes of nearly
    /// every request (others are looked up when they happen).
    accepted_requests: Counter,
    duplicate_requests: Counter,
    writer: EventWriter,
    metrics: Arc<Metrics>,
}

/// The public router for every configured source.
pub fn router(config: &Config, queue: Queue, metrics: Arc<Metrics>) -> Router {
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
            });
    }
    let writer = queue.event_writer();
    // One limit for all sources: it protects the process, not a source.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(
        config.server.max_concurrent_requests,
    ));
    let mut router = Router::new();
    for source in config.sources.values() {
        let state = Arc::new(SourceState {
            name: source.name.clone(),
            dedupe_window: source.dedupe_window,
            routes: by_source.remove(source.name.as_str()).unwrap_or_default(),
            unrouted: metrics
                .unrouted_events
                .get_or_create(&SourceLabels {
                    source: source.name.clone(),
                })
                .clone(),
            accepted_requests: metrics.ingest_counter(&source.name, "accepted"),
            duplicate_requests: metrics.ingest_counter(&source.name, "duplicate"),
            writer: writer.clone(),
            metrics: metrics.clone(),
        });
        // Composed statically, saving the box per request that each
        // separate axum layer adds. The body limit stays apart because it
        // changes the body type the others take.
        let shed_and_verify = ServiceBuilder::new()
            .layer(HandleErrorLayer::new(overloaded))
            .layer(LoadShedLayer::new())
            .layer(GlobalConcurrencyLimitLayer::with_semaphore(
                in_flight.clone(),
            ))
            .layer(VerifyLayer::new(
                source.name.as_str(),
                signature::verifier_for(source),
            ));
        let endpoint = post(handler::accept)
            .with_state(state.clone())
            .route_layer(shed_and_verify)
            .route_layer(RequestBodyLimitLayer::new(config.server.max_body_bytes))
            .fallback(method_not_allowed)
            // A plain response map: `from_fn` would box a future and clone
            // the inner service per request.
            .layer(MapResponseLayer::new(move |response: Response| {
                count_outcome(&state, &response);
                response
            }));
        router = router.route(&source.path, endpoint);
    }
    router.fallback(unknown_source).with_state(metrics)
}

/// Counts every answer of a source by outcome.
fn count_outcome(state: &SourceState, response: &Response) {
    let extensions = response.extensions();
    let outcome = extensions
        .get::<Outcome>()
        .map(|o| o.0)
        .or_else(|| extensions.get::<Refused>().map(|r| r.0.code()))
        .unwrap_or_else(|| error_code(response.status()));
    match outcome {
        "accepted" => {
            state.accepted_requests.inc();
        }
        "duplicate" => {
            state.duplicate_requests.inc();
        }
        other => state.metrics.ingest(&state.name, other),
    }
}

async fn unknown_source(State(metrics): State<Arc<Metrics>>, uri: Uri) -> Response {
    metrics.ingest(UNKNOWN_SOURCE_LABEL, "unknown_source");
    ApiError::unknown_source(uri.path()).into_response()
}

/// The answer when `server.max_concurrent_requests` are already in flight:
/// at once, before reading the body, so an overload costs little.
async fn overloaded(_: tower::BoxError) -> Response {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many requests in flight; retry later",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    response.extensions_mut().insert(Outcome("overloaded"));
    response
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "webhooks are delivered with POST",
    )
    .into_response()
}

/// The code for answers produced by tower-http layers (which know nothing of
/// our error format), by status.
fn error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        s if s.is_success() => "accepted",
        _ => "error",
    }
}

/// Gives error answers of tower-http layers (413 from the body limit, 408
/// from the timeout) the JSON body every other error has. It must wrap those
/// layers, so the server applies it outside the request timeout.
pub fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::body_too_large().into_response(),
        StatusCode::REQUEST_TIMEOUT => ApiError::new(
            status,
            "request_timeout",
            "the request was not received in time",
        )
        .into_response(),
        _ => response,
    }
}
