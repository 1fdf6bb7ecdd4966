//! The queue on more than one Redis key slot and more than one Redis:
//! partitions (and changing their number on live data), and acks confirmed
//! by replicas (`redis.ack_replicas`).

use std::time::Duration;

use http::Method;
use serde_json::Value;

use crate::support::config::{ConfigBuilder, Owner, Route, Source};
use crate::support::eventually;
use crate::support::gateway::{TestGateway, config_toml, parse_config};
use crate::support::receiver::{Receiver, Reply};
use crate::support::redis::RedisServer;

const SECRET: &str = "redis-modes-secret";

/// One route (`devex-route`) of every GitHub event to `receiver`.
fn one_route(receiver: &Receiver, max_attempts: u32) -> String {
    ConfigBuilder::new()
        .retry(max_attempts, "100ms", "200ms")
        .breaker(100_000, None)
        .owner(Owner::devex())
        .source(Source::github(SECRET))
        .route(
            Route::new("devex-route", "github", "devex", &receiver.url("/events"))
                .destination("timeout", r#""2s""#),
        )
        .build()
}

async fn post(gateway: &TestGateway, delivery: &str, body: &str) -> (u16, Value) {
    gateway.post_github(SECRET, "push", delivery, body).await
}

/// The port of a `redis://127.0.0.1:<port>/0` URL.
fn port_of(url: &str) -> String {
    url.trim_start_matches("redis://127.0.0.1:")
        .trim_end_matches("/0")
        .to_owned()
}

/// Waits until the replica behind `replica` has synced with its primary.
async fn wait_synced(replica: &redis::aio::MultiplexedConnection) {
    let synced = eventually(Duration::from_secs(10), || {
        let mut conn = replica.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            info.contains("master_link_status:up")
        }
    })
    .await;
    assert!(synced, "the replica did not sync");
}

#[tokio::test]
async fn with_ack_replicas_an_event_is_acked_only_once_a_replica_has_it() {
    let primary = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut config = parse_config(&config_toml(&primary.url(), &one_route(&receiver, 3)));
    config.redis.ack_replicas = 1;
    config.redis.ack_replicas_timeout = Duration::from_millis(200);
    let gateway = TestGateway::start(config).await;

    // No replica: the write stands on the primary alone, so no 2xx.
    let (status, answer) = post(&gateway, "d-1", r#"{"n":1}"#).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "queue_unavailable", "{answer}");

    let replica = RedisServer::start_with(&[
        "--replicaof",
        "127.0.0.1",
        &port_of(&primary.url()),
        "--appendonly",
        "yes",
    ]);
    let mut replica_conn = replica.connection().await;
    wait_synced(&replica_conn).await;

    // The refused write did land: the sender's retry is a duplicate, and
    // the event is delivered once.
    let (status, answer) = post(&gateway, "d-1", r#"{"n":1}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], true, "{answer}");
    let (status, answer) = post(&gateway, "d-2", r#"{"n":2}"#).await;
    assert_eq!(status, 202, "{answer}");
    let seen = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(seen.len(), 2);

    // What was acked is on the replica.
    let received: Option<String> = redis::cmd("HGET")
        .arg("{switchyard}:stats:received")
        .arg("devex-route")
        .query_async(&mut replica_conn)
        .await
        .expect("HGET on the replica");
    assert_eq!(received.as_deref(), Some("2"));
}

#[tokio::test]
async fn changing_the_partition_count_loses_no_queued_job_and_no_dead_letter() {
    let _turn = crate::support::HEAVY_TURN.lock().await;
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let toml = config_toml(&redis.url(), &one_route(&receiver, 2));

    // Eight partitions: the destination refuses everything, so events wait
    // for their retry, then become dead letters, spread over partitions.
    receiver.otherwise(Reply::status(503));
    let mut config = parse_config(&toml);
    config.redis.partitions = 8;
    let first = TestGateway::start(config).await;
    for n in 0..24 {
        let (status, answer) = post(&first, &format!("dead-{n}"), &format!(r#"{{"n":{n}}}"#)).await;
        assert_eq!(status, 202, "{answer}");
    }
    let all_dead = eventually(Duration::from_secs(20), || async {
        let (_, page) = first
            .admin(Method::GET, "/admin/dead-letters?limit=100", None)
            .await;
        page["items"].as_array().map_or(0, Vec::len) == 24
    })
    .await;
    assert!(all_dead, "24 dead letters expected");
    // And some still queued when the layout changes: stop before the retry.
    let mut conn = redis.connection().await;
    for n in 0..24 {
        let (status, _) = post(&first, &format!("live-{n}"), &format!(r#"{{"live":{n}}}"#)).await;
        assert_eq!(status, 202);
    }
    first.stop().await.expect("clean stop");
    let tags: Vec<String> = redis::cmd("SMEMBERS")
        .arg("{switchyard}:partitions")
        .query_async(&mut conn)
        .await
        .expect("SMEMBERS");
    assert_eq!(tags.len(), 7, "partitions 1..7 are registered: {tags:?}");
    let mut used = 0;
    for tag in &tags {
        let dead: u64 = redis::cmd("ZCARD")
            .arg(format!("{{{tag}}}:dead"))
            .query_async(&mut conn)
            .await
            .expect("ZCARD");
        used += usize::from(dead > 0);
    }
    assert!(used >= 3, "dead letters should spread over partitions");

    // One partition now: the old partitions are still read.
    receiver.otherwise(Reply::ok());
    let second = TestGateway::start(parse_config(&toml)).await;
    let (status, page) = second
        .admin(Method::GET, "/admin/dead-letters?limit=10", None)
        .await;
    assert_eq!(status, 200);
    let first_page: Vec<&Value> = page["items"].as_array().expect("items").iter().collect();
    assert_eq!(first_page.len(), 10);
    // RFC 3339 with milliseconds: text order is time order.
    let times: Vec<&str> = first_page
        .iter()
        .map(|d| d["failed_at"].as_str().unwrap_or_default())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first across partitions: {times:?}"
    );
    let (status, answer) = second
        .bulk_replay(serde_json::json!({"route": "devex-route"}))
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["replayed"], 24, "{answer}");
    let delivered = eventually(Duration::from_secs(20), || async {
        let bodies: std::collections::HashSet<Vec<u8>> = receiver
            .accepted()
            .into_iter()
            .map(|r| r.body.to_vec())
            .collect();
        bodies.len() == 48
    })
    .await;
    assert!(
        delivered,
        "every live and replayed job delivered, got {}",
        receiver.accepted().len()
    );
    let (_, page) = second
        .admin(Method::GET, "/admin/dead-letters?limit=100", None)
        .await;
    assert_eq!(page["items"].as_array().map_or(99, Vec::len), 0);
    second.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_dead_letter_its_replicas_do_not_confirm_still_alerts_its_owner() {
    let primary = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port_of(&primary.url())]);
    let mut replica_conn = replica.connection().await;
    wait_synced(&replica_conn).await;
    let receiver = Receiver::start().await;
    let alerts = Receiver::start().await;
    // The destination refuses, late enough for the replica to be detached
    // between the ack and the dead letter.
    receiver.otherwise(Reply::status(400).delay(Duration::from_millis(800)));
    let routes = ConfigBuilder::new()
        .retry(1, "100ms", "200ms")
        .breaker(100_000, None)
        .owner(Owner::devex().with("alert_url", &alerts.url("/alerts")))
        .source(Source::github(SECRET))
        .route(
            Route::new("devex-route", "github", "devex", &receiver.url("/events"))
                .destination("timeout", r#""2s""#),
        )
        .build();
    let mut config = parse_config(&config_toml(&primary.url(), &routes));
    config.redis.ack_replicas = 1;
    config.redis.ack_replicas_timeout = Duration::from_millis(200);
    let gateway = TestGateway::start(config).await;

    let (status, answer) = post(&gateway, "d-1", r#"{"n":1}"#).await;
    assert_eq!(status, 202, "{answer}");
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut replica_conn)
        .await
        .expect("detach the replica");

    // The dead letter stands on the primary, unconfirmed, and its owner is
    // alerted all the same.
    let alerted = alerts.wait_for(1, Duration::from_secs(10)).await;
    assert!(
        gateway
            .metrics()
            .await
            .contains(r#"switchyard_redis_errors_total{operation="dead_letter"} 1"#),
        "the dead letter's write went unconfirmed"
    );
    assert_eq!(alerted.len(), 1, "one owner alert");
    let alert: Value = serde_json::from_slice(&alerted[0].body).expect("json alert");
    assert_eq!(alert["route"], "devex-route", "{alert}");
    let (status, page) = gateway
        .admin(Method::GET, "/admin/dead-letters?route=devex-route", None)
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    gateway.stop().await.expect("clean stop");
}
