//! Owner alerts: when dead letters land on a route whose owner has an
//! `alert_url`, the owner is told: at once for the first, then at most once
//! per route per minute with the count of the rest. Silence (no event within
//! a route's `expect_within`), lag (the oldest undelivered job older than its
//! `max_lag`) and their ends are told at once. Across gateway
//! processes, a Redis key with a one-minute TTL decides who sends. Sending
//! runs on its own task and never blocks delivery; failures are logged and
//! retried a few times.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::{AlertFormat, Config, Owner, Route};
use crate::queue::Queue;

/// One alert per route per this long at most.
pub const ALERT_INTERVAL: Duration = Duration::from_secs(60);
/// How often pending alerts are looked at: the first one goes within this.
const TICK: Duration = Duration::from_secs(1);
/// Tries of one alert POST.
const SEND_ATTEMPTS: u32 = 3;
/// Wait before the second try; doubles after.
const SEND_BACKOFF: Duration = Duration::from_secs(1);
/// Bound on one alert POST.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Dead letters of one route not yet told.
#[derive(Debug, Clone, Default)]
struct Pending {
    count: u64,
    first_reason: String,
    last_reason: String,
}

/// Collects dead letters and tells their owners.
pub struct Alerts {
    config: Arc<Config>,
    queue: Queue,
    client: reqwest::Client,
    pending: Mutex<HashMap<String, Pending>>,
}

impl Alerts {
    /// Alerts for `config`'s owners.
    pub fn new(config: Arc<Config>, queue: Queue) -> Result<Arc<Self>, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        for certificate in &config.delivery.ca_certificates {
            builder = builder.add_root_certificate(reqwest::Certificate::from_der(certificate)?);
        }
        let client = builder.build()?;
        Ok(Arc::new(Self {
            config,
            queue,
            client,
            pending: Mutex::new(HashMap::new()),
        }))
    }

    /// Notes a dead letter on `route` (no-op when its owner has no alert_url).
    pub fn record(&self, route: &Route, reason: &str) {
        let has_alert_url = self
            .config
            .owner_of(route)
            .is_some_and(|o| o.alert_url.is_some());
        if !has_alert_url {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pending.entry(route.name.clone()).or_default();
        if entry.count == 0 {
            entry.first_reason = reason.to_owned();
        }
        entry.count += 1;
        entry.last_reason = reason.to_owned();
    }

    /// Sends pending alerts until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(TICK) => {}
            }
            let routes: Vec<String> = {
                let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                pending.keys().cloned().collect()
            };
            for route_name in routes {
                match self
                    .queue
                    .claim_alert_slot(&route_name, ALERT_INTERVAL)
                    .await
                {
                    Ok(true) => {}
                    // Sent within the last minute (by us or another process): keep counting.
                    Ok(false) => continue,
                    Err(err) => {
                        tracing::warn!(error = %err, route = %route_name, "cannot coordinate alerts; trying next tick");
                        continue;
                    }
                }
                let taken = self
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&route_name);
                let route = self.config.routes.iter().find(|r| r.name == route_name);
                if let (Some(pending), Some(route)) = (taken, route)
                    && let Some(owner) = self.config.owner_of(route)
                {
                    let body = match owner.alert_format {
                        AlertFormat::Json => self.json_body(route, owner, &pending),
                        AlertFormat::Slack => self.slack_body(route, owner, &pending),
                    };
                    tokio::spawn(self.clone().send(route.name.clone(), owner.clone(), body));
                }
            }
        }
    }

    /// Tells `route`'s owner that it went silent (no event for `quiet_for`)
    /// or, with `silent == false`, that events arrive again. Sent at once.
    pub fn silence(self: &Arc<Self>, route: &Route, silent: bool, quiet_for: Duration) {
        let quiet = whole_seconds(quiet_for);
        let expect_within = route.expect_within.map(whole_seconds).unwrap_or_default();
        self.tell_now(
            route,
            if silent { "silent" } else { "resumed" },
            json!({ "expect_within": expect_within, "quiet_for": quiet }),
            |owner, dashboard| {
                if silent {
                    format!(
                        ":mute: Route *{}* ({}) has had no event for {quiet}; it expects one within {expect_within}.\n\
                         Is the sender still subscribed? What breaks: {}\nDashboard: {dashboard}",
                        route.name, owner.team, route.on_failure,
                    )
                } else {
                    format!(
                        ":white_check_mark: Route *{}* ({}) receives events again.\nDashboard: {dashboard}",
                        route.name, owner.team
                    )
                }
            },
        );
    }

    /// Tells `route`'s owner that its oldest undelivered event is `lag` old,
    /// past `max_lag`, or, with `lagging == false`, that it has caught up.
    /// Sent at once.
    pub fn lag(self: &Arc<Self>, route: &Route, lagging: bool, lag: Duration) {
        let behind = whole_seconds(lag);
        let max_lag = route.max_lag.map(whole_seconds).unwrap_or_default();
        self.tell_now(
            route,
            if lagging { "lagging" } else { "caught_up" },
            json!({ "max_lag": max_lag, "lag": behind }),
            |owner, dashboard| {
                if lagging {
                    let runbook = owner
                        .runbook
                        .as_ref()
                        .map(|r| format!("Runbook: {r}\n"))
                        .unwrap_or_default();
                    format!(
                        ":hourglass: Route *{}* ({}) is behind: its oldest undelivered event is {behind} old (max_lag {max_lag}).\n\
                         What breaks: {}\n{runbook}Dashboard: {dashboard}",
                        route.name, owner.team, route.on_failure,
                    )
                } else {
                    format!(
                        ":white_check_mark: Route *{}* ({}) has caught up: its oldest undelivered event is {behind} old (max_lag {max_lag}).\nDashboard: {dashboard}",
                        route.name, owner.team
                    )
                }
            },
        );
    }

    /// Sends `route`'s owner (when it has an `alert_url`) the alert `kind`
    /// at once: as JSON, the fields every alert has plus `fields`; for
    /// Slack, `text(owner, dashboard link)`.
    fn tell_now(
        self: &Arc<Self>,
        route: &Route,
        kind: &str,
        fields: Value,
        text: impl FnOnce(&Owner, &str) -> String,
    ) {
        let Some(owner) = self.config.owner_of(route) else {
            return;
        };
        if owner.alert_url.is_none() {
            return;
        }
        let (dashboard, _) = self.links(route);
        let body = match owner.alert_format {
            AlertFormat::Json => {
                let mut body = json!({
                    "type": kind,
                    "route": route.name,
                    "source": route.source,
                    "on_failure": route.on_failure,
                    "owner": owner_json(owner),
                    "dashboard_url": dashboard,
                });
                if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
                    body.extend(fields);
                }
                body
            }
            AlertFormat::Slack => json!({ "text": text(owner, &dashboard) }),
        };
        tokio::spawn(self.clone().send(route.name.clone(), owner.clone(), body));
    }

    async fn send(self: Arc<Self>, route: String, owner: Owner, body: Value) {
        let Some(url) = owner.alert_url.clone() else {
            return;
        };
        let mut wait = SEND_BACKOFF;
        for attempt in 1..=SEND_ATTEMPTS {
            match self.client.post(url.clone()).json(&body).send().await {
                Ok(response) if response.status().is_success() => {
                    tracing::info!(route = %route, owner = %owner.id, "owner alerted");
                    return;
                }
                Ok(response) => tracing::warn!(
                    route = %route, owner = %owner.id, attempt, status = response.status().as_u16(),
                    "owner alert refused"
                ),
                // Without the URL: an alert URL (a Slack incoming webhook,
                // say) is a credential.
                Err(err) => tracing::warn!(
                    route = %route, owner = %owner.id, attempt, error = %err.without_url(),
                    "owner alert failed"
                ),
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        tracing::error!(route = %route, owner = %owner.id, "gave up alerting the owner");
    }

    fn admin_url(&self) -> String {
        match &self.config.admin.public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.config.server.admin_listen),
        }
    }

    fn links(&self, route: &Route) -> (String, String) {
        let encoded: String = form_urlencoded::byte_serialize(route.name.as_bytes()).collect();
        let base = self.admin_url();
        (
            format!("{base}/?route={encoded}"),
            format!("{base}/admin/dead-letters?route={encoded}"),
        )
    }

    fn json_body(&self, route: &Route, owner: &Owner, pending: &Pending) -> Value {
        let (dashboard, api) = self.links(route);
        json!({
            "type": "dead_letters",
            "route": route.name,
            "source": route.source,
            "description": route.description,
            "on_failure": route.on_failure,
            "owner": owner_json(owner),
            "count": pending.count,
            "first_reason": pending.first_reason,
            "last_reason": pending.last_reason,
            "dashboard_url": dashboard,
            "dead_letters_url": api,
        })
    }

    fn slack_body(&self, route: &Route, owner: &Owner, pending: &Pending) -> Value {
        let (dashboard, _) = self.links(route);
        let plural = if pending.count == 1 { "" } else { "s" };
        let mut text = format!(
            ":rotating_light: {count} dead letter{plural} on route *{route}* ({team}).\n\
             What breaks: {on_failure}\n\
             First: {first}; last: {last}.\n",
            count = pending.count,
            route = route.name,
            team = owner.team,
            on_failure = route.on_failure,
            first = pending.first_reason,
            last = pending.last_reason,
        );
        if let Some(runbook) = &owner.runbook {
            text.push_str(&format!("Runbook: {runbook}\n"));
        }
        text.push_str(&format!("Dead letters: {dashboard}"));
        json!({ "text": text })
    }
}

/// A duration as alerts show it: whole seconds, humanly (`5m 12s`).
fn whole_seconds(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
}

/// The owner as every JSON alert names it.
fn owner_json(owner: &Owner) -> Value {
    json!({
        "id": owner.id,
        "team": owner.team,
        "contact": owner.contact,
        "runbook": owner.runbook,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn alerts(format: &str) -> Arc<Alerts> {
        let toml = format!(
            r#"
[server]
admin_listen = "127.0.0.1:8081"
[admin]
public_url = "https://switchyard.example.com/"
[owners.payments]
team = "Payments"
contact = "payments-oncall@example.com"
runbook = "https://wiki.example.com/runbooks/stripe"
alert_url = "https://hooks.example.com/alerts"
alert_format = "{format}"
[sources.stripe]
path = "/hooks/stripe"
scheme = "none"
[[routes]]
name = "stripe invoices"
source = "stripe"
owner = "payments"
description = "Invoices"
on_failure = "Invoices stay unpaid"
destination = {{ url = "http://127.0.0.1:9/x" }}
"#
        );
        let config =
            crate::config::from_toml(&toml, Path::new("t.toml"), Path::new("."), &|_| None)
                .expect("valid config");
        let queue = Queue::connect_lazy(&config.redis).expect("lazy client");
        Alerts::new(Arc::new(config), queue).expect("client")
    }

    fn pending() -> Pending {
        Pending {
            count: 3,
            first_reason: "rejected (400)".into(),
            last_reason: "exhausted (503)".into(),
        }
    }

    #[tokio::test]
    async fn slack_alerts_say_what_breaks_whose_it_is_and_where_to_look() {
        let alerts = alerts("slack");
        let route = &alerts.config.routes[0];
        let owner = alerts.config.owner_of(route).expect("owner");
        let body = alerts.slack_body(route, owner, &pending());
        let text = body["text"].as_str().expect("a Slack text payload");
        for expected in [
            "3 dead letters",
            "*stripe invoices*",
            "(Payments)",
            "Invoices stay unpaid",
            "First: rejected (400); last: exhausted (503)",
            "Runbook: https://wiki.example.com/runbooks/stripe",
            "https://switchyard.example.com/?route=stripe+invoices",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from {text}");
        }
    }

    #[tokio::test]
    async fn json_alerts_carry_every_field() {
        let alerts = alerts("json");
        let route = &alerts.config.routes[0];
        let owner = alerts.config.owner_of(route).expect("owner");
        let body = alerts.json_body(route, owner, &pending());
        assert_eq!(body["count"], 3);
        assert_eq!(body["owner"]["contact"], "payments-oncall@example.com");
        assert_eq!(
            body["dead_letters_url"],
            "https://switchyard.example.com/admin/dead-letters?route=stripe+invoices"
        );
    }

    #[tokio::test]
    async fn only_owners_with_an_alert_url_collect_alerts() {
        let alerts = alerts("json");
        alerts.record(&alerts.config.routes[0], "rejected (400)");
        alerts.record(&alerts.config.routes[0], "exhausted (503)");
        let pending = alerts.pending.lock().expect("lock");
        let entry = &pending["stripe invoices"];
        assert_eq!(entry.count, 2);
        assert_eq!(entry.first_reason, "rejected (400)");
        assert_eq!(entry.last_reason, "exhausted (503)");
    }
}
