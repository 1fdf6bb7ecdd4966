//! The admin listener: health and readiness probes, and (as the gateway
//! grows) the admin API, metrics and the dashboard.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use serde_json::json;

use crate::api_error::ApiError;
use crate::queue::Queue;
use crate::telemetry::Metrics;

/// `/readyz` fails when Redis takes longer than this to answer PING; load
/// balancers probe every few seconds, so the answer must come first.
pub const READINESS_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// State shared by admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// The gateway's Redis.
    pub queue: Queue,
    /// The gateway's metrics.
    pub metrics: Arc<Metrics>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AdminState>) -> Response {
    match state.queue.ping(READINESS_PING_TIMEOUT).await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(err) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "redis_unavailable",
            err.to_string(),
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
