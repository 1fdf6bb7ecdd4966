//! The admin listener: health and readiness probes, and (as the gateway
//! grows) the admin API, metrics and the dashboard.

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

/// `/readyz` fails when Redis takes longer than this to answer PING; load
/// balancers probe every few seconds, so the answer must come first.
pub const READINESS_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// State shared by admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// The gateway's Redis.
    pub queue: Queue,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
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
