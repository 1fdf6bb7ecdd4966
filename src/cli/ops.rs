//! The ops subcommands (`routes`, `dlq …`): clients of a running gateway's
//! admin API. Human tables by default, `--json` for scripts.

use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use comfy_table::{ContentArrangement, Table, presets};
use serde_json::{Value, json};

/// The admin API a command talks to.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Base URL of the gateway's admin listener.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ADMIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub admin: String,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `switchyard routes pause|resume …`
#[derive(Debug, Subcommand)]
pub enum RoutesCommand {
    /// Hold a route's jobs (kept in Redis, not attempted) until it is resumed.
    Pause {
        /// Route name.
        name: String,
        /// Why: shown in the inventory and the audit log.
        #[arg(long)]
        reason: String,
    },
    /// Let a paused route's held jobs drain, oldest first.
    Resume {
        /// Route name.
        name: String,
        /// Drain pace, "N/s" or "N/min" (default: the destination's rate_limit, else as fast as it takes them).
        #[arg(long)]
        rate: Option<String>,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `switchyard dlq …`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// How many at most.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue after a previous page (its next_cursor).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one dead letter: request headers and body, every attempt.
    Show {
        /// Dead-letter id.
        id: String,
    },
    /// Replay one dead letter by id, or every one a filter selects.
    Replay {
        /// Dead-letter id (or use a filter).
        id: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Replay every dead letter of every team (needed without route, owner or source).
        #[arg(long)]
        all: bool,
        /// Pace of a bulk replay, "N/s" or "N/min".
        #[arg(long)]
        rate: Option<String>,
        /// Start a bulk replay and return, rather than follow its progress.
        #[arg(long)]
        detach: bool,
    },
    /// Show replay jobs (the newest), or one with its progress.
    Replays {
        /// Replay job id.
        id: Option<String>,
    },
    /// Stop a replay job; what it has not replayed stays a dead letter.
    Cancel {
        /// Replay job id.
        id: String,
    },
    /// Delete one dead letter.
    Delete {
        /// Dead-letter id.
        id: String,
    },
}

/// Which dead letters.
#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// Route name.
    #[arg(long)]
    pub route: Option<String>,
    /// Owner id.
    #[arg(long)]
    pub owner: Option<String>,
    /// Source name.
    #[arg(long)]
    pub source: Option<String>,
    /// Reason: exhausted, rejected, unroutable.
    #[arg(long)]
    pub reason: Option<String>,
    /// Failed since: RFC 3339 time or a duration meaning ago ("2h").
    #[arg(long)]
    pub since: Option<String>,
    /// Failed until: RFC 3339 time or a duration meaning ago.
    #[arg(long)]
    pub until: Option<String>,
}

impl FilterArgs {
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("route", &self.route),
            ("owner", &self.owner),
            ("source", &self.source),
            ("reason", &self.reason),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }

    fn is_empty(&self) -> bool {
        self.pairs().is_empty()
    }
}

/// Talks to the admin API with the token from `SWITCHYARD_ADMIN_TOKEN`.
struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    fn new(admin: &AdminArgs) -> anyhow::Result<Self> {
        let token = std::env::var("SWITCHYARD_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                anyhow!("set SWITCHYARD_ADMIN_TOKEN to an admin token of the gateway")
            })?;
        // Checked here: reqwest would only fail at send, which reads as an
        // unreachable gateway. The token itself is never printed.
        if let Some(why) = token_problem(&token) {
            bail!(
                "SWITCHYARD_ADMIN_TOKEN is not a valid HTTP header value: {why} (the token is not shown)"
            );
        }
        // Also checked here, for the same reason: `localhost:8081` is no URL.
        match url::Url::parse(&admin.admin) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            Ok(_) => bail!("--admin {}: give an http:// or https:// URL", admin.admin),
            Err(err) => bail!("--admin {}: not a URL ({err})", admin.admin),
        }
        Ok(Self {
            base: admin.admin.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
        })
    }

    /// Sends a request; returns the JSON body of a success (Null for 204),
    /// or an error that says what to do.
    async fn call(
        &self,
        method: http::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .query(query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the admin API at {}; is the gateway running (--admin)?",
                self.base
            )
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status == http::StatusCode::UNAUTHORIZED {
            bail!("the admin API refused the token (401): check SWITCHYARD_ADMIN_TOKEN");
        }
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .with_context(|| format!("{status} from {url} is not JSON"))?
        };
        if !status.is_success() {
            let code = value["error"].as_str().unwrap_or("error");
            let message = value["message"].as_str().unwrap_or(&text);
            bail!("{status} {code}: {message}");
        }
        Ok(value)
    }
}

/// Why `token` cannot be sent as `Authorization: Bearer <token>`, if so.
fn token_problem(token: &str) -> Option<&'static str> {
    if token.trim() != token {
        Some("it starts or ends with whitespace (a newline from a file or `echo`?)")
    } else if token.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    }
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    table
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `switchyard routes [pause|resume …]`.
pub async fn routes(admin: &AdminArgs, command: Option<RoutesCommand>) -> ExitCode {
    report(async {
        let client = Client::new(admin)?;
        match command {
            None => inventory(&client, admin.json).await,
            Some(RoutesCommand::Pause { name, reason }) => {
                let value = client
                    .call(
                        http::Method::POST,
                        &format!("/admin/routes/{}/pause", encode(&name)),
                        &[],
                        Some(json!({ "reason": reason })),
                    )
                    .await?;
                Ok(if admin.json {
                    value.to_string()
                } else {
                    format!(
                        "paused {name} (by {}, since {}); its jobs are held until: switchyard routes resume {name}",
                        text(&value["by"]),
                        text(&value["since"])
                    )
                })
            }
            Some(RoutesCommand::Resume { name, rate, reason }) => {
                let mut body = serde_json::Map::new();
                if let Some(rate) = rate {
                    body.insert("rate".to_owned(), json!(rate));
                }
                if let Some(reason) = reason {
                    body.insert("reason".to_owned(), json!(reason));
                }
                let value = client
                    .call(
                        http::Method::POST,
                        &format!("/admin/routes/{}/resume", encode(&name)),
                        &[],
                        Some(Value::Object(body)),
                    )
                    .await?;
                Ok(if admin.json {
                    value.to_string()
                } else {
                    let pace = value["rate"]
                        .as_str()
                        .map_or("as fast as the destination takes them".to_owned(), |r| {
                            format!("at {r}")
                        });
                    format!(
                        "resumed {name}: {} held jobs drain {pace}",
                        text(&value["held"])
                    )
                })
            }
        }
    })
    .await
}

/// The inventory as a table (or the API's JSON).
async fn inventory(client: &Client, json: bool) -> anyhow::Result<String> {
    let value = client
        .call(http::Method::GET, "/admin/routes", &[], None)
        .await?;
    if json {
        return Ok(value.to_string());
    }
    let mut t = table(&[
        "route",
        "owner",
        "contact",
        "destination",
        "received",
        "delivered",
        "retrying",
        "held",
        "dead letters",
        "health",
        "on failure",
    ]);
    for route in value["routes"].as_array().into_iter().flatten() {
        t.add_row(vec![
            text(&route["name"]),
            text(&route["owner"]["team"]),
            text(&route["owner"]["contact"]),
            text(&route["destination"]["url"]),
            text(&route["received"]),
            text(&route["delivered"]),
            text(&route["retrying"]),
            text(&route["held"]),
            text(&route["dead_letters"]),
            health_text(&route["health"]),
            text(&route["on_failure"]),
        ]);
    }
    Ok(format!("{}\n{t}", redis_text(&value["redis"])))
}

/// The Redis nodes a gateway uses: `redis (cluster): 127.0.0.1:7000 serves
/// 6 partitions; 127.0.0.1:7001 NOT ANSWERING (…) for 5 partitions`.
fn redis_text(redis: &Value) -> String {
    let nodes: Vec<String> = redis["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|node| {
            let name = node["node"].as_str().unwrap_or("unknown node");
            let count = node["partitions"].as_array().map_or(0, Vec::len);
            let partitions = if count == 1 {
                "partition"
            } else {
                "partitions"
            };
            if node["answering"].as_bool() == Some(true) {
                format!("{name} serves {count} {partitions}")
            } else {
                let error = node["error"].as_str().unwrap_or("no answer");
                format!("{name} NOT ANSWERING ({error}) for {count} {partitions}")
            }
        })
        .collect();
    let mode = redis["mode"].as_str().unwrap_or("unknown");
    format!("redis ({mode}): {}", nodes.join("; "))
}

/// The gateway's verdict on a route (the rule is in `admin::routes`), with
/// its reasons: `warning: 2 retrying`.
fn health_text(health: &Value) -> String {
    let status = health["status"].as_str().unwrap_or("unknown");
    let reasons: Vec<&str> = health["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if reasons.is_empty() {
        status.to_owned()
    } else {
        format!("{status}: {}", reasons.join(", "))
    }
}

/// `switchyard dlq …`.
pub async fn dlq(admin: &AdminArgs, command: DlqCommand) -> ExitCode {
    report(async {
        let client = Client::new(admin)?;
        match command {
            DlqCommand::List {
                filter,
                limit,
                cursor,
            } => {
                let limit = limit.to_string();
                let mut query = filter.pairs();
                query.push(("limit", &limit));
                if let Some(cursor) = &cursor {
                    query.push(("cursor", cursor));
                }
                let value = client
                    .call(http::Method::GET, "/admin/dead-letters", &query, None)
                    .await?;
                if admin.json {
                    return Ok(value.to_string());
                }
                let mut t = table(&[
                    "id",
                    "failed at",
                    "route",
                    "owner",
                    "reason",
                    "status",
                    "attempts",
                ]);
                for item in value["items"].as_array().into_iter().flatten() {
                    t.add_row(vec![
                        text(&item["id"]),
                        text(&item["failed_at"]),
                        text(&item["route"]),
                        text(&item["owner"]["team"]),
                        text(&item["reason"]),
                        text(&item["status"]),
                        text(&item["attempts"]),
                    ]);
                }
                let mut out = t.to_string();
                if let Some(next) = value["next_cursor"].as_str() {
                    out.push_str(&format!("\nmore: switchyard dlq list --cursor {next}"));
                }
                Ok(out)
            }
            DlqCommand::Show { id } => {
                let value = client
                    .call(
                        http::Method::GET,
                        &format!("/admin/dead-letters/{}", encode(&id)),
                        &[],
                        None,
                    )
                    .await?;
                if admin.json {
                    return Ok(value.to_string());
                }
                Ok(show_text(&value))
            }
            DlqCommand::Replay {
                id: Some(id),
                filter,
                all,
                rate,
                ..
            } => {
                if !filter.is_empty() || all || rate.is_some() {
                    bail!("give an id or a filter, not both");
                }
                let value = client
                    .call(
                        http::Method::POST,
                        &format!("/admin/dead-letters/{}/replay", encode(&id)),
                        &[],
                        None,
                    )
                    .await?;
                Ok(if admin.json {
                    value.to_string()
                } else {
                    format!("replayed {id}")
                })
            }
            DlqCommand::Replay {
                id: None,
                filter,
                all,
                rate,
                detach,
            } => {
                if filter.is_empty() && !all {
                    bail!("give an id, or a filter (--route, --owner, --source, …), or --all");
                }
                let mut body: serde_json::Map<String, Value> = filter
                    .pairs()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), json!(v)))
                    .collect();
                if all {
                    body.insert("all".to_owned(), json!(true));
                }
                if let Some(rate) = rate {
                    body.insert("rate".to_owned(), json!(rate));
                }
                let started = client
                    .call(
                        http::Method::POST,
                        "/admin/dead-letters/replay",
                        &[],
                        Some(Value::Object(body)),
                    )
                    .await?;
                let id = text(&started["replay"]);
                if detach {
                    return Ok(if admin.json {
                        started.to_string()
                    } else {
                        format!(
                            "replay job {id}: {} dead letters ({} skipped: route no longer configured); follow it with: switchyard dlq replays {id}",
                            text(&started["matched"]),
                            text(&started["skipped_unconfigured_routes"])
                        )
                    });
                }
                let done = follow_replay(&client, &id, admin.json).await?;
                Ok(if admin.json {
                    done.to_string()
                } else {
                    replay_text(&done)
                })
            }
            DlqCommand::Replays { id: Some(id) } => {
                let value = client
                    .call(
                        http::Method::GET,
                        &format!("/admin/replays/{}", encode(&id)),
                        &[],
                        None,
                    )
                    .await?;
                Ok(if admin.json {
                    value.to_string()
                } else {
                    replay_text(&value)
                })
            }
            DlqCommand::Replays { id: None } => {
                let value = client
                    .call(http::Method::GET, "/admin/replays", &[], None)
                    .await?;
                if admin.json {
                    return Ok(value.to_string());
                }
                let mut t = table(&[
                    "id", "state", "started", "by", "rate", "matched", "replayed", "remaining",
                ]);
                for item in value["items"].as_array().into_iter().flatten() {
                    t.add_row(vec![
                        text(&item["id"]),
                        text(&item["state"]),
                        text(&item["started_at"]),
                        text(&item["by"]),
                        text(&item["rate"]),
                        text(&item["matched"]),
                        text(&item["replayed"]),
                        text(&item["remaining"]),
                    ]);
                }
                Ok(t.to_string())
            }
            DlqCommand::Cancel { id } => {
                let value = client
                    .call(
                        http::Method::DELETE,
                        &format!("/admin/replays/{}", encode(&id)),
                        &[],
                        None,
                    )
                    .await?;
                Ok(if admin.json {
                    value.to_string()
                } else {
                    format!(
                        "replay job {id}: stopping ({} replayed so far; the rest stay dead letters)",
                        text(&value["replayed"])
                    )
                })
            }
            DlqCommand::Delete { id } => {
                client
                    .call(
                        http::Method::DELETE,
                        &format!("/admin/dead-letters/{}", encode(&id)),
                        &[],
                        None,
                    )
                    .await?;
                Ok(if admin.json {
                    json!({"deleted": id}).to_string()
                } else {
                    format!("deleted {id}")
                })
            }
        }
    })
    .await
}

/// How often a followed replay job is looked at.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Follows replay job `id` until it ends, with a progress line on stderr
/// each time it moves (unless `quiet`); its final record.
async fn follow_replay(client: &Client, id: &str, quiet: bool) -> anyhow::Result<Value> {
    let mut shown = None;
    loop {
        let value = client
            .call(
                http::Method::GET,
                &format!("/admin/replays/{}", encode(id)),
                &[],
                None,
            )
            .await?;
        let progress = (value["replayed"].clone(), value["remaining"].clone());
        if !quiet && shown.as_ref() != Some(&progress) {
            eprintln!(
                "replay job {id}: {} replayed, {} to go",
                text(&progress.0),
                text(&progress.1)
            );
            shown = Some(progress);
        }
        if value["state"] != "running" {
            return Ok(value);
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// A replay job's record in a few lines.
fn replay_text(value: &Value) -> String {
    format!(
        "replay job {} {}: {} of {} replayed, {} gone before their turn, {} undecodable, {} not replayed, {} skipped (route not configured)\nby {}, started {}, ended {}, rate {}, filter {}",
        text(&value["id"]),
        text(&value["state"]),
        text(&value["replayed"]),
        text(&value["matched"]),
        text(&value["gone"]),
        text(&value["undecodable"]),
        text(&value["remaining"]),
        text(&value["skipped_unconfigured_routes"]),
        text(&value["by"]),
        text(&value["started_at"]),
        text(&value["ended_at"]),
        text(&value["rate"]),
        value["filter"]
    )
}

fn encode(segment: &str) -> String {
    form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

fn show_text(value: &Value) -> String {
    let mut out = String::new();
    let line = |out: &mut String, label: &str, v: &Value| {
        out.push_str(&format!("{label:<12} {}\n", text(v)));
    };
    line(&mut out, "id", &value["id"]);
    line(&mut out, "event", &value["event_id"]);
    line(&mut out, "route", &value["route"]);
    line(&mut out, "source", &value["source"]);
    line(&mut out, "owner", &value["owner"]["team"]);
    line(&mut out, "contact", &value["owner"]["contact"]);
    line(&mut out, "runbook", &value["owner"]["runbook"]);
    line(&mut out, "destination", &value["destination"]);
    line(&mut out, "reason", &value["reason"]);
    line(&mut out, "status", &value["status"]);
    line(&mut out, "received", &value["received_at"]);
    line(&mut out, "failed", &value["failed_at"]);
    let mut attempts = table(&["attempt", "at", "status", "latency ms", "error"]);
    for a in value["history"].as_array().into_iter().flatten() {
        attempts.add_row(vec![
            text(&a["attempt"]),
            text(&a["at"]),
            text(&a["status"]),
            text(&a["latency_ms"]),
            text(&a["error"]),
        ]);
    }
    out.push_str(&format!("\nattempts:\n{attempts}\n\nheaders:\n"));
    for header in value["request"]["headers"].as_array().into_iter().flatten() {
        out.push_str(&format!("  {}: {}\n", text(&header[0]), text(&header[1])));
    }
    out.push_str(&format!(
        "\nbody ({}):\n{}\n",
        text(&value["request"]["body_encoding"]),
        text(&value["request"]["body"])
    ));
    out
}

/// Prints the result or the error; exit 0 or 1.
async fn report(work: impl std::future::Future<Output = anyhow::Result<String>>) -> ExitCode {
    match work.await {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(super::EXIT_FAILURE)
        }
    }
}
