//! Dead letters end to end: what they keep, the admin API (auth, list with
//! filters and stable cursors, show, replay one or by owner, delete), the
//! audit log, owner alerts, and the ops CLI.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use crate::support::config::{ConfigBuilder, Owner, Route, Source};
use crate::support::env::{ADMIN_TOKEN, TestEnv};
use crate::support::eventually;
use crate::support::gateway::TestGateway;
use crate::support::github;
use crate::support::receiver::{Receiver, Reply};
use crate::support::redis::RedisServer;
use crate::support::tls::TrustedTls;

const SECRET: &str = "dlq-test-secret";

/// Two owners, two routes (`payments-route` of `payments`, `devex-route` of
/// `devex`), both to `receiver`; payments alerts go to `alert_url`.
fn config(receiver: &Receiver, alert_url: &str, max_attempts: u32) -> ConfigBuilder {
    let route = |name: &str, owner: &str, event: &str| {
        Route::new(name, "github", owner, &receiver.url(&format!("/{event}")))
            .when_github_event(event)
            .destination("timeout", r#""2s""#)
    };
    ConfigBuilder::new()
        .retry(max_attempts, "100ms", "1s")
        // These tests fail destinations on purpose; the breaker would defer them.
        .breaker(100000, None)
        .owner(
            Owner::new("payments", "Payments", "payments-oncall@example.com")
                .with("runbook", "https://wiki.example.com/runbooks/payments")
                .with("alert_url", alert_url),
        )
        .owner(Owner::devex())
        .source(Source::github(SECRET))
        .route(
            route("payments-route", "payments", "payments")
                .description("Payments")
                .on_failure("Invoices stay unpaid"),
        )
        .route(
            route("devex-route", "devex", "devex")
                .description("Devex")
                .on_failure("CI does not start"),
        )
}

async fn setup(max_attempts: u32) -> TestEnv {
    setup_with(max_attempts, |toml| toml).await
}

/// [`setup`] on the config `change` makes.
async fn setup_with(
    max_attempts: u32,
    change: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> TestEnv {
    TestEnv::start(SECRET, |receiver, alerts| {
        change(config(receiver, &alerts.url("/alerts"), max_attempts)).build()
    })
    .await
}

/// Every dead letter matching `query`, following cursors.
async fn all_dead_letters(s: &TestEnv, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/admin/dead-letters?limit=100&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = s.admin(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

async fn wait_dead_letters(s: &TestEnv, query: &str, n: usize) -> Vec<Value> {
    let mut items = Vec::new();
    for _ in 0..150 {
        items = all_dead_letters(s, query).await;
        if items.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    items
}

#[tokio::test]
async fn a_rejected_delivery_keeps_request_owner_and_attempts() {
    let s = setup(3).await;
    s.receiver.then(Reply::status(400));
    let body = b"{\"invoice\":\"in_1\",\"raw\":\"\xff\"}";
    let event_id = s.send("payments", "d-400", body).await;
    let items = wait_dead_letters(&s, "route=payments-route", 1).await;
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(item["reason"], "rejected");
    assert_eq!(item["status"], 400);
    assert_eq!(item["event_id"], event_id.as_str());
    assert_eq!(item["owner"]["team"], "Payments");
    assert_eq!(item["owner"]["contact"], "payments-oncall@example.com");
    assert_eq!(
        item["owner"]["runbook"],
        "https://wiki.example.com/runbooks/payments"
    );

    let id = item["id"].as_str().expect("id");
    let (status, letter) = s
        .admin(Method::GET, &format!("/admin/dead-letters/{id}"), None)
        .await;
    assert_eq!(status, 200);
    // Not UTF-8, so base64: the bytes come back exactly.
    use base64::Engine as _;
    assert_eq!(letter["request"]["body_encoding"], "base64");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(letter["request"]["body"].as_str().expect("body"))
        .expect("base64");
    assert_eq!(decoded, body);
    let headers = letter["request"]["headers"].as_array().expect("headers");
    assert!(headers.contains(&json!(["x-github-delivery", "d-400"])));
    assert_eq!(letter["history"].as_array().map(Vec::len), Some(1));
    assert_eq!(letter["history"][0]["status"], 400);
}

#[tokio::test]
async fn exhausted_deliveries_record_every_attempt_and_a_burst_alerts_once() {
    let s = setup(3).await;
    s.receiver.otherwise(Reply::status(500));
    for i in 0..50 {
        s.send("payments", &format!("burst-{i}"), b"{}").await;
    }
    let items = wait_dead_letters(&s, "owner=payments", 50).await;
    assert_eq!(items.len(), 50);
    assert!(
        items
            .iter()
            .all(|i| i["reason"] == "exhausted" && i["attempts"] == 3)
    );
    let id = items[0]["id"].as_str().expect("id");
    let (_, letter) = s
        .admin(Method::GET, &format!("/admin/dead-letters/{id}"), None)
        .await;
    let statuses: Vec<&Value> = letter["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|a| &a["status"])
        .collect();
    assert_eq!(statuses, [&json!(500), &json!(500), &json!(500)]);

    // One alert for the first, and the rest wait for the next minute.
    let alerts = s.alerts.wait_for(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alerts_now = s.alerts.requests();
    assert_eq!(
        alerts_now.len(),
        1,
        "at most one alert per route per minute"
    );
    let alert: Value = serde_json::from_slice(&alerts[0].body).expect("json alert");
    assert_eq!(alert["route"], "payments-route");
    assert_eq!(alert["owner"]["team"], "Payments");
    assert_eq!(
        alert["owner"]["runbook"],
        "https://wiki.example.com/runbooks/payments"
    );
    assert!(
        alert["first_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("exhausted"))
    );
    assert!(
        alert["dead_letters_url"]
            .as_str()
            .is_some_and(|u| u.contains("route=payments-route"))
    );
}

#[tokio::test]
async fn bulk_replay_by_owner_replays_exactly_that_owners_dead_letters() {
    let s = setup(1).await;
    s.receiver.otherwise(Reply::status(503));
    let mut sent: HashMap<&str, HashSet<String>> = HashMap::new();
    for i in 0..1000 {
        let event = if i % 2 == 0 { "payments" } else { "devex" };
        let id = s
            .send(
                event,
                &format!("bulk-{i}"),
                format!("{{\"n\":{i}}}").as_bytes(),
            )
            .await;
        sent.entry(event).or_default().insert(id);
    }
    assert_eq!(wait_dead_letters(&s, "", 1000).await.len(), 1000);
    let before = s.receiver.requests().len();

    s.receiver.otherwise(Reply::ok());
    let (status, answer) = s.gateway.bulk_replay(json!({"owner": "payments"})).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["state"], "done", "{answer}");
    assert_eq!(
        (&answer["matched"], &answer["replayed"]),
        (&json!(500), &json!(500))
    );

    let delivered = s
        .receiver
        .wait_for(before + 500, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let replayed: Vec<_> = s.receiver.requests()[before..].to_vec();
    assert_eq!(
        replayed.len(),
        500,
        "each once: {} arrived",
        delivered.len() - before
    );
    let ids: HashSet<String> = replayed
        .iter()
        .map(|r| {
            r.headers["x-switchyard-event-id"]
                .to_str()
                .expect("id")
                .to_owned()
        })
        .collect();
    assert_eq!(ids, sent["payments"], "exactly the payments events");
    assert!(replayed.iter().all(|r| r.uri == "/payments"));
    assert_eq!(
        all_dead_letters(&s, "owner=devex").await.len(),
        500,
        "devex untouched"
    );
    assert!(all_dead_letters(&s, "owner=payments").await.is_empty());

    // An unscoped bulk replay is refused: no team replays everyone's by accident.
    let (status, answer) = s
        .admin(
            Method::POST,
            "/admin/dead-letters/replay",
            Some(json!({"reason": "exhausted"})),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
}

#[tokio::test]
async fn concurrent_replays_of_one_id_deliver_once() {
    let s = setup(1).await;
    s.receiver.then(Reply::status(400));
    s.send("devex", "race", b"{}").await;
    let items = wait_dead_letters(&s, "", 1).await;
    let id = items[0]["id"].as_str().expect("id").to_owned();
    let path = format!("/admin/dead-letters/{id}/replay");
    let (a, b) = tokio::join!(
        s.admin(Method::POST, &path, None),
        s.admin(Method::POST, &path, None)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 404], "one replays, the other finds nothing");
    assert_eq!(
        s.receiver.wait_for(2, Duration::from_secs(5)).await.len(),
        2
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        s.receiver.requests().len(),
        2,
        "first attempt + exactly one replay"
    );
}

#[tokio::test]
async fn a_replay_that_fails_again_keeps_the_history_of_both_lives() {
    let s = setup(1).await;
    s.receiver.otherwise(Reply::status(422));
    s.send("devex", "twice", b"{}").await;
    let id = wait_dead_letters(&s, "", 1).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, _) = s
        .admin(
            Method::POST,
            &format!("/admin/dead-letters/{id}/replay"),
            None,
        )
        .await;
    assert_eq!(status, 202);
    assert!(
        eventually(Duration::from_secs(5), || async {
            s.admin(Method::GET, &format!("/admin/dead-letters/{id}"), None)
                .await
                .1["history"]
                .as_array()
                .is_some_and(|h| h.len() == 2)
        })
        .await,
        "the dead letter returns with both attempts"
    );
}

#[tokio::test]
async fn every_admin_path_needs_a_valid_token_and_actions_are_audited() {
    let s = setup(1).await;
    let paths = [
        (Method::GET, "/admin/routes"),
        (Method::GET, "/admin/dead-letters"),
        (Method::GET, "/admin/dead-letters/x"),
        (Method::POST, "/admin/dead-letters/x/replay"),
        (Method::POST, "/admin/dead-letters/replay"),
        (Method::DELETE, "/admin/dead-letters/x"),
        (Method::GET, "/admin/audit"),
        (Method::GET, "/admin/nonexistent"),
    ];
    for (method, path) in &paths {
        for token in [
            None,
            Some("wrong"),
            Some("test-admin-toke"),
            Some("test-admin-token-2"),
        ] {
            let mut request = s.client.request(method.clone(), s.gateway.admin_url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("answers");
            assert_eq!(response.status(), 401, "{method} {path} with {token:?}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"], "unauthorized");
            assert!(!body.to_string().contains(ADMIN_TOKEN), "no token echoed");
        }
    }
    // The scheme is case-insensitive; a second Authorization header, even
    // carrying the same token, is refused rather than one of them picked.
    let routes = s.gateway.admin_url("/admin/routes");
    let lowercase = s
        .client
        .get(&routes)
        .header("Authorization", format!("bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .expect("answers");
    assert_eq!(lowercase.status(), 200, "bearer in lower case");
    for second in [format!("Bearer {ADMIN_TOKEN}"), "Bearer wrong".to_owned()] {
        let twice = s
            .client
            .get(&routes)
            .header("Authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("Authorization", second)
            .send()
            .await
            .expect("answers");
        assert_eq!(twice.status(), 401, "two Authorization headers");
    }

    s.receiver.otherwise(Reply::status(400));
    s.send("devex", "audit-1", b"{}").await;
    s.send("devex", "audit-2", b"{}").await;
    let items = wait_dead_letters(&s, "", 2).await;
    let (first, second) = (
        items[0]["id"].as_str().expect("id"),
        items[1]["id"].as_str().expect("id"),
    );
    assert_eq!(
        s.admin(
            Method::POST,
            &format!("/admin/dead-letters/{first}/replay"),
            None
        )
        .await
        .0,
        202
    );
    assert_eq!(
        s.admin(
            Method::DELETE,
            &format!("/admin/dead-letters/{second}"),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        s.admin(
            Method::DELETE,
            &format!("/admin/dead-letters/{second}"),
            None
        )
        .await
        .0,
        404
    );
    let (status, audit) = s.admin(Method::GET, "/admin/audit", None).await;
    assert_eq!(status, 200);
    let entries = audit["items"].as_array().expect("items");
    assert_eq!(entries.len(), 2, "{audit}");
    assert_eq!(entries[0]["action"], "delete");
    assert_eq!(entries[0]["target"], second);
    assert_eq!(entries[1]["action"], "replay");
    assert_eq!(entries[1]["target"], first);
    assert!(
        entries
            .iter()
            .all(|e| e["token"] == "test-ops" && e["count"] == 1)
    );
}

#[tokio::test]
async fn cursor_pages_stay_stable_while_new_dead_letters_arrive() {
    let s = setup(1).await;
    s.receiver.otherwise(Reply::status(400));
    for i in 0..30 {
        s.send("devex", &format!("page-{i}"), b"{}").await;
    }
    wait_dead_letters(&s, "", 30).await;
    let (_, first) = s
        .admin(Method::GET, "/admin/dead-letters?limit=10", None)
        .await;
    let cursor = first["next_cursor"].as_str().expect("cursor").to_owned();
    for i in 0..10 {
        s.send("devex", &format!("late-{i}"), b"{}").await;
    }
    wait_dead_letters(&s, "", 40).await;
    let mut seen: Vec<String> = first["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect();
    let mut next = Some(cursor);
    while let Some(cursor) = next {
        let (_, page) = s
            .admin(
                Method::GET,
                &format!("/admin/dead-letters?limit=10&cursor={cursor}"),
                None,
            )
            .await;
        seen.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i["id"].as_str().expect("id").to_owned()),
        );
        next = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(
        seen.len(),
        30,
        "the first 30, each once, none of the late ones"
    );
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 30);
}

#[tokio::test]
async fn the_cli_drives_the_dead_letter_lifecycle() {
    let s = setup(1).await;
    s.receiver.then(Reply::status(400).times(2));
    s.send("devex", "cli-1", b"{\"cli\":1}").await;
    s.send("devex", "cli-2", b"{\"cli\":2}").await;
    wait_dead_letters(&s, "", 2).await;
    let admin = format!("http://{}", s.gateway.admin);
    // The CLI blocks; run it off the runtime so the gateway keeps serving.
    let cli = |args: Vec<String>, token: &'static str| {
        let admin = admin.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
                    .args(&args)
                    .env("SWITCHYARD_ADMIN_URL", &admin)
                    .env("SWITCHYARD_ADMIN_TOKEN", token)
                    .output()
                    .expect("run the CLI");
                (
                    output.status.code(),
                    String::from_utf8_lossy(&output.stdout).into_owned(),
                    String::from_utf8_lossy(&output.stderr).into_owned(),
                )
            })
            .await
            .expect("CLI task")
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    let (code, out, err) = cli(
        args(&["dlq", "list", "--json", "--route", "devex-route"]),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let listed: Value = serde_json::from_str(&out).expect("json");
    let ids: Vec<String> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 2);

    let (code, out, _) = cli(args(&["dlq", "list"]), ADMIN_TOKEN).await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains(&ids[0]) && out.contains("Developer Experience"),
        "{out}"
    );

    let (code, out, _) = cli(args(&["dlq", "show", &ids[0]]), ADMIN_TOKEN).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("rejected") && out.contains("\"cli\""), "{out}");

    let (code, out, _) = cli(args(&["routes"]), ADMIN_TOKEN).await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains("payments-route") && out.contains("Payments"),
        "{out}"
    );
    // The gateway's health verdict, the one the dashboard shows too.
    let row = |route: &str| {
        out.lines()
            .find(|l| l.contains(route))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        row("devex-route").contains("failing: 2 dead letters"),
        "{out}"
    );
    assert!(row("payments-route").contains(" ok "), "{out}");
    // Above the table: the Redis nodes the gateway uses.
    let first = out.lines().next().unwrap_or_default();
    match s.redis.single() {
        Some(redis) => assert_eq!(
            first,
            format!(
                "redis (single): 127.0.0.1:{} serves 1 partition",
                redis.port()
            ),
            "{out}"
        ),
        None => assert!(
            first.starts_with("redis (cluster): ") && first.matches(" serves ").count() == 3,
            "three masters named: {out}"
        ),
    }

    let (code, _, err) = cli(args(&["dlq", "replay", &ids[0]]), ADMIN_TOKEN).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = cli(args(&["dlq", "delete", &ids[1]]), ADMIN_TOKEN).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        s.receiver.wait_for(3, Duration::from_secs(5)).await.len(),
        3,
        "the replay arrived"
    );
    assert!(all_dead_letters(&s, "").await.is_empty());

    let (code, _, err) = cli(args(&["dlq", "list"]), "wrong-token").await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("401") && err.contains("SWITCHYARD_ADMIN_TOKEN"),
        "{err}"
    );
    let (code, _, err) = cli(
        args(&["dlq", "list", "--admin", "http://127.0.0.1:9"]),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot reach the admin API"), "{err}");
}

#[tokio::test]
async fn the_backlog_is_measured_and_expires_only_when_retention_says_so() {
    let s = setup_with(1, |toml| {
        toml.raw("[dead_letters]\nretention = \"3s\"\nwarn_above = 1\n")
    })
    .await;
    s.receiver.otherwise(Reply::status(400));
    s.send("devex", "old-1", b"{}").await;
    s.send("devex", "old-2", b"{}").await;
    assert_eq!(wait_dead_letters(&s, "", 2).await.len(), 2);
    let metrics_url = s.gateway.admin_url("/metrics");
    assert!(
        eventually(Duration::from_secs(5), || async {
            reqwest::get(&metrics_url)
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text")
                .contains("switchyard_dead_letters_stored 2")
        })
        .await,
        "the stored count is a metric"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            all_dead_letters(&s, "").await.is_empty()
        })
        .await,
        "expired after the retention"
    );
    let (_, audit) = s.admin(Method::GET, "/admin/audit", None).await;
    let expired: Vec<&Value> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == "expire" && e["token"] == "retention")
        .collect();
    assert_eq!(expired.len(), 2, "every expiry is audited: {audit}");
}

/// An owner's `https` alert endpoint whose certificate an authority named in
/// `delivery.tls_ca_file` issued gets its alert: the file applies to owner
/// alerts as to deliveries.
#[tokio::test]
async fn owner_alerts_trust_the_configured_authority() {
    let endpoint = TrustedTls::start().await;
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::status(400));
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("corp-ca.pem");
    std::fs::write(&ca_file, endpoint.ca_pem()).expect("write CA file");
    let extra = config(&receiver, &endpoint.url("/alerts"), 1)
        .tls_ca_file(&ca_file)
        .build();
    let gateway = TestGateway::start_toml(&redis.url(), &extra).await;
    let (status, answer) = github::post(
        &reqwest::Client::new(),
        &gateway.public_url("/hooks/github"),
        SECRET,
        "payments",
        "d-alert-tls",
        b"{}",
    )
    .await;
    assert_eq!(status, 202, "{answer}");

    let alerted = eventually(Duration::from_secs(10), || async {
        !endpoint.received().is_empty()
    })
    .await;
    assert!(alerted, "no alert reached the https endpoint");
    let (_, body) = &endpoint.received()[0];
    let alert: Value = serde_json::from_slice(body).expect("json alert");
    assert_eq!(alert["route"], "payments-route");
}

#[tokio::test]
async fn every_admin_error_is_the_json_body_with_a_specific_status() {
    let s = setup(1).await;
    let json = |content_type: &str, body: &str| (content_type.to_owned(), body.to_owned());
    let oversized = format!("{{\"route\": \"{}\"}}", "x".repeat(3 << 20));
    let cases = [
        (
            "GET",
            "/admin/dead-letters?limit=abc",
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            "/admin/dead-letters?limit=0",
            None,
            400,
            "bad_request",
        ),
        ("GET", "/admin/audit?limit=0", None, 400, "bad_request"),
        (
            "GET",
            "/admin/dead-letters?colour=red",
            None,
            400,
            "bad_request",
        ),
        ("GET", "/admin/dead-letters/%ff", None, 400, "bad_request"),
        ("GET", "/admin/nonexistent", None, 404, "not_found"),
        ("GET", "/nonexistent", None, 404, "not_found"),
        (
            "GET",
            "/admin/dead-letters/replay",
            None,
            405,
            "method_not_allowed",
        ),
        ("PUT", "/admin/routes", None, 405, "method_not_allowed"),
        ("POST", "/healthz", None, 405, "method_not_allowed"),
        (
            "POST",
            "/admin/dead-letters/replay",
            Some(json("text/plain", "{}")),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/admin/dead-letters/replay",
            Some(json("application/json", "{not json")),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/admin/dead-letters/replay",
            Some(json("application/json", r#"{"route": 7}"#)),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/admin/dead-letters/replay",
            Some(json("application/json", &oversized)),
            413,
            "body_too_large",
        ),
    ];
    // Every case is checked before failing, so one run shows every wrong answer.
    let mut wrong = Vec::new();
    for (method, path, body, status, code) in cases {
        let method: http::Method = method.parse().expect("method");
        let mut request = s
            .client
            .request(method.clone(), s.gateway.admin_url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some((content_type, body)) = body {
            request = request.header("Content-Type", content_type).body(body);
        }
        let response = request.send().await.expect("admin answers");
        let got_status = response.status().as_u16();
        let allow = response.headers().get("allow").cloned();
        let content_type = response.headers().get("content-type").cloned();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let right = got_status == status
            && content_type.is_some_and(|v| v == "application/json")
            && answer["error"] == code
            && answer["message"].as_str().is_some_and(|m| !m.is_empty())
            && (status != 405 || allow.is_some());
        if !right {
            wrong.push(format!("{method} {path}: {got_status} {answer}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
