//! `GET /admin/routes`: the inventory. Every route with its owner, purpose,
//! consequence of failure, destination and policy, and live figures shared
//! by every gateway process (kept in Redis): received, delivered, retrying
//! now, dead letters now, last success and failure, breaker state, silence.

use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AdminState;
use crate::config::Config;
use crate::queue::{Queue, QueueError, Stat};

/// Live figures of one route.
#[derive(Debug, Clone, Default)]
struct RouteFigures {
    /// Jobs enqueued.
    pub received: u64,
    /// Jobs delivered.
    pub delivered: u64,
    /// Jobs waiting to be retried now.
    pub retrying: u64,
    /// Dead letters now.
    pub dead_letters: u64,
    /// Last delivery, Unix ms.
    pub last_success_ms: Option<u64>,
    /// Last failed attempt, Unix ms.
    pub last_failure_ms: Option<u64>,
    /// Last event, Unix ms.
    pub last_received_ms: Option<u64>,
    /// The destination's breaker as last reported by a worker.
    pub breaker: Option<String>,
    /// No event within `expect_within`.
    pub silent: bool,
}

/// Reads every route's figures (config order).
async fn figures(config: &Config, queue: &Queue) -> Result<Vec<RouteFigures>, QueueError> {
    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    let urls: Vec<&str> = config
        .routes
        .iter()
        .map(|r| r.destination.url.as_str())
        .collect();
    let number = |v: &Option<String>| {
        v.as_deref()
            .and_then(|v| v.parse::<i64>().ok())
            .map(|n| n.max(0) as u64)
    };
    let received = queue.stats(Stat::Received, &names).await?;
    let delivered = queue.stats(Stat::Delivered, &names).await?;
    let retrying = queue.stats(Stat::Retrying, &names).await?;
    let last_received = queue.stats(Stat::LastReceived, &names).await?;
    let last_success = queue.stats(Stat::LastSuccess, &names).await?;
    let last_failure = queue.stats(Stat::LastFailure, &names).await?;
    let breakers = queue.stats(Stat::Breaker, &urls).await?;
    let dead = queue.dead_letters_per_route(&names).await?;
    let silent = queue.silent_routes().await?;
    Ok((0..names.len())
        .map(|i| RouteFigures {
            received: number(&received[i]).unwrap_or_default(),
            delivered: number(&delivered[i]).unwrap_or_default(),
            retrying: number(&retrying[i]).unwrap_or_default(),
            dead_letters: dead.get(i).copied().unwrap_or_default(),
            last_success_ms: number(&last_success[i]),
            last_failure_ms: number(&last_failure[i]),
            last_received_ms: number(&last_received[i]),
            breaker: breakers[i].clone(),
            silent: silent.iter().any(|s| s == names[i]),
        })
        .collect())
}

fn rfc3339(ms: Option<u64>) -> Value {
    ms.map_or(Value::Null, |ms| {
        json!(humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string())
    })
}

/// The inventory as JSON; `figures` per route in config order (empty when
/// Redis could not be read: the owners are what someone paged needs first).
fn inventory_json(config: &Config, figures: &[RouteFigures]) -> Value {
    let duration = |d: Duration| humantime::format_duration(d).to_string();
    let routes: Vec<Value> = config
        .routes
        .iter()
        .enumerate()
        .map(|(i, route)| {
            let owner = config.owner_of(route);
            let mut value = json!({
                "name": route.name,
                "source": route.source,
                "scheme": config.sources.get(&route.source).map(|s| s.scheme.name()),
                "owner": {
                    "id": route.owner,
                    "team": owner.map(|o| o.team.as_str()),
                    "contact": owner.map(|o| o.contact.as_str()),
                    "runbook": owner.and_then(|o| o.runbook.as_deref()),
                },
                "description": route.description,
                "on_failure": route.on_failure,
                "destination": {
                    "url": route.destination.url.as_str(),
                    "timeout": duration(route.destination.timeout),
                },
                "retry": {
                    "max_attempts": route.retry.max_attempts,
                    "initial_backoff": duration(route.retry.initial_backoff),
                    "max_backoff": duration(route.retry.max_backoff),
                },
                "expect_within": route.expect_within.map(duration),
            });
            if let Some(f) = figures.get(i) {
                value["received"] = json!(f.received);
                value["delivered"] = json!(f.delivered);
                value["retrying"] = json!(f.retrying);
                value["dead_letters"] = json!(f.dead_letters);
                value["last_received_at"] = rfc3339(f.last_received_ms);
                value["last_success_at"] = rfc3339(f.last_success_ms);
                value["last_failure_at"] = rfc3339(f.last_failure_ms);
                value["breaker"] = json!(f.breaker.as_deref().unwrap_or("closed"));
                value["silent"] = json!(f.silent);
            }
            value
        })
        .collect();
    json!({ "routes": routes })
}

pub async fn inventory(State(state): State<AdminState>) -> Response {
    let figures = match figures(&state.config, &state.queue).await {
        Ok(figures) => figures,
        Err(err) => {
            tracing::warn!(error = %err, "inventory without live figures: redis unavailable");
            Vec::new()
        }
    };
    Json(inventory_json(&state.config, &figures)).into_response()
}
