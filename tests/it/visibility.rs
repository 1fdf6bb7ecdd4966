//! What ops see: metrics and the inventory after a scripted mix, silence
//! detection, and request ids carried through to destinations.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::config::{ConfigBuilder, Owner, Route, Source};
use crate::support::env::TestEnv;
use crate::support::eventually;
use crate::support::github;
use crate::support::receiver::{Receiver, Reply};

const SECRET: &str = "visibility-secret";

/// Routes `ok`, `flaky`, `bad` (and `quiet`, expecting an event every 2 s),
/// chosen by the `X-GitHub-Event` header, each to its own receiver path.
fn config(receiver: &Receiver, alerts: &Receiver) -> String {
    let builder = ConfigBuilder::new()
        .retry(3, "100ms", "500ms")
        .owner(
            Owner::new("team", "Team", "team@example.com")
                .with("alert_url", &alerts.url("/alerts")),
        )
        .source(Source::github(SECRET));
    [
        ("ok", None),
        ("flaky", None),
        ("bad", None),
        ("quiet", Some(r#""2s""#)),
    ]
    .into_iter()
    .fold(builder, |builder, (name, expect_within)| {
        let route = Route::new(name, "github", "team", &receiver.url(&format!("/{name}")))
            .description(&format!("{name} route"))
            .on_failure(&format!("{name} breaks"))
            .when_github_event(name);
        builder.route(match expect_within {
            Some(within) => route.with("expect_within", within),
            None => route,
        })
    })
    .build()
}

/// The value of one sample line of the Prometheus text, 0 when absent.
fn sample(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start) && l[line_start.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn setup() -> TestEnv {
    TestEnv::start(SECRET, config).await
}

/// One route of the inventory.
async fn inventory_route(s: &TestEnv, name: &str) -> Value {
    let (status, inventory) = s.admin(http::Method::GET, "/admin/routes", None).await;
    assert_eq!(status, 200, "{inventory}");
    inventory["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .expect("route in the inventory")
}

#[tokio::test]
async fn metrics_and_inventory_read_exactly_what_happened() {
    let s = setup().await;
    let (receiver, gateway) = (&s.receiver, &s.gateway);
    let client = reqwest::Client::new();
    let url = gateway.public_url("/hooks/github");
    receiver.then(Reply::status(503)); // the flaky route's first attempt
    let send = |event: &'static str, delivery: &'static str| {
        let (client, s) = (client.clone(), &s);
        async move { s.post_as(&client, event, delivery, b"{}").await }
    };
    assert_eq!(send("flaky", "m-flaky").await.0, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (event, delivery) in [
        ("ok", "m-ok-1"),
        ("ok", "m-ok-2"),
        ("bad", "m-bad"),
        ("none", "m-none"),
    ] {
        if event == "bad" {
            receiver.then(Reply::status(400));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(send(event, delivery).await.0, 202);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(send("ok", "m-ok-1").await.0, 200, "duplicate");
    let forged = client
        .post(&url)
        .header("X-Hub-Signature-256", github::signature("other", b"{}"))
        .body("{}")
        .send()
        .await
        .expect("answer");
    assert_eq!(forged.status(), 401);

    // 2 ok + 2 flaky attempts + 1 bad.
    assert_eq!(receiver.wait_for(5, Duration::from_secs(10)).await.len(), 5);
    let metrics_url = gateway.admin_url("/metrics");
    let mut metrics = String::new();
    let mut settled = false;
    for _ in 0..50 {
        metrics = reqwest::get(&metrics_url)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let dead = r#"switchyard_dead_letters_total{route="bad",owner="team",reason="rejected"}"#;
        let flaky = r#"switchyard_delivery_attempts_total{route="flaky",outcome="delivered"}"#;
        if sample(&metrics, dead) == 1.0 && sample(&metrics, flaky) == 1.0 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "{metrics}");
    let expect = [
        (
            r#"switchyard_ingest_requests_total{source="github",outcome="accepted"}"#,
            5.0,
        ),
        (
            r#"switchyard_ingest_requests_total{source="github",outcome="duplicate"}"#,
            1.0,
        ),
        (
            r#"switchyard_ingest_requests_total{source="github",outcome="invalid_signature"}"#,
            1.0,
        ),
        (r#"switchyard_jobs_enqueued_total{route="ok"}"#, 2.0),
        (r#"switchyard_jobs_enqueued_total{route="flaky"}"#, 1.0),
        (r#"switchyard_jobs_enqueued_total{route="bad"}"#, 1.0),
        (r#"switchyard_unrouted_events_total{source="github"}"#, 1.0),
        (
            r#"switchyard_delivery_attempts_total{route="ok",outcome="delivered"}"#,
            2.0,
        ),
        (
            r#"switchyard_delivery_attempts_total{route="flaky",outcome="retryable"}"#,
            1.0,
        ),
        (
            r#"switchyard_delivery_attempts_total{route="flaky",outcome="delivered"}"#,
            1.0,
        ),
        (
            r#"switchyard_delivery_attempts_total{route="bad",outcome="rejected"}"#,
            1.0,
        ),
        (
            r#"switchyard_delivery_attempt_duration_seconds_count{route="ok"}"#,
            2.0,
        ),
        (
            r#"switchyard_delivery_attempt_duration_seconds_count{route="flaky"}"#,
            2.0,
        ),
        (
            r#"switchyard_delivery_attempt_duration_seconds_count{route="bad"}"#,
            1.0,
        ),
        (
            r#"switchyard_end_to_end_duration_seconds_count{route="ok"}"#,
            2.0,
        ),
        (
            r#"switchyard_end_to_end_duration_seconds_count{route="flaky"}"#,
            1.0,
        ),
        (
            r#"switchyard_end_to_end_duration_seconds_count{route="bad"}"#,
            0.0,
        ),
    ];
    for (line, value) in expect {
        assert_eq!(sample(&metrics, line), value, "{line}\n{metrics}");
    }

    let (ok, flaky, bad) = (
        inventory_route(&s, "ok").await,
        inventory_route(&s, "flaky").await,
        inventory_route(&s, "bad").await,
    );
    assert_eq!(
        (
            ok["received"].as_u64(),
            ok["delivered"].as_u64(),
            ok["dead_letters"].as_u64()
        ),
        (Some(2), Some(2), Some(0))
    );
    assert_eq!(
        (
            flaky["received"].as_u64(),
            flaky["delivered"].as_u64(),
            flaky["retrying"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    assert_eq!(
        (
            bad["received"].as_u64(),
            bad["delivered"].as_u64(),
            bad["dead_letters"].as_u64()
        ),
        (Some(1), Some(0), Some(1))
    );
    assert!(ok["last_success_at"].is_string() && ok["last_failure_at"].is_null());
    assert!(flaky["last_failure_at"].is_string() && bad["last_failure_at"].is_string());
    assert_eq!(ok["owner"]["team"], "Team");
    assert_eq!(ok["breaker"], "closed");
    assert_eq!(ok["health"], json!({"status": "ok", "reasons": []}));
    assert_eq!(flaky["health"]["status"], "ok", "retried, then delivered");
    assert_eq!(
        bad["health"],
        json!({"status": "failing", "reasons": ["1 dead letter"]})
    );
}

#[tokio::test]
async fn a_route_that_goes_quiet_is_reported_once_and_again_when_it_resumes() {
    let s = setup().await;
    let (alerts, gateway) = (&s.alerts, &s.gateway);
    let client = reqwest::Client::new();
    let inventory = || inventory_route(&s, "quiet");
    assert!(
        eventually(Duration::from_secs(8), || async {
            inventory().await["silent"] == true
        })
        .await,
        "silent after 2 s without events"
    );
    assert_eq!(
        inventory().await["health"],
        json!({"status": "warning", "reasons": ["silent: no event within 2s"]})
    );
    let told = alerts.wait_for(1, Duration::from_secs(3)).await;
    let alert: Value = serde_json::from_slice(&told[0].body).expect("json alert");
    assert_eq!(alert["type"], "silent");
    assert_eq!(alert["route"], "quiet");
    let metrics = gateway.metrics().await;
    assert_eq!(
        sample(&metrics, r#"switchyard_route_silent{route="quiet"}"#),
        1.0
    );

    assert_eq!(s.post_as(&client, "quiet", "q-1", b"{}").await.0, 202);
    assert!(
        eventually(Duration::from_secs(5), || async {
            inventory().await["silent"] == false
        })
        .await,
        "resumed"
    );
    let told = alerts.wait_for(2, Duration::from_secs(3)).await;
    assert_eq!(told.len(), 2, "one alert when silent, one when resumed");
    let resumed: Value = serde_json::from_slice(&told[1].body).expect("json alert");
    assert_eq!(resumed["type"], "resumed");
}

#[tokio::test]
async fn request_ids_reach_the_destination_and_come_back_to_the_sender() {
    let s = setup().await;
    let (receiver, gateway) = (&s.receiver, &s.gateway);
    let body = b"{}";
    let response = reqwest::Client::new()
        .post(gateway.public_url("/hooks/github"))
        .header("X-Hub-Signature-256", github::signature(SECRET, body))
        .header("X-GitHub-Event", "ok")
        .header("X-Request-Id", "req-from-sender-42")
        .body(body.to_vec())
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.headers()["x-request-id"],
        "req-from-sender-42",
        "echoed"
    );
    let delivered = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(delivered[0].headers["x-request-id"], "req-from-sender-42");

    let (status, _) = s.post_as(&s.client, "ok", "r-2", body).await;
    assert_eq!(status, 202);
    let delivered = receiver.wait_for(2, Duration::from_secs(5)).await;
    let generated = delivered[1].headers["x-request-id"].to_str().expect("id");
    assert_eq!(generated.len(), 36, "a UUID was assigned: {generated}");
}
