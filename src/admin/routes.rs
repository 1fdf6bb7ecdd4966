//! `GET /admin/routes`: the inventory. Every route with its owner, purpose,
//! consequence of failure, destination and policy, and live figures shared
//! by every gateway process (kept in Redis): received, delivered, retrying
//! now, dead letters now, last success and failure, breaker state, silence,
//! held jobs and pause, lag;
//! and the route's `health`, judged here once for the CLI and the dashboard.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::AdminState;
use crate::clock::{now_ms, rfc3339_ms};
use crate::config::{Config, OnDeadLetter};
use crate::queue::{OrderedKeys, Pause, Queue, QueueError, RouteMark, Stat};

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
    /// Jobs held (paused, or in line behind held ones while draining).
    pub held: u64,
    /// Who paused the route, when and why, while it is paused.
    pub pause: Option<Pause>,
    /// How old its oldest undelivered job is (a route with `max_lag` or
    /// `ordered` only; zero when it has none).
    pub lag: Option<Duration>,
    /// An ordered route's keys.
    pub keys: Option<OrderedKeys>,
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
    let silent = queue.marked_routes(RouteMark::Silent).await?;
    let held = queue.held_counts(&names).await?;
    let mut paused = queue.flow_state().await?.paused;
    let lag = lags(config, queue, &paused).await?;
    let mut keys = Vec::with_capacity(names.len());
    for route in &config.routes {
        keys.push(match route.ordered {
            true => Some(queue.ordered_keys(&route.name).await?),
            false => None,
        });
    }
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
            held: held[i],
            pause: paused.remove(names[i]),
            lag: lag[i],
            keys: keys[i].take(),
        })
        .collect())
}

/// How old each route's oldest undelivered job is, for routes with
/// `max_lag` or `ordered` (config order; `None` for the others). As the lag
/// watch measures it: a paused route's held jobs do not count.
async fn lags(
    config: &Config,
    queue: &Queue,
    paused: &HashMap<String, Pause>,
) -> Result<Vec<Option<Duration>>, QueueError> {
    let asked: Vec<(&str, bool)> = config
        .routes
        .iter()
        .filter(|r| r.max_lag.is_some() || r.ordered)
        .map(|r| (r.name.as_str(), !paused.contains_key(&r.name)))
        .collect();
    let mut oldest = queue.oldest_undelivered(&asked).await?.into_iter();
    let now = now_ms();
    Ok(config
        .routes
        .iter()
        .map(|r| {
            if r.max_lag.is_none() && !r.ordered {
                return None;
            }
            let ms = oldest.next().flatten();
            Some(Duration::from_millis(
                ms.map_or(0, |ms| now.saturating_sub(ms)),
            ))
        })
        .collect())
}

/// How a route is doing, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum HealthStatus {
    /// Events are being lost to dead letters, or not attempted at all.
    Failing,
    /// Deliveries are late but not lost yet, or events stopped coming.
    Warning,
    /// None of the above.
    Ok,
    /// Redis could not be read, so nobody knows.
    Unknown,
}

/// A route's health and the reasons for it, as `GET /admin/routes` serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Health {
    status: HealthStatus,
    /// Failing causes first, then warning ones; empty when ok.
    reasons: Vec<String>,
}

/// The one health rule: failing with dead letters or an open breaker;
/// warning while paused or draining held jobs, lagging past `max_lag`, with jobs waiting to be
/// retried, a half-open breaker (probing a destination that just failed) or
/// silence past `expect_within`; unknown
/// without live figures; else ok.
fn health(
    figures: Option<&RouteFigures>,
    expect_within: Option<Duration>,
    max_lag: Option<Duration>,
) -> Health {
    let Some(f) = figures else {
        return Health {
            status: HealthStatus::Unknown,
            reasons: vec!["live counts unavailable (Redis?)".to_owned()],
        };
    };
    let plural = |n: u64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let mut failing = Vec::new();
    let mut warning = Vec::new();
    if f.dead_letters > 0 {
        failing.push(plural(f.dead_letters, "dead letter"));
    }
    if let Some(keys) = f.keys.as_ref().filter(|k| k.blocked_count > 0) {
        let (whose, them) = if keys.blocked_count == 1 {
            ("its dead letter", "it")
        } else {
            ("their dead letters", "them")
        };
        failing.push(format!(
            "{} blocked by {whose}: replay or delete {whose} to let {them} go on",
            plural(keys.blocked_count, "key"),
        ));
    }
    match f.breaker.as_deref() {
        Some("open") => failing.push("circuit breaker open".to_owned()),
        Some("half_open") => warning.push("circuit breaker half-open".to_owned()),
        _ => {}
    }
    if let Some(pause) = &f.pause {
        warning.push(format!(
            "paused by {} since {}: {} ({} held)",
            pause.by,
            rfc3339_ms(pause.since_ms),
            pause.reason,
            f.held
        ));
    } else if f.held > 0 {
        warning.push(format!("{} held, draining", f.held));
    }
    if let (Some(lag), Some(max)) = (f.lag, max_lag)
        && lag > max
    {
        warning.push(format!(
            "lagging: oldest undelivered {} old (max_lag {})",
            humantime::format_duration(Duration::from_secs(lag.as_secs())),
            humantime::format_duration(max)
        ));
    }
    if f.retrying > 0 {
        warning.push(format!("{} retrying", f.retrying));
    }
    if f.silent {
        warning.push(expect_within.map_or("silent".to_owned(), |d| {
            format!("silent: no event within {}", humantime::format_duration(d))
        }));
    }
    let status = if !failing.is_empty() {
        HealthStatus::Failing
    } else if !warning.is_empty() {
        HealthStatus::Warning
    } else {
        HealthStatus::Ok
    };
    failing.extend(warning);
    Health {
        status,
        reasons: failing,
    }
}

fn rfc3339(ms: Option<u64>) -> Value {
    ms.map_or(Value::Null, |ms| json!(rfc3339_ms(ms)))
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
                    "rate_limit": route.destination.rate_limit.map(|l| l.rate),
                    "rate_burst": route.destination.rate_limit.map(|l| l.burst),
                },
                "retry": {
                    "max_attempts": route.retry.max_attempts,
                    "initial_backoff": duration(route.retry.initial_backoff),
                    "max_backoff": duration(route.retry.max_backoff),
                },
                "expect_within": route.expect_within.map(duration),
                "max_lag": route.max_lag.map(duration),
                "ordered": route.ordered,
                "on_dead_letter": route.ordered.then_some(match route.on_dead_letter {
                    OnDeadLetter::Continue => "continue",
                    OnDeadLetter::Block => "block",
                }),
                "health": health(figures.get(i), route.expect_within, route.max_lag),
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
                value["held"] = json!(f.held);
                if let Some(lag) = f.lag {
                    value["lag_seconds"] = json!(lag.as_secs_f64());
                }
                if let (Some(lag), Some(max)) = (f.lag, route.max_lag) {
                    value["lagging"] = json!(lag > max);
                }
                if let Some(keys) = &f.keys {
                    value["keys"] = json!({
                        "active": keys.active,
                        "waiting_jobs": keys.waiting_jobs,
                        "blocked_count": keys.blocked_count,
                        "blocked": keys.blocked.iter().map(|b| json!({
                            "key": b.key,
                            "dead_letter": b.dead_letter,
                        })).collect::<Vec<_>>(),
                    });
                }
                value["paused"] = f
                    .pause
                    .as_ref()
                    .map_or(Value::Null, |p| super::flow::pause_json(&route.name, p));
            }
            value
        })
        .collect();
    json!({ "routes": routes })
}

/// The inventory, and the Redis nodes serving it (see `/readyz`).
pub async fn inventory(State(state): State<AdminState>) -> Response {
    let (figures, nodes) = tokio::join!(
        figures(&state.config, &state.queue),
        state.queue.nodes(super::READINESS_PING_TIMEOUT)
    );
    let figures = figures.unwrap_or_else(|err| {
        tracing::warn!(error = %err, "inventory without live figures: redis unavailable");
        Vec::new()
    });
    let mut inventory = inventory_json(&state.config, &figures);
    inventory["redis"] = json!(nodes);
    Json(inventory).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(figures: RouteFigures) -> (HealthStatus, Vec<String>) {
        let h = health(
            Some(&figures),
            Some(Duration::from_secs(6 * 3600)),
            Some(Duration::from_secs(300)),
        );
        (h.status, h.reasons)
    }

    #[test]
    fn deliveries_retrying_are_a_warning_not_ok() {
        let retrying = RouteFigures {
            retrying: 3,
            ..RouteFigures::default()
        };
        assert_eq!(
            status(retrying),
            (HealthStatus::Warning, vec!["3 retrying".to_owned()])
        );
    }

    #[test]
    fn dead_letters_or_an_open_breaker_fail_a_route_and_come_first() {
        let figures = RouteFigures {
            dead_letters: 1,
            retrying: 2,
            silent: true,
            ..RouteFigures::default()
        };
        assert_eq!(
            status(figures),
            (
                HealthStatus::Failing,
                vec![
                    "1 dead letter".to_owned(),
                    "2 retrying".to_owned(),
                    "silent: no event within 6h".to_owned()
                ]
            )
        );
        let open = RouteFigures {
            breaker: Some("open".into()),
            ..RouteFigures::default()
        };
        assert_eq!(status(open).0, HealthStatus::Failing);
        let half_open = RouteFigures {
            breaker: Some("half_open".into()),
            ..RouteFigures::default()
        };
        assert_eq!(status(half_open).0, HealthStatus::Warning);
    }

    #[test]
    fn quiet_figures_are_ok_and_missing_ones_unknown() {
        let closed = RouteFigures {
            delivered: 10,
            breaker: Some("closed".into()),
            ..RouteFigures::default()
        };
        assert_eq!(status(closed), (HealthStatus::Ok, vec![]));
        assert_eq!(health(None, None, None).status, HealthStatus::Unknown);
    }

    #[test]
    fn a_lag_past_max_lag_is_a_warning() {
        let behind = RouteFigures {
            lag: Some(Duration::from_secs(7 * 60 + 12)),
            ..RouteFigures::default()
        };
        assert_eq!(
            status(behind),
            (
                HealthStatus::Warning,
                vec!["lagging: oldest undelivered 7m 12s old (max_lag 5m)".to_owned()]
            )
        );
        let within = RouteFigures {
            lag: Some(Duration::from_secs(299)),
            ..RouteFigures::default()
        };
        assert_eq!(status(within).0, HealthStatus::Ok);
    }
}
