//! The public listener: webhooks arrive here, are verified per source, and
//! are acknowledged only once durably queued.

use axum::Router;
use axum::response::{IntoResponse, Response};
use http::Uri;

use crate::api_error::ApiError;

/// The public router. Paths that belong to no source answer `404 unknown_source`.
pub fn router() -> Router {
    Router::new().fallback(unknown_source)
}

async fn unknown_source(uri: Uri) -> Response {
    ApiError::unknown_source(uri.path()).into_response()
}
