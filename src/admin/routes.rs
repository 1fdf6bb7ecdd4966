//! `GET /admin/routes`: the inventory. Every route with its owner, purpose,
//! consequence of failure, destination and policy, and live figures.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AdminState;
use crate::config::Config;

/// The inventory as JSON; `delivered` and `dead_letters` are per route, in
/// config order.
pub fn inventory_json(config: &Config, delivered: &[u64], dead_letters: &[u64]) -> Value {
    let routes: Vec<Value> = config
        .routes
        .iter()
        .enumerate()
        .map(|(i, route)| {
            let owner = config.owner_of(route);
            json!({
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
                    "timeout": humantime::format_duration(route.destination.timeout).to_string(),
                },
                "retry": {
                    "max_attempts": route.retry.max_attempts,
                    "initial_backoff": humantime::format_duration(route.retry.initial_backoff).to_string(),
                    "max_backoff": humantime::format_duration(route.retry.max_backoff).to_string(),
                },
                "delivered": delivered.get(i),
                "dead_letters": dead_letters.get(i),
            })
        })
        .collect();
    json!({ "routes": routes })
}

pub async fn inventory(State(state): State<AdminState>) -> Response {
    let names: Vec<&str> = state
        .config
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    // Live figures are best effort: with Redis down the inventory still shows
    // who owns what, which is what someone paged needs first.
    let delivered = state
        .queue
        .delivered_per_route(&names)
        .await
        .unwrap_or_default();
    let dead = state
        .queue
        .dead_letters_per_route(&names)
        .await
        .unwrap_or_default();
    Json(inventory_json(&state.config, &delivered, &dead)).into_response()
}
