//! The one error type at the HTTP edge: every client-visible failure becomes
//! a status and `{"error": "<code>", "message": "…"}` (DESIGN.md invariant 5).

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;

/// An answer to a request that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human explanation; never contains secrets or expected signatures.
    pub message: String,
}

impl ApiError {
    /// Builds an error answer.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// `404 unknown_source`: nothing is configured at this path.
    pub fn unknown_source(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_source",
            format!("no source is configured at {path}"),
        )
    }

    /// `413 body_too_large`: over `server.max_body_bytes`.
    pub fn body_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is larger than this gateway accepts",
        )
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.code,
            message: &self.message,
        };
        (self.status, Json(body)).into_response()
    }
}
