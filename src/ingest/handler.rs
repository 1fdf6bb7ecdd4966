//! The handler behind a verified source: match routes, write the event
//! durably, answer.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use serde::Serialize;

use super::{EventView, SourceState};
use crate::api_error::{ApiError, ErrorCode};
use crate::clock::now_ms;
use crate::queue::{Enqueued, NewEvent, encode_headers};
use crate::signature::Verified;

/// How a webhook request ended: the `outcome` label of
/// `switchyard_ingest_requests_total`. Success answers carry it as a
/// response extension; error answers carry their [`ErrorCode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 202: every job of the event is queued.
    Accepted,
    /// 200: the delivery id was seen before.
    Duplicate,
    /// Any error answer, by its code.
    Refused(ErrorCode),
}

impl Outcome {
    /// The metric label: `accepted`, `duplicate`, or the error code.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Refused(code) => code.as_str(),
        }
    }

    /// How `response` ended, from the extension its maker left.
    pub fn of(response: &Response) -> Self {
        let extensions = response.extensions();
        extensions
            .get::<Outcome>()
            .copied()
            .or_else(|| extensions.get::<ErrorCode>().copied().map(Outcome::Refused))
            // Every answer of ingest is made by `answer` or as an ApiError.
            .unwrap_or(Outcome::Refused(ErrorCode::InternalError))
    }
}

/// Queues a verified request's event for every route it matches; the
/// answer, never an error.
pub(super) async fn accept(
    state: Arc<SourceState>,
    request: Request<Bytes>,
) -> Result<Response, Infallible> {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    // Verify sets it on every request it hands on.
    let delivery_id = parts
        .extensions
        .get::<Verified>()
        .and_then(|verified| verified.delivery_id.clone());
    let deadline = parts.extensions.get::<RequestDeadline>().map(|d| d.0);
    Ok(answer_event(&state, &headers, body, delivery_id, deadline).await)
}

/// Request extension: when the request's answer is due
/// (`server.request_timeout` after it reached the ingest service).
#[derive(Debug, Clone, Copy)]
pub(super) struct RequestDeadline(pub(super) tokio::time::Instant);

async fn answer_event(
    state: &SourceState,
    headers: &HeaderMap,
    body: Bytes,
    delivery_id: Option<String>,
    deadline: Option<tokio::time::Instant>,
) -> Response {
    let view = EventView::new(headers, &body);
    let matched: Vec<&super::RouteMatch> = state
        .routes
        .iter()
        .filter(|route| view.matches(route.filter.as_ref()))
        .collect();
    let routes: Vec<&str> = matched.iter().map(|route| route.name.as_str()).collect();
    let id = ulid::Ulid::generate().to_string();
    let ordering_key = state.ordering_key.as_ref().and_then(|f| view.value(f));
    let event = NewEvent {
        id: &id,
        source: &state.name,
        ordering_key: ordering_key.as_deref(),
        routes: &routes,
        received_ms: now_ms(),
        headers: Bytes::from(encode_headers(|| {
            headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()))
        })),
        body,
        dedupe: delivery_id
            .as_deref()
            .map(|delivery_id| (delivery_id, state.dedupe_window)),
    };
    // A queue slower than the request's deadline is answered as a queue
    // that cannot take the event (503, retry later), not as a request that
    // was not received in time.
    let written = match deadline {
        Some(deadline) => state.writer.enqueue_by(&event, deadline).await,
        None => state.writer.enqueue(&event).await,
    };
    match written {
        Ok(Enqueued::Accepted) => {
            for route in &matched {
                route.enqueued.inc();
                if let (Some(unordered), None) = (&route.unordered, &ordering_key) {
                    unordered.inc();
                }
            }
            if routes.is_empty() {
                state.unrouted.inc();
                tracing::warn!(event_id = %id, source = %state.name, "event matched no route (unrouted)");
            } else {
                tracing::info!(
                    event_id = %id,
                    source = %state.name,
                    routes = ?routes,
                    request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default(),
                    delivery_id = delivery_id.as_deref().unwrap_or_default(),
                    "event accepted"
                );
            }
            answer(
                StatusCode::ACCEPTED,
                &AcceptedAnswer {
                    id: &id,
                    routes: &routes,
                },
                Outcome::Accepted,
            )
        }
        Ok(Enqueued::Duplicate { first_id }) => {
            tracing::info!(
                source = %state.name,
                event_id = %first_id,
                delivery_id = delivery_id.as_deref().unwrap_or_default(),
                "duplicate delivery; already queued"
            );
            answer(
                StatusCode::OK,
                &DuplicateAnswer {
                    id: &first_id,
                    duplicate: true,
                },
                Outcome::Duplicate,
            )
        }
        Err(err) => {
            state.metrics.redis_error("enqueue");
            // `refused`: requests answered so since the last such line.
            if let Some(refused) = state.queue_unavailable_log.note() {
                tracing::error!(
                    source = %state.name,
                    error = %err,
                    refused,
                    "cannot queue events; answering 503"
                );
            }
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::QueueUnavailable,
                "the event could not be acknowledged; retry later",
            )
            .into_response()
        }
    }
}

/// The body of a 202: the event's id and the routes it was queued for.
#[derive(Serialize)]
struct AcceptedAnswer<'a> {
    id: &'a str,
    routes: &'a [&'a str],
}

/// The body of a 200 for a delivery seen before: the first event's id.
#[derive(Serialize)]
struct DuplicateAnswer<'a> {
    id: &'a str,
    duplicate: bool,
}

fn answer(status: StatusCode, body: &impl Serialize, outcome: Outcome) -> Response {
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(outcome);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_says_how_it_ended() {
        let accepted = answer(StatusCode::ACCEPTED, &"ok", Outcome::Accepted);
        assert_eq!(Outcome::of(&accepted).label(), "accepted");
        let refused = ApiError::body_too_large().into_response();
        assert_eq!(
            Outcome::of(&refused),
            Outcome::Refused(ErrorCode::BodyTooLarge)
        );
        assert_eq!(Outcome::of(&refused).label(), "body_too_large");
        let unexplained = StatusCode::BAD_GATEWAY.into_response();
        assert_eq!(Outcome::of(&unexplained).label(), "internal_error");
    }
}
