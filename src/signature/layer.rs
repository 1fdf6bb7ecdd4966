//! `VerifyLayer` / `Verify<S>`: reads the body once, up to the body limit,
//! runs the source's verifier, and either hands the request on with the body
//! as `Bytes` (no copy) and a [`Verified`] extension, or answers 401 (413
//! past the limit) itself.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::{BoxError, Layer, Service};

use super::{Rejection, SignedRequest, Verifier};
use crate::api_error::{ApiError, ErrorCode};

/// Request extension: the request was verified for `source`.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The source's name.
    pub source: Arc<str>,
    /// The sender's delivery id, when the scheme carries one.
    pub delivery_id: Option<String>,
}

/// Verifies every request with one source's [`Verifier`].
#[derive(Clone)]
pub struct VerifyLayer {
    source: Arc<str>,
    verifier: Arc<dyn Verifier>,
    max_body_bytes: usize,
}

impl VerifyLayer {
    /// A layer that verifies requests of `source` with `verifier`, refusing
    /// bodies over `max_body_bytes`.
    pub fn new(
        source: impl Into<Arc<str>>,
        verifier: Arc<dyn Verifier>,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            source: source.into(),
            verifier,
            max_body_bytes,
        }
    }
}

impl<S> Layer<S> for VerifyLayer {
    type Service = Verify<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Verify {
            inner,
            source: self.source.clone(),
            verifier: self.verifier.clone(),
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// The service built by [`VerifyLayer`].
#[derive(Clone)]
pub struct Verify<S> {
    inner: S,
    source: Arc<str>,
    verifier: Arc<dyn Verifier>,
    max_body_bytes: usize,
}

impl<S> Service<Request<Body>> for Verify<S>
where
    S: Service<Request<Bytes>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone is not ready; keep the ready one for this call (tower's
        // usual pattern for services that call `inner` from a future).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let source = self.source.clone();
        let verifier = self.verifier.clone();
        let max_body_bytes = self.max_body_bytes;
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            // A sender that waits for `100 Continue` is refused from the head,
            // before it is invited to send a body that would be refused
            // anyway. Others have sent their body already: it is read, so
            // that the answer is not lost to a reset of unread bytes.
            if expects_continue(&parts.headers)
                && let Err(rejection) = verifier.check_head(&parts.headers)
            {
                return Ok(refusal(&source, rejection));
            }
            let bytes = match Limited::new(body, max_body_bytes).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(err) => return Ok(body_error(&source, &err)),
            };
            let signed = SignedRequest {
                headers: &parts.headers,
                uri: &parts.uri,
                body: &bytes,
            };
            match verifier.verify(&signed, SystemTime::now()) {
                Ok(()) => {
                    let delivery_id = verifier.delivery_id(&signed);
                    parts.extensions.insert(Verified {
                        source,
                        delivery_id,
                    });
                    inner.call(Request::from_parts(parts, bytes)).await
                }
                Err(rejection) => Ok(refusal(&source, rejection)),
            }
        })
    }
}

/// `Expect: 100-continue`: the client sends its body only when invited.
fn expects_continue(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The 401 of a refused request, logged with its reason.
fn refusal(source: &str, rejection: Rejection) -> Response {
    tracing::warn!(
        source,
        reason = rejection.code().as_str(),
        detail = %rejection,
        "webhook refused"
    );
    ApiError::from(rejection).into_response()
}

/// The body could not be read: over the limit (413), or the sender went away
/// or sent a broken body (400).
fn body_error(source: &str, err: &BoxError) -> Response {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(e) = cause {
        if e.is::<LengthLimitError>() {
            tracing::warn!(source, reason = "body_too_large", "webhook refused");
            return ApiError::body_too_large().into_response();
        }
        cause = e.source();
    }
    tracing::info!(source, error = %err, "webhook body could not be read");
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::BodyUnreadable,
        "the request body could not be read",
    )
    .into_response()
}
