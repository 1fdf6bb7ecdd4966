//! Secrets stay secret (issue 8, DESIGN.md invariant 6): a full run of the
//! real binary at `RUST_LOG=trace`, configured with a distinctive secret
//! everywhere one can be configured (every signed scheme, rotated secrets,
//! admin tokens, destination signing secrets, a password-protected Redis,
//! owner alert URLs carrying tokens), through `env:`, `file:` and literal
//! forms. The run accepts and refuses webhooks on every source, delivers,
//! dead-letters, alerts owners, serves every admin endpoint, loses and
//! regains Redis, and stops on SIGTERM. Then the whole log, every response
//! the test received, the alerts the owners received and the CLI's output
//! are searched for every secret (as written, and in the encodings a careless
//! `Debug` or `hex::encode` would produce). The log must also show that all
//! of this happened, so the search cannot pass on an empty log.
//!
//! Not searched: what destinations receive (forwarded headers and Standard
//! Webhooks signatures are the product) and the test's own requests (which
//! carry admin tokens and signatures by design).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use tempfile::TempDir;

use crate::support::config::{ConfigBuilder, Owner, Route, Source, quoted};
use crate::support::gateway::{GatewayProcess, ProcessOptions};
use crate::support::process;
use crate::support::receiver::{Receiver, Reply};
use crate::support::redis::RedisServer;
use crate::support::signing::{self, Algorithm};
use crate::support::{eventually, tail};

/// The whole scenario must end within this (it takes about 15 s).
const SCENARIO_BOUND: Duration = Duration::from_secs(50);
/// A single wait (deliveries, alerts, Redis watch) gets this long.
const WAIT: Duration = Duration::from_secs(15);
/// Any one HTTP call of the test.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// `config_toml`'s shutdown_timeout is 5 s; exiting may take a little more.
const EXIT_WITHIN: Duration = Duration::from_secs(8);
/// At trace level a run like this writes thousands of lines; far fewer means
/// the filter did not take.
const MIN_LOG_LINES: usize = 200;

// Every secret is distinctive and none is a substring of another.
const GITHUB_CURRENT: &str = "ghsec-current-7Rq2vX9kLw4mZp";
const GITHUB_PREVIOUS: &str = "ghsec-previous-3Jt8nB5cQy1hFd";
const STRIPE: &str = "stripe-endpoint-9Wd4kPq7Zr2sLm";
const SLACK: &str = "slack-signing-5Hn2bVx8Ty6qRe";
const SHOPIFY: &str = "shopify-hmac-4Mc9wLz3Ks7pGa";
/// Standard Webhooks key bytes (printable, so a lossy `String` of them would
/// show); the configured secret is `whsec_<base64>`.
const SVIX_KEY: &[u8] = b"svix-inbound-key-0Qx6Rt2Yp8Nb";
const GITLAB: &str = "gitlab-token-8Fv3Lq6Wz1Dx";
const TWILIO: &str = "twilio-auth-2Pk7Sd4Hm9Bc";
const HMAC: &str = "generic-hmac-6Yt1Gw5Nr3Vj";
const ADMIN_OPS: &str = "admin-ops-token-1Xc8Vb4Nm7Qz";
const ADMIN_BOT: &str = "admin-bot-token-3Lk9Jh5Gf2Ds";
const ADMIN_LEGACY: &str = "admin-legacy-token-7Ty4Ui8Op1As";
const DEST_KEY_CI: &[u8] = b"dest-signing-key-4Er7Wq2Zx9Cv";
const DEST_KEY_AUDIT: &[u8] = b"dest-signing-key-B-8Mn3Bv6Cx1";
const REDIS_USER: &str = "switchyard-gw";
const REDIS_PASSWORD: &str = "redis-pw-5Gh8Jk2Lz6Qw";
/// The token parts of the owners' alert URLs (a Slack incoming-webhook URL
/// is a credential in its path; other alert endpoints take one in the query).
const ALERT_PATH_TOKEN: &str = "alert-path-9Kd3Mf7Ns2";
const ALERT_QUERY_TOKEN: &str = "alert-query-6Rb1Vc4Xe8";
const SLACK_HOOK_TOKEN: &str = "slack-hook-1Tq5Wn8Pz3";

const ENV_GITHUB: &str = "SY_SECRETS_IT_GITHUB";
const ENV_SHOPIFY: &str = "SY_SECRETS_IT_SHOPIFY";
const ENV_SVIX: &str = "SY_SECRETS_IT_SVIX";
const ENV_TWILIO: &str = "SY_SECRETS_IT_TWILIO";
const ENV_ADMIN: &str = "SY_SECRETS_IT_ADMIN";

/// The URL Twilio is configured with, which it signs.
const TWILIO_PUBLIC_URL: &str = "https://gateway.example.com/hooks/twilio";

/// One configured secret and the strings that would give it away.
struct Needle {
    what: &'static str,
    forms: Vec<(&'static str, String)>,
}

/// A secret as written, and its bytes hex-encoded, base64-encoded and as a
/// `Debug` byte list.
fn plain(what: &'static str, value: &str) -> Needle {
    let bytes = value.as_bytes();
    Needle {
        what,
        forms: vec![
            ("as configured", value.to_owned()),
            ("hex", hex::encode(bytes)),
            ("base64", B64.encode(bytes)),
            ("byte list", format!("{bytes:?}")),
        ],
    }
}

/// A `whsec_` secret: as written, its base64 part alone, and the decoded key
/// as text, hex and `Debug` byte list.
fn standard_webhooks(what: &'static str, key: &[u8]) -> Needle {
    Needle {
        what,
        forms: vec![
            ("as configured", signing::whsec(key)),
            ("base64 part", B64.encode(key)),
            (
                "key bytes",
                String::from_utf8(key.to_vec()).expect("ascii key"),
            ),
            ("key hex", hex::encode(key)),
            ("key byte list", format!("{key:?}")),
        ],
    }
}

fn needles() -> Vec<Needle> {
    let needles = vec![
        plain("github secret (env:, current)", GITHUB_CURRENT),
        plain("github secret (literal, rotated out)", GITHUB_PREVIOUS),
        plain("stripe secret (file:)", STRIPE),
        plain("slack signing secret (literal)", SLACK),
        plain("shopify secret (env:)", SHOPIFY),
        standard_webhooks("standard-webhooks secret (env:)", SVIX_KEY),
        plain("gitlab token (file:)", GITLAB),
        plain("twilio auth token (env:)", TWILIO),
        plain("generic hmac secret (literal)", HMAC),
        plain("admin token ops (env:)", ADMIN_OPS),
        plain("admin token deploy-bot (file:)", ADMIN_BOT),
        plain("admin token legacy (literal)", ADMIN_LEGACY),
        standard_webhooks("destination signing secret (file:)", DEST_KEY_CI),
        standard_webhooks("destination signing secret (literal)", DEST_KEY_AUDIT),
        plain("redis password", REDIS_PASSWORD),
        plain("owner alert_url path token", ALERT_PATH_TOKEN),
        plain("owner alert_url query token", ALERT_QUERY_TOKEN),
        plain("owner slack alert_url token", SLACK_HOOK_TOKEN),
    ];
    for needle in &needles {
        for (form, text) in &needle.forms {
            assert!(
                text.len() >= 16,
                "{} ({form}) is too short to search for without false alarms",
                needle.what
            );
        }
    }
    needles
}

/// Everything the run produced that people or machines other than the
/// destinations get to see, by label.
#[derive(Default)]
struct Evidence {
    items: Vec<(String, String)>,
}

impl Evidence {
    fn add(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.items.push((label.into(), text.into()));
    }

    /// Every line of every item that contains a form of a secret.
    fn leaks(&self, needles: &[Needle]) -> Vec<String> {
        let mut found = Vec::new();
        for (label, text) in &self.items {
            for (n, line) in text.lines().enumerate() {
                for needle in needles {
                    for (form, value) in &needle.forms {
                        if let Some(at) = line.find(value.as_str()) {
                            found.push(format!(
                                "{} ({form}) in {label}, line {}: {}",
                                needle.what,
                                n + 1,
                                around(line, at, value.len())
                            ));
                        }
                    }
                }
            }
        }
        found
    }

    fn bytes(&self) -> usize {
        self.items.iter().map(|(_, t)| t.len()).sum()
    }
}

/// The part of `line` around `len` bytes at `at`, so the offending field
/// shows even in a long JSON line.
fn around(line: &str, at: usize, len: usize) -> String {
    const CONTEXT: usize = 240;
    let mut start = at.saturating_sub(CONTEXT);
    while !line.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (at + len + CONTEXT).min(line.len());
    while !line.is_char_boundary(end) {
        end += 1;
    }
    let before = if start > 0 { "…" } else { "" };
    let after = if end < line.len() { "…" } else { "" };
    format!("{before}{}{after}", &line[start..end])
}

/// An HTTP client that keeps every response (status, headers, body) as evidence.
struct Client {
    http: reqwest::Client,
    evidence: Evidence,
    responses: usize,
}

impl Client {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(CALL_TIMEOUT)
                .build()
                .expect("client"),
            evidence: Evidence::default(),
            responses: 0,
        }
    }

    /// Sends `request`, records the response, returns status and body.
    async fn call(&mut self, label: &str, request: reqwest::RequestBuilder) -> (u16, String) {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{label}: no answer: {e}"));
        let status = response.status().as_u16();
        let mut text = format!("HTTP {status}\n");
        for (name, value) in response.headers() {
            text.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        let body = response.text().await.unwrap_or_default();
        text.push('\n');
        text.push_str(&body);
        self.evidence.add(format!("response to {label}"), text);
        self.responses += 1;
        (status, body)
    }

    async fn json(&mut self, label: &str, request: reqwest::RequestBuilder) -> (u16, Value) {
        let (status, body) = self.call(label, request).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

fn extra_config(
    dir: &Path,
    good: &Receiver,
    bad: &Receiver,
    alerts: &Receiver,
    slack_alerts: &Receiver,
) -> String {
    let file = |name: &str| format!("file:{}", dir.join(name).display());
    let env = |name: &str| format!("env:{name}");
    let routes = [
        (
            "github-to-ci",
            "github",
            "platform",
            "Pushes start CI",
            "CI does not run",
            good.url("/github"),
        ),
        (
            "github-audit",
            "github",
            "payments",
            "Every GitHub event goes to the audit trail",
            "Audit trail has gaps",
            bad.url("/github-audit"),
        ),
        (
            "stripe-invoices",
            "stripe",
            "payments",
            "Invoices marked paid",
            "Invoices stay unpaid",
            good.url("/stripe"),
        ),
        (
            "slack-commands",
            "slack",
            "devx",
            "Slash commands",
            "Commands time out",
            good.url("/slack"),
        ),
        (
            "shopify-orders",
            "shopify",
            "platform",
            "Orders to fulfilment",
            "Orders not shipped",
            good.url("/shopify"),
        ),
        (
            "svix-users",
            "svix",
            "payments",
            "User events to billing",
            "Billing misses new users",
            bad.url("/svix"),
        ),
        (
            "gitlab-pipelines",
            "gitlab",
            "devx",
            "Pipeline events to the tracker",
            "Tracker shows stale pipelines",
            bad.url("/gitlab"),
        ),
        (
            "twilio-sms",
            "twilio",
            "platform",
            "Inbound SMS to support",
            "SMS unanswered",
            good.url("/twilio"),
        ),
        (
            "orders-to-warehouse",
            "orders",
            "devx",
            "Orders to the warehouse",
            "Warehouse idle",
            bad.url("/orders"),
        ),
    ];
    let signing_secrets = [
        ("github-to-ci", file("ci-signing.secret")),
        ("github-audit", signing::whsec(DEST_KEY_AUDIT)),
    ];
    let builder = ConfigBuilder::new()
        .owner(Owner::new("platform", "Platform", "platform@example.com"))
        .owner(
            Owner::new("payments", "Payments", "payments@example.com")
                .with("runbook", "https://wiki.example.com/runbooks/payments")
                .with(
                    "alert_url",
                    &alerts.url(&format!(
                        "/alerts/{ALERT_PATH_TOKEN}?token={ALERT_QUERY_TOKEN}"
                    )),
                ),
        )
        .owner(
            Owner::new("devx", "Developer Experience", "devx@example.com")
                .with(
                    "alert_url",
                    &slack_alerts.url(&format!("/services/T0/B0/{SLACK_HOOK_TOKEN}")),
                )
                .with("alert_format", "slack"),
        )
        .source(Source::new(
            "github",
            "/hooks/github",
            "github",
            &[&env(ENV_GITHUB), GITHUB_PREVIOUS],
        ))
        .source(Source::new(
            "stripe",
            "/hooks/stripe",
            "stripe",
            &[&file("stripe.secret")],
        ))
        .source(Source::new("slack", "/hooks/slack", "slack", &[SLACK]))
        .source(Source::new(
            "shopify",
            "/hooks/shopify",
            "shopify",
            &[&env(ENV_SHOPIFY)],
        ))
        .source(Source::new(
            "svix",
            "/hooks/svix",
            "standard-webhooks",
            &[&env(ENV_SVIX)],
        ))
        .source(Source::new(
            "gitlab",
            "/hooks/gitlab",
            "gitlab",
            &[&file("gitlab.token")],
        ))
        .source(
            Source::new("twilio", "/hooks/twilio", "twilio", &[&env(ENV_TWILIO)])
                .with("public_url", &quoted(TWILIO_PUBLIC_URL)),
        )
        .source(
            Source::new("orders", "/hooks/orders", "hmac", &[HMAC])
                .with("header", &quoted("X-Orders-Signature"))
                .with("algorithm", &quoted("sha512"))
                .with("encoding", &quoted("base64"))
                .with("prefix", &quoted("sha512="))
                .with("dedupe_header", &quoted("X-Orders-Delivery")),
        );
    routes
        .into_iter()
        .fold(
            builder,
            |builder, (name, source, owner, description, on_failure, url)| {
                let mut route = Route::new(name, source, owner, &url)
                    .description(description)
                    .on_failure(on_failure);
                if let Some((_, secret)) = signing_secrets.iter().find(|(r, _)| *r == name) {
                    route = route.destination("signing_secret", &quoted(secret));
                }
                builder.route(route)
            },
        )
        .build()
}

fn github_body(delivery: &str) -> String {
    format!(r#"{{"action":"opened","delivery":"{delivery}"}}"#)
}

/// Signed (or forged) requests for every source.
struct Sender<'a> {
    gateway: &'a GatewayProcess,
}

impl Sender<'_> {
    fn post(&self, client: &Client, path: &str, body: &[u8]) -> reqwest::RequestBuilder {
        client
            .http
            .post(self.gateway.public_url(path))
            .body(body.to_vec())
    }

    fn github(&self, client: &Client, secret: &str, delivery: &str) -> reqwest::RequestBuilder {
        let signature = signing::github(secret, github_body(delivery).as_bytes());
        self.github_signed(client, &signature, delivery)
    }

    /// A GitHub delivery with `signature` as its `X-Hub-Signature-256`.
    fn github_signed(
        &self,
        client: &Client,
        signature: &str,
        delivery: &str,
    ) -> reqwest::RequestBuilder {
        self.post(client, "/hooks/github", github_body(delivery).as_bytes())
            .header("Content-Type", "application/json")
            .header("X-GitHub-Event", "issues")
            .header("X-GitHub-Delivery", delivery)
            .header("X-Hub-Signature-256", signature)
    }

    fn stripe(&self, client: &Client, secret: &str, id: &str) -> reqwest::RequestBuilder {
        let body = format!(r#"{{"id":"{id}","type":"invoice.paid"}}"#);
        let signature = signing::stripe(secret, signing::unix_now(), body.as_bytes());
        self.post(client, "/hooks/stripe", body.as_bytes())
            .header("Content-Type", "application/json")
            .header("Stripe-Signature", signature)
    }

    fn slack(&self, client: &Client, secret: &str) -> reqwest::RequestBuilder {
        let body = b"token=legacy&team_id=T1&command=%2Fdeploy&text=now";
        let ts = signing::unix_now();
        self.post(client, "/hooks/slack", body)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Slack-Request-Timestamp", ts.to_string())
            .header("X-Slack-Signature", signing::slack(secret, ts, body))
    }

    fn shopify(&self, client: &Client, secret: &str, id: &str) -> reqwest::RequestBuilder {
        let body = br#"{"order":42}"#;
        self.post(client, "/hooks/shopify", body)
            .header("Content-Type", "application/json")
            .header("X-Shopify-Webhook-Id", id)
            .header("X-Shopify-Hmac-Sha256", signing::shopify(secret, body))
    }

    fn svix(&self, client: &Client, key: &[u8], id: &str) -> reqwest::RequestBuilder {
        let body = br#"{"type":"user.created"}"#;
        let ts = signing::unix_now();
        self.post(client, "/hooks/svix", body)
            .header("Content-Type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                signing::standard_webhooks(key, id, ts, body),
            )
    }

    fn gitlab(&self, client: &Client, token: &str, uuid: &str) -> reqwest::RequestBuilder {
        self.post(client, "/hooks/gitlab", br#"{"object_kind":"pipeline"}"#)
            .header("Content-Type", "application/json")
            .header("X-Gitlab-Event", "Pipeline Hook")
            .header("X-Gitlab-Event-UUID", uuid)
            .header("X-Gitlab-Token", signing::gitlab(token))
    }

    fn twilio(&self, client: &Client, secret: &str, id: &str) -> reqwest::RequestBuilder {
        let params = [
            ("Body", "hello"),
            ("From", "+15550001111"),
            ("MessageSid", "SM1"),
        ];
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let sig = signing::twilio(secret, TWILIO_PUBLIC_URL, &params);
        self.post(client, "/hooks/twilio", body.as_bytes())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("I-Twilio-Idempotency-Token", id)
            .header("X-Twilio-Signature", sig)
    }

    fn orders(&self, client: &Client, secret: &str, id: &str) -> reqwest::RequestBuilder {
        let body = br#"{"order":"A-17","total":"12.50"}"#;
        let sig = signing::hmac_base64(Algorithm::Sha512, secret.as_bytes(), body);
        self.post(client, "/hooks/orders", body)
            .header("Content-Type", "application/json")
            .header("X-Orders-Delivery", id)
            .header("X-Orders-Signature", format!("sha512={sig}"))
    }
}

/// Runs `switchyard <args>` with `env` and RUST_LOG=trace; stdout and stderr.
async fn switchyard(
    dir: &Path,
    label: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> process::Finished {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .args(args)
        .env_remove("SWITCHYARD_CONFIG")
        .env("RUST_LOG", "trace")
        .env("SWITCHYARD_LOG_FORMAT", "json");
    for (k, v) in env {
        command.env(k, v);
    }
    process::run(command, dir, label, Duration::from_secs(20)).await
}

/// The log's JSON lines with `message == msg` (and, if given, `field == value`).
fn count(lines: &[Value], msg: &str, field: Option<(&str, &str)>) -> usize {
    lines
        .iter()
        .filter(|l| l["message"] == msg)
        .filter(|l| field.is_none_or(|(k, v)| l[k] == v))
        .count()
}

#[tokio::test]
async fn no_configured_secret_reaches_a_log_line_a_response_or_the_cli() {
    tokio::time::timeout(SCENARIO_BOUND, scenario())
        .await
        .unwrap_or_else(|_| panic!("the scenario did not end within {SCENARIO_BOUND:?}"));
}

async fn scenario() {
    let started = Instant::now();
    let needles = needles();
    let mut run = configure().await;
    let tally = ingest_on_every_source(&mut run).await;
    let by_route = deliveries_and_alerts(&mut run, &tally).await;
    admin_calls(&mut run, &by_route).await;
    cli_calls(&mut run, &by_route).await;
    redis_restart(&mut run, &tally).await;
    let log_lines = stop_and_read_the_log(&mut run, &tally);
    leak_search(&mut run, &needles, log_lines, started);
}

/// Everything the scenario's phases share.
struct Run {
    dir: TempDir,
    redis: RedisServer,
    /// Accepts every delivery.
    good: Receiver,
    /// Refuses every delivery (400): dead letters and owner alerts.
    bad: Receiver,
    /// The payments owner's alert endpoint.
    alerts: Receiver,
    /// The devx owner's Slack-format alert endpoint.
    slack_alerts: Receiver,
    gateway: GatewayProcess,
    client: Client,
    evidence: Evidence,
}

/// What ingest produced, which later phases count on.
struct Tally {
    /// Jobs for the accepting destination.
    good_jobs: usize,
    /// Jobs for the refusing destination.
    bad_jobs: usize,
    /// Forged requests refused with 401.
    refused: usize,
}

/// The admin listener's URLs of `gateway`.
fn admin_urls(gateway: &GatewayProcess) -> impl Fn(&str) -> String + use<> {
    let at = gateway.admin;
    move |path| format!("http://{at}{path}")
}

/// A request with the `ops` admin token.
fn ops(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request.bearer_auth(ADMIN_OPS)
}

/// Secret files, Redis with ACL, the receivers, the gateway on every source
/// with every kind of secret reference, and `switchyard check` on its config.
async fn configure() -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    // file: secrets, with the trailing newline an editor leaves.
    for (name, value) in [
        ("stripe.secret", STRIPE.to_owned()),
        ("gitlab.token", GITLAB.to_owned()),
        ("admin-bot.token", ADMIN_BOT.to_owned()),
        ("ci-signing.secret", signing::whsec(DEST_KEY_CI)),
    ] {
        std::fs::write(dir.path().join(name), format!("{value}\n")).expect("write secret file");
    }

    // Redis with ACL: the gateway's user needs a password; the default user
    // may only PING (the harness's readiness probe, which cannot AUTH).
    let gateway_user = format!(">{REDIS_PASSWORD}");
    let redis = RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--user",
        "default",
        "on",
        "nopass",
        "+ping",
        "--user",
        REDIS_USER,
        "on",
        gateway_user.as_str(),
        "~*",
        "&*",
        "+@all",
    ]);
    let redis_url = redis.url().replacen(
        "redis://",
        &format!("redis://{REDIS_USER}:{REDIS_PASSWORD}@"),
        1,
    );

    let good = Receiver::start().await;
    let bad = Receiver::start().await;
    bad.otherwise(Reply::status(400));
    let alerts = Receiver::start().await;
    // The first alert POST loses its connection: the failure path is logged too.
    alerts.then(Reply::close());
    let slack_alerts = Receiver::start().await;

    let extra = extra_config(dir.path(), &good, &bad, &alerts, &slack_alerts);
    let admin_bot_file = dir.path().join("admin-bot.token").display().to_string();
    let tokens = format!(
        r#"tokens = [{{ name = "ops", secret = "env:{ENV_ADMIN}" }}, {{ name = "deploy-bot", secret = "file:{admin_bot_file}" }}, {{ name = "legacy", secret = "{ADMIN_LEGACY}" }}]"#
    );
    let svix_secret = signing::whsec(SVIX_KEY);
    let env: [(&str, &str); 5] = [
        (ENV_GITHUB, GITHUB_CURRENT),
        (ENV_SHOPIFY, SHOPIFY),
        (ENV_SVIX, &svix_secret),
        (ENV_TWILIO, TWILIO),
        (ENV_ADMIN, ADMIN_OPS),
    ];
    let mut options = ProcessOptions::default()
        .log_filter("trace")
        .admin_tokens(&tokens);
    for (k, v) in env {
        options = options.env(k, v);
    }
    let gateway = GatewayProcess::start_with(&redis_url, &extra, options).await;
    let mut evidence = Evidence::default();

    // `switchyard check` on the same config and environment.
    let config = gateway
        .config_path()
        .to_str()
        .expect("utf-8 path")
        .to_owned();
    let check = switchyard(dir.path(), "check", &["check", "--config", &config], &env).await;
    assert!(check.success, "switchyard check failed: {check}");
    assert!(check.stdout.contains("orders-to-warehouse"), "{check}");
    evidence.add("switchyard check stdout", check.stdout);
    evidence.add("switchyard check stderr", check.stderr);
    Run {
        dir,
        redis,
        good,
        bad,
        alerts,
        slack_alerts,
        gateway,
        client: Client::new(),
        evidence,
    }
}

/// Signed events on every source (accepted), a duplicate, and forgeries.
async fn ingest_on_every_source(run: &mut Run) -> Tally {
    let Run {
        client, gateway, ..
    } = run;
    let send = Sender { gateway };

    // Signed events on every source; github with both rotated secrets.
    let accepted: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "github (current secret)",
            send.github(client, GITHUB_CURRENT, "gh-1"),
        ),
        (
            "github (previous secret)",
            send.github(client, GITHUB_PREVIOUS, "gh-2"),
        ),
        ("stripe", send.stripe(client, STRIPE, "evt_1")),
        ("slack", send.slack(client, SLACK)),
        ("shopify", send.shopify(client, SHOPIFY, "shop-1")),
        ("standard-webhooks", send.svix(client, SVIX_KEY, "msg_1")),
        ("gitlab (right token)", send.gitlab(client, GITLAB, "gl-1")),
        ("twilio", send.twilio(client, TWILIO, "tw-1")),
        ("hmac", send.orders(client, HMAC, "ord-1")),
    ];
    let mut good_jobs = 0;
    let mut bad_jobs = 0;
    for (label, request) in accepted {
        let (status, answer) = client.json(label, request).await;
        assert_eq!(status, 202, "{label}: {answer}");
        for route in answer["routes"].as_array().expect("routes") {
            match route.as_str().expect("route name") {
                "github-audit" | "svix-users" | "gitlab-pipelines" | "orders-to-warehouse" => {
                    bad_jobs += 1;
                }
                _ => good_jobs += 1,
            }
        }
    }
    assert_eq!((good_jobs, bad_jobs), (6, 5), "jobs per destination");
    let (status, answer) = client
        .json(
            "github duplicate",
            send.github(client, GITHUB_CURRENT, "gh-1"),
        )
        .await;
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &json!(true)),
        "{answer}"
    );

    // Forgeries: wrong secrets (one of them another source's), a configured
    // secret sent where a signature belongs, a wrong GitLab token, and the
    // right GitLab token on a path that is not GitLab's.
    let forged: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "github signed with the stripe secret",
            send.github(client, STRIPE, "gh-f1"),
            401,
        ),
        (
            "github with a secret as its signature",
            send.github_signed(client, &format!("sha256={GITHUB_CURRENT}"), "gh-f2"),
            401,
        ),
        (
            "stripe signed with the github secret",
            send.stripe(client, GITHUB_CURRENT, "evt_f"),
            401,
        ),
        (
            "slack with a wrong secret",
            send.slack(client, "not-the-slack-secret"),
            401,
        ),
        (
            "shopify with a wrong secret",
            send.shopify(client, HMAC, "shop-f"),
            401,
        ),
        (
            "standard-webhooks with a wrong key",
            send.svix(client, DEST_KEY_CI, "msg_f"),
            401,
        ),
        (
            "gitlab with a wrong token",
            send.gitlab(client, "gitlab-token-wrong", "gl-f1"),
            401,
        ),
        (
            "gitlab with another source's secret",
            send.gitlab(client, TWILIO, "gl-f2"),
            401,
        ),
        (
            "gitlab token on the github path",
            send.post(client, "/hooks/github", b"{}")
                .header("X-Gitlab-Token", GITLAB),
            401,
        ),
        (
            "twilio with a wrong token",
            send.twilio(client, SHOPIFY, "tw-f"),
            401,
        ),
        (
            "hmac with a wrong secret",
            send.orders(client, SLACK, "ord-f"),
            401,
        ),
        (
            "unknown source with secrets in headers",
            send.post(client, "/hooks/nowhere", b"{}")
                .header("X-Gitlab-Token", GITLAB)
                .header("Authorization", format!("Bearer {ADMIN_OPS}")),
            404,
        ),
    ];
    let refused = forged.len() - 1;
    for (label, request, expected) in forged {
        let (status, body) = client.call(label, request).await;
        assert_eq!(status, expected, "{label}: {body}");
    }
    Tally {
        good_jobs,
        bad_jobs,
        refused,
    }
}

/// Deliveries to both destinations, the dead letters they leave, and the
/// owner alerts; the dead letter ids by route.
async fn deliveries_and_alerts(run: &mut Run, tally: &Tally) -> BTreeMap<String, String> {
    let Tally {
        good_jobs,
        bad_jobs,
        ..
    } = *tally;
    let Run {
        good,
        bad,
        alerts,
        slack_alerts,
        gateway,
        client,
        evidence,
        ..
    } = run;
    let admin = admin_urls(gateway);
    // Deliveries: 2xx on `good`, 400 on `bad` (dead letters, owner alerts).
    let took = good.wait_for(good_jobs, WAIT).await;
    assert_eq!(
        took.len(),
        good_jobs,
        "deliveries to the accepting destination"
    );
    let signed = took
        .iter()
        .filter(|r| r.uri == "/github")
        .collect::<Vec<_>>();
    assert!(
        !signed.is_empty()
            && signed
                .iter()
                .all(|r| r.headers.contains_key("webhook-signature")),
        "the file: signing secret signs deliveries to github-to-ci"
    );
    let rejected = bad.wait_for(bad_jobs, WAIT).await;
    assert_eq!(
        rejected.len(),
        bad_jobs,
        "deliveries to the refusing destination"
    );
    let mut dead_ids = Vec::new();
    let listed = eventually(WAIT, || {
        let request = client
            .http
            .get(admin("/admin/dead-letters"))
            .bearer_auth(ADMIN_OPS);
        async move {
            let Ok(response) = request.send().await else {
                return false;
            };
            let list: Value = response.json().await.unwrap_or(Value::Null);
            list["items"]
                .as_array()
                .is_some_and(|items| items.len() >= 5)
        }
    })
    .await;
    assert!(listed, "five dead letters");
    let (status, list) = client
        .json(
            "GET /admin/dead-letters",
            ops(client.http.get(admin("/admin/dead-letters"))),
        )
        .await;
    assert_eq!(status, 200);
    let mut by_route = BTreeMap::new();
    for item in list["items"].as_array().expect("items") {
        let id = item["id"].as_str().expect("id").to_owned();
        by_route.insert(
            item["route"].as_str().expect("route").to_owned(),
            id.clone(),
        );
        dead_ids.push(id);
    }
    // Every dead letter in full (request headers and body): the GitLab one
    // keeps the X-Gitlab-Token its sender sent.
    for id in &dead_ids {
        let (status, _) = client
            .call(
                &format!("GET /admin/dead-letters/{id}"),
                ops(client.http.get(admin(&format!("/admin/dead-letters/{id}")))),
            )
            .await;
        assert_eq!(status, 200);
    }
    let alerted = eventually(WAIT, || {
        let log = gateway.log();
        async move { log.matches("\"owner alerted\"").count() >= 4 }
    })
    .await;
    assert!(alerted, "every dead-lettered route's owner is alerted");
    for (who, receiver) in [("payments", &alerts), ("devx", &slack_alerts)] {
        for (i, request) in receiver.requests().iter().enumerate() {
            let mut text = String::new();
            for (name, value) in &request.headers {
                text.push_str(&format!(
                    "{name}: {}\n",
                    String::from_utf8_lossy(value.as_bytes())
                ));
            }
            text.push('\n');
            text.push_str(&String::from_utf8_lossy(&request.body));
            evidence.add(format!("alert {i} to {who}"), text);
        }
    }
    by_route
}

/// The admin API with each of the three tokens.
async fn admin_calls(run: &mut Run, by_route: &BTreeMap<String, String>) {
    let admin = admin_urls(&run.gateway);
    let client = &mut run.client;
    // The admin API: inventory, replay (one, by filter), delete, audit,
    // refusals, probes, metrics, dashboard; with each of the three tokens.
    let (status, _) = client
        .call(
            "GET /admin/routes",
            ops(client.http.get(admin("/admin/routes"))),
        )
        .await;
    assert_eq!(status, 200);
    let svix_dead = &by_route["svix-users"];
    let (status, _) = client
        .call(
            "POST replay one",
            client
                .http
                .post(admin(&format!("/admin/dead-letters/{svix_dead}/replay")))
                .bearer_auth(ADMIN_BOT),
        )
        .await;
    assert_eq!(status, 202);
    let (status, _) = client
        .call(
            "POST bulk replay",
            ops(client.http.post(admin("/admin/dead-letters/replay")))
                .json(&json!({"route": "orders-to-warehouse"})),
        )
        .await;
    assert_eq!(status, 202);
    let github_dead = &by_route["github-audit"];
    let (status, _) = client
        .call(
            "DELETE dead letter",
            client
                .http
                .delete(admin(&format!("/admin/dead-letters/{github_dead}")))
                .bearer_auth(ADMIN_LEGACY),
        )
        .await;
    assert_eq!(status, 204);
    let (status, audit) = client
        .call(
            "GET /admin/audit",
            ops(client.http.get(admin("/admin/audit"))),
        )
        .await;
    assert_eq!(status, 200);
    for name in ["ops", "deploy-bot", "legacy"] {
        assert!(
            audit.contains(&format!("\"{name}\"")),
            "audit names {name}: {audit}"
        );
    }
    for (label, request) in [
        (
            "wrong admin token",
            client
                .http
                .get(admin("/admin/routes"))
                .bearer_auth("not-a-token"),
        ),
        (
            "a source secret as admin token",
            client
                .http
                .get(admin("/admin/dead-letters"))
                .bearer_auth(GITHUB_CURRENT),
        ),
        ("no admin token", client.http.get(admin("/admin/audit"))),
    ] {
        let (status, _) = client.call(label, request).await;
        assert_eq!(status, 401, "{label}");
    }
    for path in ["/readyz", "/healthz", "/metrics", "/", "/dashboard.js"] {
        let (status, _) = client
            .call(&format!("GET {path}"), client.http.get(admin(path)))
            .await;
        assert_eq!(status, 200, "{path}");
    }
}

/// The ops CLI against the admin API.
async fn cli_calls(run: &mut Run, by_route: &BTreeMap<String, String>) {
    let admin = admin_urls(&run.gateway);
    let Run { dir, evidence, .. } = run;
    // The ops CLI, with the token in its environment.
    let admin_base = admin("");
    let dead_one = by_route["gitlab-pipelines"].clone();
    for (label, args) in [
        ("cli routes", vec!["routes", "--admin", admin_base.as_str()]),
        (
            "cli dlq list",
            vec!["dlq", "list", "--admin", admin_base.as_str()],
        ),
        (
            "cli dlq show",
            vec![
                "dlq",
                "show",
                dead_one.as_str(),
                "--admin",
                admin_base.as_str(),
            ],
        ),
    ] {
        let out = switchyard(
            dir.path(),
            label,
            &args,
            &[("SWITCHYARD_ADMIN_TOKEN", ADMIN_OPS)],
        )
        .await;
        assert!(out.success, "{label}: {out}");
        evidence.add(format!("{label} stdout"), out.stdout);
        evidence.add(format!("{label} stderr"), out.stderr);
    }
}

/// Redis stops and comes back while the gateway runs.
async fn redis_restart(run: &mut Run, tally: &Tally) {
    let good_jobs = tally.good_jobs;
    let Run {
        redis,
        good,
        gateway,
        client,
        ..
    } = run;
    let admin = admin_urls(gateway);
    let send = Sender { gateway };
    // Redis goes away: ingest answers 503, readiness fails, the watcher and
    // the workers log connection errors; then it comes back.
    redis.stop();
    let down = eventually(WAIT, || {
        let log = gateway.log();
        async move { log.contains("redis unreachable") }
    })
    .await;
    assert!(down, "the gateway logs that Redis is unreachable");
    let (status, _) = client
        .call(
            "github while redis is down",
            send.github(client, GITHUB_CURRENT, "gh-down"),
        )
        .await;
    assert_eq!(status, 503);
    let (status, _) = client
        .call(
            "GET /readyz (redis down)",
            client.http.get(admin("/readyz")),
        )
        .await;
    assert_eq!(status, 503);
    let (status, _) = client
        .call(
            "GET /admin/dead-letters (redis down)",
            ops(client.http.get(admin("/admin/dead-letters"))),
        )
        .await;
    assert_eq!(status, 503);
    let (status, _) = client
        .call(
            "GET /admin/routes (redis down)",
            ops(client.http.get(admin("/admin/routes"))),
        )
        .await;
    assert_eq!(status, 200, "the inventory is served without live figures");
    redis.restart();
    let ready = eventually(WAIT, || {
        let request = client.http.get(admin("/readyz")).send();
        async move { request.await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    assert!(ready, "ready again once Redis is back");
    let (status, body) = client
        .call(
            "github after redis returned",
            send.github(client, GITHUB_CURRENT, "gh-back"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let took = good.wait_for(good_jobs + 1, WAIT).await;
    assert_eq!(took.len(), good_jobs + 1, "delivered after Redis returned");
    let back = eventually(WAIT, || {
        let log = gateway.log();
        async move { log.matches("\"redis reachable\"").count() >= 2 }
    })
    .await;
    assert!(back, "the gateway logs that Redis is back");
}

/// SIGTERM, then the log: JSON lines at every level recording every step;
/// the number of lines.
fn stop_and_read_the_log(run: &mut Run, tally: &Tally) -> usize {
    let Tally {
        good_jobs,
        bad_jobs,
        refused,
    } = *tally;
    let gateway = &mut run.gateway;
    // SIGTERM: a clean stop, logged.
    gateway.signal(Signal::SIGTERM);
    let status = gateway.wait_exit(EXIT_WITHIN);
    let log = gateway.log();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "clean exit on SIGTERM; log tail:\n{}",
        tail(&log, 40)
    );

    // The log is the real thing: JSON lines at every level, recording every
    // step above.
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(
        lines.len() >= MIN_LOG_LINES,
        "only {} log lines at trace level",
        lines.len()
    );
    for level in ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"] {
        assert!(
            lines.iter().any(|l| l["level"] == level),
            "no {level} line in the log"
        );
    }
    for source in [
        "github", "stripe", "slack", "shopify", "svix", "gitlab", "twilio", "orders",
    ] {
        assert!(
            count(&lines, "event accepted", Some(("source", source))) >= 1,
            "no accepted event of {source} in the log"
        );
    }
    let expectations: [(&str, usize); 13] = [
        ("webhook refused", refused),
        ("duplicate delivery; already queued", 1),
        ("delivery attempt", good_jobs + bad_jobs + 1),
        ("dead letter", bad_jobs),
        ("owner alert failed", 1),
        ("owner alerted", 4),
        ("admin action", 3),
        ("cannot queue events; answering 503", 1),
        ("delivery: redis operation failed; retrying", 1),
        ("redis reachable", 2),
        ("shutdown requested", 1),
        ("switchyard stopped", 1),
        ("switchyard running", 1),
    ];
    for (message, at_least) in expectations {
        let n = count(&lines, message, None);
        assert!(
            n >= at_least,
            "{n} {message:?} lines in the log, expected at least {at_least}"
        );
    }
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("redis unreachable"))),
        "no redis-unreachable line"
    );
    // The password-bearing URL was logged, masked.
    let masked = format!("redis://{REDIS_USER}:***@");
    assert!(log.contains(&masked), "the Redis URL is logged masked");
    run.evidence.add("gateway log", log);
    lines.len()
}

/// Every form of every secret searched in everything collected.
fn leak_search(run: &mut Run, needles: &[Needle], log_lines: usize, started: Instant) {
    let mut all = std::mem::take(&mut run.client.evidence);
    all.items.append(&mut run.evidence.items);
    let leaks = all.leaks(needles);
    eprintln!(
        "secrets: {} secrets in {} forms searched in {} log lines, {} responses, {} items ({} bytes) in {:?}",
        needles.len(),
        needles.iter().map(|n| n.forms.len()).sum::<usize>(),
        log_lines,
        run.client.responses,
        all.items.len(),
        all.bytes(),
        started.elapsed()
    );
    assert!(
        leaks.is_empty(),
        "{} secret leak(s):\n{}",
        leaks.len(),
        leaks
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
