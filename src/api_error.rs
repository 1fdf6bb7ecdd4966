//! The one error type at the HTTP edge: every client-visible failure becomes
//! a status and `{"error": "<code>", "message": "…"}` (DESIGN.md invariant 5).
//! The codes are public interface: scripts match on them, so a variant's
//! string never changes.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Serialize, Serializer};

/// The stable machine-readable code of an error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// `bad_request`: the query, path or body is not what the endpoint takes.
    BadRequest,
    /// `unauthorized`: no admin token, or not a configured one.
    Unauthorized,
    /// `not_found`: no such endpoint or resource.
    NotFound,
    /// `method_not_allowed`: the path exists, the method does not (see `Allow`).
    MethodNotAllowed,
    /// `request_timeout`: the request was not received in time.
    RequestTimeout,
    /// `body_too_large`: over the listener's body limit.
    BodyTooLarge,
    /// `unsupported_media_type`: a JSON body without `Content-Type: application/json`.
    UnsupportedMediaType,
    /// `unknown_source`: no source is configured at the path.
    UnknownSource,
    /// `route_not_configured`: the dead letter's route is not in the config.
    RouteNotConfigured,
    /// `undecodable`: a stored job that cannot be decoded.
    Undecodable,
    /// `already_paused`: a pause of a route that is paused.
    AlreadyPaused,
    /// `not_paused`: a resume of a route that is not paused.
    NotPaused,
    /// `overloaded`: too many requests in flight.
    Overloaded,
    /// `queue_unavailable`: Redis did not take or give what was asked.
    QueueUnavailable,
    /// `redis_unavailable`: the readiness probe cannot reach Redis.
    RedisUnavailable,
    /// `internal_error`: a fault of the gateway, logged where it happened.
    InternalError,
    /// `body_unreadable`: the sender went away or broke the body's framing.
    BodyUnreadable,
    /// `missing_signature`: a header the source's scheme needs is absent.
    MissingSignature,
    /// `malformed_signature`: a signature header that cannot be parsed.
    MalformedSignature,
    /// `invalid_signature`: well-formed, but no configured secret signed it.
    InvalidSignature,
    /// `timestamp_out_of_tolerance`: signed too long ago (or ahead).
    TimestampOutOfTolerance,
}

impl ErrorCode {
    /// The code as it appears in the `error` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::BodyTooLarge => "body_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::UnknownSource => "unknown_source",
            Self::RouteNotConfigured => "route_not_configured",
            Self::Undecodable => "undecodable",
            Self::AlreadyPaused => "already_paused",
            Self::NotPaused => "not_paused",
            Self::Overloaded => "overloaded",
            Self::QueueUnavailable => "queue_unavailable",
            Self::RedisUnavailable => "redis_unavailable",
            Self::InternalError => "internal_error",
            Self::BodyUnreadable => "body_unreadable",
            Self::MissingSignature => "missing_signature",
            Self::MalformedSignature => "malformed_signature",
            Self::InvalidSignature => "invalid_signature",
            Self::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An answer to a request that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human explanation; never contains secrets or expected signatures.
    pub message: String,
}

impl ApiError {
    /// Builds an error answer.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
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
            ErrorCode::UnknownSource,
            format!("no source is configured at {path}"),
        )
    }

    /// `413 body_too_large`: over `server.max_body_bytes`.
    pub fn body_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            "the request body is larger than this gateway accepts",
        )
    }

    /// An extractor's refusal: axum chose the status, this picks the code;
    /// its text says what was wrong with the request and nothing else.
    fn rejected(status: StatusCode, text: String) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Self::body_too_large(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Self::new(status, ErrorCode::UnsupportedMediaType, text)
            }
            status if status.is_server_error() => {
                // A handler declared with the wrong extractor: our bug, not the client's.
                tracing::error!(status = status.as_u16(), error = %text, "extractor failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::InternalError,
                    "the gateway failed to read the request; this is a bug",
                )
            }
            // Syntax and data errors alike (axum answers the latter 422): one
            // status for every malformed input, as the admin API always had.
            _ => Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, text),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::rejected(rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::rejected(rejection.status(), rejection.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::rejected(rejection.status(), rejection.body_text())
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: ErrorCode,
    message: &'a str,
}

/// The answer carries its code as an extension too, so middleware (the
/// ingest outcome counter) reads what was answered instead of guessing it
/// from the status.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.code,
            message: &self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        response.extensions_mut().insert(self.code);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_keeps_its_public_string() {
        for (code, text) in [
            (ErrorCode::BadRequest, "bad_request"),
            (ErrorCode::Unauthorized, "unauthorized"),
            (ErrorCode::NotFound, "not_found"),
            (ErrorCode::MethodNotAllowed, "method_not_allowed"),
            (ErrorCode::RequestTimeout, "request_timeout"),
            (ErrorCode::BodyTooLarge, "body_too_large"),
            (ErrorCode::UnsupportedMediaType, "unsupported_media_type"),
            (ErrorCode::UnknownSource, "unknown_source"),
            (ErrorCode::RouteNotConfigured, "route_not_configured"),
            (ErrorCode::Undecodable, "undecodable"),
            (ErrorCode::Overloaded, "overloaded"),
            (ErrorCode::QueueUnavailable, "queue_unavailable"),
            (ErrorCode::RedisUnavailable, "redis_unavailable"),
            (ErrorCode::InternalError, "internal_error"),
            (ErrorCode::BodyUnreadable, "body_unreadable"),
            (ErrorCode::MissingSignature, "missing_signature"),
            (ErrorCode::MalformedSignature, "malformed_signature"),
            (ErrorCode::InvalidSignature, "invalid_signature"),
            (
                ErrorCode::TimestampOutOfTolerance,
                "timestamp_out_of_tolerance",
            ),
        ] {
            assert_eq!(serde_json::to_value(code).ok(), Some(text.into()));
        }
    }

    #[tokio::test]
    async fn the_answer_is_the_status_and_the_json_body() {
        let response =
            ApiError::new(StatusCode::CONFLICT, ErrorCode::Undecodable, "why").into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(
            response.extensions().get::<ErrorCode>(),
            Some(&ErrorCode::Undecodable)
        );
        let body = axum::body::to_bytes(response.into_body(), 1024).await;
        let body: serde_json::Value =
            serde_json::from_slice(&body.unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            body,
            serde_json::json!({"error": "undecodable", "message": "why"})
        );
    }
}
