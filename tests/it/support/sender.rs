//! A webhook sender: GitHub-style signed events posted to a gateway, many at
//! a time, keeping what each one was answered (a 202 carries the event id and
//! its routes: what the gateway promised to deliver).

use futures_util::StreamExt;
use serde_json::Value;

use super::github;

/// One GitHub-style webhook.
#[derive(Debug, Clone)]
pub struct GithubEvent {
    /// `X-GitHub-Event`.
    pub event: String,
    /// `X-GitHub-Delivery`, the dedupe key: unique per event.
    pub delivery: String,
    /// The body.
    pub body: Vec<u8>,
}

impl GithubEvent {
    /// An event of type `event` with delivery id `delivery` and a small JSON body.
    pub fn new(event: &str, delivery: &str) -> Self {
        Self {
            event: event.to_owned(),
            delivery: delivery.to_owned(),
            body: format!(r#"{{"delivery":"{delivery}","event":"{event}"}}"#).into_bytes(),
        }
    }
}

/// What the gateway answered one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 202: durably queued as `id`, one job per route in `routes`.
    Accepted {
        /// The event id.
        id: String,
        /// The matched routes.
        routes: Vec<String>,
    },
    /// Anything else: the status (0 when there was no answer) and the body
    /// (or the client's error).
    Other {
        /// HTTP status, or 0.
        status: u16,
        /// Body or error text.
        body: String,
    },
}

impl Answer {
    /// The `(event id, route)` jobs an accepted event made; none otherwise.
    pub fn jobs(&self) -> Vec<(String, String)> {
        match self {
            Answer::Accepted { id, routes } => {
                routes.iter().map(|r| (id.clone(), r.clone())).collect()
            }
            Answer::Other { .. } => Vec::new(),
        }
    }
}

/// Posts one signed event to `url`.
pub async fn send_github(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    event: &GithubEvent,
) -> Answer {
    let sent = client
        .post(url)
        .header(
            "X-Hub-Signature-256",
            github::signature(secret, &event.body),
        )
        .header("X-GitHub-Delivery", &event.delivery)
        .header("X-GitHub-Event", &event.event)
        .header("Content-Type", "application/json")
        .body(event.body.clone())
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(err) => {
            return Answer::Other {
                status: 0,
                body: err.to_string(),
            };
        }
    };
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    if status != 202 {
        return Answer::Other { status, body };
    }
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    match (json["id"].as_str(), json["routes"].as_array()) {
        (Some(id), Some(routes)) => Answer::Accepted {
            id: id.to_owned(),
            routes: routes
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        },
        _ => Answer::Other { status, body },
    }
}

/// Posts `events`, `concurrency` at a time, event `i` to `urls[i % urls.len()]`;
/// the answers come back in the order of `events`.
pub async fn send_github_all(
    urls: &[String],
    secret: &str,
    events: &[GithubEvent],
    concurrency: usize,
) -> Vec<Answer> {
    assert!(!urls.is_empty(), "at least one gateway to send to");
    let client = reqwest::Client::new();
    futures_util::stream::iter(events.iter().enumerate())
        .map(|(i, event)| send_github(&client, &urls[i % urls.len()], secret, event))
        .buffered(concurrency)
        .collect()
        .await
}
