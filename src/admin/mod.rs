//! The admin listener: probes (`/healthz`, `/readyz`), `/metrics`, and the
//! admin API under `/admin/*`, where every request needs a bearer token.
//! Admin and delivery meet only in the queue: a replay is a queue operation.

pub mod auth;
mod dashboard;
mod dead_letters;
mod extract;
mod flow;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use serde_json::json;

use crate::api_error::{ApiError, ErrorCode};
use crate::clock::now_ms;
use crate::config::Config;
use crate::delivery::Flow;
use crate::queue::{AuditEntry, Queue, QueueError};
use crate::replays::Replays;
use crate::telemetry::Metrics;

/// `/readyz` fails when Redis takes longer than this to answer; load
/// balancers probe every few seconds, so the answer must come first. The
/// inventory waits as long for the nodes it names.
const READINESS_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// State shared by admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// The running configuration.
    pub config: Arc<Config>,
    /// The gateway's Redis.
    pub queue: Queue,
    /// The gateway's metrics.
    pub metrics: Arc<Metrics>,
    /// Replay jobs, started here and run by any process.
    pub replays: Arc<Replays>,
    /// This process's delivery view of pauses, when it delivers: a pause or
    /// resume taken here is in it before the answer goes back.
    pub flow: Option<Arc<Flow>>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    let tokens = Arc::new(auth::Tokens::new(&state.config.admin.tokens));
    let admin_api = Router::new()
        .route("/routes", get(routes::inventory))
        .route("/routes/{name}/pause", post(flow::pause))
        .route("/routes/{name}/resume", post(flow::resume))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/replay", post(dead_letters::replay_many))
        .route(
            "/dead-letters/{id}",
            get(dead_letters::show).delete(dead_letters::delete),
        )
        .route("/dead-letters/{id}/replay", post(dead_letters::replay_one))
        .route("/replays", get(dead_letters::replays))
        .route(
            "/replays/{id}",
            get(dead_letters::replay_progress).delete(dead_letters::cancel_replay),
        )
        .route("/audit", get(dead_letters::audit_log))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(tokens, auth::require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::style))
        .nest("/admin", admin_api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Writes one admin action to the audit stream (and the log) with the
/// caller's token name; an audit that cannot be written is logged loudly.
async fn audit(
    state: &AdminState,
    caller: &auth::Caller,
    action: &str,
    target: &str,
    count: usize,
    reason: &str,
) {
    let entry = AuditEntry {
        token: &caller.token,
        action,
        target,
        count,
        reason,
        at_ms: now_ms(),
    };
    tracing::info!(token = %caller.token, action, target, count, reason, "admin action");
    if let Err(err) = state.queue.audit(&entry).await {
        tracing::error!(error = %err, token = %caller.token, action, target, "cannot write the audit log");
    }
}

/// A Redis failure behind an admin request: the client is told to retry,
/// the cause (which names the Redis server) goes to the log, once. Here and
/// not in `api_error`, which knows nothing of the queue.
impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        tracing::error!(error = %err, "admin: redis operation failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::QueueUnavailable,
            "Redis did not answer; try again",
        )
    }
}

// The path is not named in these two: under `/admin` axum has stripped the
// prefix, and the client knows what it asked for.

/// Unknown paths of the admin listener (under `/admin` only once the token
/// is checked, so the API's shape is not shown to anyone).
async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no admin endpoint at this path",
    )
}

/// A known path with another method; axum adds the `Allow` header.
async fn method_not_allowed(method: http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        format!("{method} is not served at this path; the Allow header lists what is"),
    )
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// 200 when every partition's primary answers (503 otherwise, with the
/// error's code and message); either way the body names the nodes in use.
async fn readyz(State(state): State<AdminState>) -> Response {
    let (nodes, verdict) = state.queue.ready(READINESS_PING_TIMEOUT).await;
    match verdict {
        Ok(()) => Json(json!({"status": "ready", "redis": nodes})).into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "error": ErrorCode::RedisUnavailable,
                "message": err.to_string(),
                "redis": nodes,
            })),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_failure_is_a_503_that_does_not_name_the_server() {
        let err = ApiError::from(QueueError::Timeout {
            url: "redis://:hunter2@10.0.0.5:6379/0".into(),
            after: Duration::from_secs(1),
        });
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.code, ErrorCode::QueueUnavailable);
        assert!(!err.message.contains("10.0.0.5"), "{}", err.message);
    }
}
