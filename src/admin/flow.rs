//! `POST /admin/routes/{name}/pause` and `/resume`: hold a route's jobs (for
//! a maintenance, say) and let them drain again, at a pace if asked. Both
//! are audited with the caller's token name and reason.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::extract::{Json, Path};
use super::{AdminState, audit};
use crate::api_error::{ApiError, ErrorCode};
use crate::clock::{now_ms, rfc3339_ms};
use crate::config::Rate;
use crate::queue::Pause;

/// Longest reason kept: a sentence or two, not a document.
const MAX_REASON_CHARS: usize = 500;

/// Body of a pause.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    reason: String,
}

/// Body of a resume, which may be empty.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    rate: Option<String>,
    reason: Option<String>,
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
}

fn configured(state: &AdminState, name: &str) -> Result<(), ApiError> {
    if state.config.routes.iter().any(|r| r.name == name) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no route named {name:?} in the running config"),
    ))
}

fn reason(text: &str) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(bad_request(
            "reason: say why (it is shown in the inventory and the audit log)",
        ));
    }
    if text.chars().count() > MAX_REASON_CHARS || text.chars().any(char::is_control) {
        return Err(bad_request(format!(
            "reason: at most {MAX_REASON_CHARS} characters of one line"
        )));
    }
    Ok(text.to_owned())
}

/// Makes this process's workers follow a pause or resume at once, not at
/// their next read of the flow state (other processes follow within it): an
/// operator who pauses a route and then replays into it sees nothing go out.
/// Should Redis not answer now, that next read catches up.
async fn obey_here(state: &AdminState) {
    if let Some(flow) = &state.flow
        && let Err(err) = flow.refresh().await
    {
        state.metrics.redis_error("flow_state");
        tracing::debug!(error = %err, "cannot read the flow state now");
    }
}

/// The pause as the API shows it.
pub fn pause_json(route: &str, pause: &Pause) -> Value {
    json!({
        "route": route,
        "paused": true,
        "since": rfc3339_ms(pause.since_ms),
        "by": pause.by,
        "reason": pause.reason,
    })
}

pub async fn pause(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(request): Json<PauseRequest>,
) -> Result<Json<Value>, ApiError> {
    configured(&state, &name)?;
    let pause = Pause {
        since_ms: now_ms(),
        by: caller.token.clone(),
        reason: reason(&request.reason)?,
    };
    if let Err(existing) = state.queue.pause_route(&name, &pause).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AlreadyPaused,
            format!(
                "{name:?} is already paused, since {} by {}: {}",
                rfc3339_ms(existing.since_ms),
                existing.by,
                existing.reason
            ),
        ));
    }
    obey_here(&state).await;
    audit(&state, &caller, "pause", &name, 0, &pause.reason).await;
    Ok(Json(pause_json(&name, &pause)))
}

pub async fn resume(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    configured(&state, &name)?;
    let request: ResumeRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ResumeRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| bad_request(format!("body: {err}")))?
    };
    let rate = request
        .rate
        .as_deref()
        .map(str::parse::<Rate>)
        .transpose()
        .map_err(|err| bad_request(format!("rate: {err}")))?;
    let why = request.reason.as_deref().map(reason).transpose()?;
    let Some(ended) = state.queue.resume_route(&name, rate).await? else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NotPaused,
            format!("{name:?} is not paused"),
        ));
    };
    obey_here(&state).await;
    let held = state.queue.held_counts(&[&name]).await?[0];
    let detail = match (&why, rate) {
        (Some(why), Some(rate)) => format!("{why} (drain at {rate})"),
        (Some(why), None) => why.clone(),
        (None, Some(rate)) => format!("drain at {rate}"),
        (None, None) => String::new(),
    };
    audit(&state, &caller, "resume", &name, held as usize, &detail).await;
    Ok(Json(json!({
        "route": name,
        "paused": false,
        "held": held,
        "rate": rate,
        "was_paused": {
            "since": rfc3339_ms(ended.since_ms),
            "by": ended.by,
            "reason": ended.reason,
        },
    })))
}
