//! `/admin/dead-letters`: list, show, replay (one, or by filter as a replay
//! job), delete; `/admin/replays`: replay jobs' progress and cancel; and
//! `/admin/audit`. Every replay and delete is written to the audit stream
//! with the caller's token name.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::extract::{Json, Path, Query};
use super::{AdminState, audit};
use crate::api_error::{ApiError, ErrorCode};
use crate::clock::rfc3339_ms;
use crate::config::Rate;
use crate::queue::{
    Cursor, DeadLetter, DeadLetterFilter, DeadLetterSummary, ReplayRecord, Replayed, decode_headers,
};
use crate::replays::ReplayRequest;

/// Page size when the client asks for none.
const DEFAULT_LIMIT: usize = 50;
/// Largest page; more is what cursors are for.
const MAX_LIMIT: usize = 500;

/// `limit`: at most `MAX_LIMIT` (a smaller page with a cursor is still a
/// true answer); 0 is refused rather than quietly read as 1.
fn page_size(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(bad_request(format!(
            "limit: 0 asks for nothing; give 1 to {MAX_LIMIT}"
        ))),
        Some(limit) => Ok(limit.min(MAX_LIMIT)),
    }
}

/// Filter fields shared by the list query and the bulk-replay body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterParams {
    route: Option<String>,
    owner: Option<String>,
    source: Option<String>,
    reason: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

impl FilterParams {
    fn into_filter(self) -> Result<DeadLetterFilter, ApiError> {
        let now = SystemTime::now();
        let time = |name: &str, text: Option<String>| {
            match text {
            None => Ok(None),
            Some(text) => parse_time(&text, now).map(Some).ok_or_else(|| {
                bad_request(format!(
                    "{name}: {text:?} is neither an RFC 3339 time nor a duration like \"2h\" (meaning ago)"
                ))
            }),
        }
        };
        Ok(DeadLetterFilter {
            since_ms: time("since", self.since)?,
            until_ms: time("until", self.until)?,
            route: self.route.filter(|v| !v.is_empty()),
            owner: self.owner.filter(|v| !v.is_empty()),
            source: self.source.filter(|v| !v.is_empty()),
            reason: self.reason.filter(|v| !v.is_empty()),
        })
    }
}

/// `since`/`until`: an RFC 3339 time, Unix ms, or a duration meaning "ago".
pub fn parse_time(text: &str, now: SystemTime) -> Option<u64> {
    let ms = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64)
    };
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        return ms(at);
    }
    if let Ok(unix_ms) = text.parse::<u64>() {
        return Some(unix_ms);
    }
    let ago: Duration = humantime::parse_duration(text).ok()?;
    ms(now.checked_sub(ago)?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(flatten)]
    filter: FilterParams,
    limit: Option<usize>,
    cursor: Option<String>,
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no dead letter {id:?} (never existed, or already replayed or deleted)"),
    )
}

fn summary_json(letter: &DeadLetterSummary) -> Value {
    json!({
        "id": letter.id,
        "event_id": letter.event_id,
        "route": letter.route,
        "source": letter.source,
        "owner": {
            "id": letter.owner,
            "team": letter.team,
            "contact": letter.contact,
            "runbook": letter.runbook,
        },
        "destination": letter.destination,
        "reason": letter.reason,
        "status": letter.status,
        "attempts": letter.attempts,
        "failed_at": rfc3339_ms(letter.failed_ms),
    })
}

/// Request headers whose value is a credential itself, not a signature over
/// the request: GitLab sends its secret token as is. Shown redacted (the
/// stored job keeps them, so a replay still carries them).
const CREDENTIAL_HEADERS: &[&str] = &[
    "x-gitlab-token",
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-auth-token",
];

/// What the API shows for a redacted header value.
const REDACTED: &str = "[redacted]";

fn letter_json(letter: &DeadLetter) -> Value {
    let mut value = summary_json(&letter.summary);
    if let Some(job) = &letter.job {
        let headers: Vec<Value> = decode_headers(&job.headers)
            .map(|(name, value)| {
                if CREDENTIAL_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                    json!([name, REDACTED])
                } else {
                    json!([name, String::from_utf8_lossy(value)])
                }
            })
            .collect();
        let (body, encoding) = match std::str::from_utf8(&job.body) {
            Ok(text) => (text.to_owned(), "utf8"),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(&job.body),
                "base64",
            ),
        };
        value["received_at"] = json!(rfc3339_ms(job.received_ms));
        value["request"] = json!({
            "headers": headers,
            "body": body,
            "body_encoding": encoding,
        });
        value["history"] = job
            .history
            .iter()
            .map(|a| {
                json!({
                    "attempt": a.attempt,
                    "at": rfc3339_ms(a.at_ms),
                    "status": a.status,
                    "error": a.error,
                    "latency_ms": a.latency_ms,
                })
            })
            .collect();
    }
    value
}

pub async fn list(
    State(state): State<AdminState>,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let filter = params.filter.into_filter()?;
    let limit = page_size(params.limit)?;
    let cursor = match params.cursor.as_deref().map(Cursor::decode) {
        None => None,
        Some(Some(cursor)) => Some(cursor),
        Some(None) => return Err(bad_request("cursor: not a cursor this API returned")),
    };
    let (items, next) = state
        .queue
        .list_dead_letters(&filter, limit, cursor.as_ref())
        .await?;
    Ok(Json(json!({
        "items": items.iter().map(summary_json).collect::<Vec<_>>(),
        "next_cursor": next.map(|c| c.encode()),
    })))
}

pub async fn show(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.queue.get_dead_letter(&id).await? {
        Some(letter) => Ok(Json(letter_json(&letter))),
        None => Err(not_found(&id)),
    }
}

pub async fn replay_one(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let letter = state
        .queue
        .get_dead_letter(&id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    if !state
        .config
        .routes
        .iter()
        .any(|r| r.name == letter.summary.route)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::RouteNotConfigured,
            format!(
                "route {:?} is not in the current config; add it back, or delete the dead letter",
                letter.summary.route
            ),
        ));
    }
    match state.queue.replay_dead_letter(&id).await? {
        Replayed::Yes => {
            audit(&state, &caller, "replay", &id, 1, "").await;
            Ok((StatusCode::ACCEPTED, Json(json!({"replayed": 1}))).into_response())
        }
        Replayed::NotFound => Err(not_found(&id)),
        Replayed::Undecodable => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Undecodable,
            "the stored job cannot be decoded and cannot be replayed; inspect and delete it",
        )),
    }
}

/// Body of `POST /admin/dead-letters/replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkReplay {
    #[serde(flatten)]
    filter: FilterParams,
    /// Must be true to replay without a route, owner or source.
    #[serde(default)]
    all: bool,
    /// The pace, `"N/s"` or `"N/min"`.
    rate: Option<String>,
}

/// Starts a replay job (see [`crate::replays`]): `202` with its id and how
/// many dead letters it matched; it runs on whatever becomes of the request.
pub async fn replay_many(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<BulkReplay>,
) -> Result<Response, ApiError> {
    let all = request.all;
    let rate = request
        .rate
        .as_deref()
        .map(str::parse::<Rate>)
        .transpose()
        .map_err(|err| bad_request(format!("rate: {err}")))?;
    let filter = request.filter.into_filter()?;
    if !filter.is_scoped() && !all {
        return Err(bad_request(
            "a bulk replay needs route, owner or source (or \"all\": true to replay every team's dead letters)",
        ));
    }
    let configured: Vec<&str> = state
        .config
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    let filter_json = filter_json(&filter).to_string();
    let record = state
        .replays
        .start(&ReplayRequest {
            by: &caller.token,
            filter: &filter,
            filter_json: &filter_json,
            configured: &configured,
            rate,
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "replay": record.id,
            "matched": record.matched,
            "skipped_unconfigured_routes": record.skipped,
            "state": record.state,
        })),
    )
        .into_response())
}

/// A replay job as the API shows it.
fn replay_json(record: &ReplayRecord) -> Value {
    json!({
        "id": record.id,
        "state": record.state,
        "matched": record.matched,
        "replayed": record.replayed,
        "gone": record.gone,
        "undecodable": record.undecodable,
        "remaining": record.matched.saturating_sub(record.next),
        "skipped_unconfigured_routes": record.skipped,
        "by": record.by,
        "filter": serde_json::from_str::<Value>(&record.filter).unwrap_or(Value::Null),
        "rate": (!record.rate.is_empty()).then_some(&record.rate),
        "started_at": rfc3339_ms(record.started_ms),
        "ended_at": (record.ended_ms > 0).then(|| rfc3339_ms(record.ended_ms)),
        "cancel_requested": record.cancel,
    })
}

fn replay_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no replay job {id:?} (never started, or ended over 30 days ago)"),
    )
}

/// `GET /admin/replays`: the newest replay jobs.
pub async fn replays(
    State(state): State<AdminState>,
    Query(params): Query<AuditParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = page_size(params.limit)?;
    let records = state.queue.recent_replays(limit).await?;
    Ok(Json(json!({
        "items": records.iter().map(replay_json).collect::<Vec<_>>()
    })))
}

/// `GET /admin/replays/{id}`: a replay job's progress.
pub async fn replay_progress(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.queue.replay_record(&id).await? {
        Some(record) => Ok(Json(replay_json(&record))),
        None => Err(replay_not_found(&id)),
    }
}

/// `DELETE /admin/replays/{id}`: stops a replay job after the item in hand;
/// what it has not replayed stays a dead letter.
pub async fn cancel_replay(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Some(record) = state.queue.cancel_replay(&id).await? else {
        return Err(replay_not_found(&id));
    };
    if record.cancel {
        audit(&state, &caller, "bulk_replay_cancel", &id, 0, "").await;
    }
    Ok((StatusCode::ACCEPTED, Json(replay_json(&record))).into_response())
}

fn filter_json(filter: &DeadLetterFilter) -> Value {
    json!({
        "route": filter.route,
        "owner": filter.owner,
        "source": filter.source,
        "reason": filter.reason,
        "since": filter.since_ms.map(rfc3339_ms),
        "until": filter.until_ms.map(rfc3339_ms),
    })
}

pub async fn delete(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.queue.delete_dead_letter(&id).await? {
        return Err(not_found(&id));
    }
    audit(&state, &caller, "delete", &id, 1, "").await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    limit: Option<usize>,
}

pub async fn audit_log(
    State(state): State<AdminState>,
    Query(params): Query<AuditParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = page_size(params.limit)?;
    let records = state.queue.audit_log(limit).await?;
    Ok(Json(json!({
        "items": records.iter().map(|r| json!({
            "at": rfc3339_ms(r.at_ms),
            "token": r.token,
            "action": r.action,
            "target": r.target,
            "count": r.count,
            "reason": (!r.reason.is_empty()).then_some(&r.reason),
        })).collect::<Vec<_>>()
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_unix_ms_or_ago() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_time("1700000000000", now), Some(1_700_000_000_000));
        assert_eq!(parse_time("1h", now), Some(1_700_000_000_000 - 3_600_000));
        assert_eq!(parse_time("yesterday-ish", now), None);
    }
}
