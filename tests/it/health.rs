//! Probes: `/healthz` says the process is up, `/readyz` follows Redis.

use std::time::Duration;

use serde_json::json;

use crate::support::gateway::{TestGateway, config_toml, parse_config};
use crate::support::redis::RedisServer;
use crate::support::{eventually, free_port};

async fn status(url: &str) -> Option<u16> {
    reqwest::get(url).await.ok().map(|r| r.status().as_u16())
}

async fn becomes(url: &str, wanted: u16, within: Duration) -> bool {
    eventually(within, || async { status(url).await == Some(wanted) }).await
}

#[tokio::test]
async fn readyz_follows_redis_down_and_back_without_restart() {
    let mut redis = RedisServer::start();
    let gateway = TestGateway::start_toml(&redis.url(), "").await;
    let readyz = gateway.admin_url("/readyz");

    assert!(
        becomes(&readyz, 200, Duration::from_secs(5)).await,
        "ready with Redis up"
    );
    let node = format!("127.0.0.1:{}", redis.port());
    let body = json_of(&readyz).await;
    assert_eq!(
        body["redis"],
        json!({"mode": "single", "nodes": [
            {"node": node, "partitions": ["switchyard"], "answering": true}
        ]}),
        "{body}"
    );

    redis.stop();
    assert!(
        becomes(&readyz, 503, Duration::from_secs(5)).await,
        "503 with Redis stopped"
    );
    let body = json_of(&readyz).await;
    assert_eq!(body["error"], "redis_unavailable");
    assert_eq!(
        body["redis"]["nodes"][0]["node"], node,
        "names the node: {body}"
    );
    assert_eq!(body["redis"]["nodes"][0]["answering"], false, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains(&redis.url())),
        "message names the Redis URL: {body}"
    );
    assert_eq!(
        status(&gateway.admin_url("/healthz")).await,
        Some(200),
        "process still up"
    );

    redis.restart();
    assert!(
        becomes(&readyz, 200, Duration::from_secs(15)).await,
        "ready again once Redis returns, without a gateway restart"
    );
    gateway.stop().await.expect("clean stop");
}

#[tokio::test]
async fn gateway_starts_while_redis_is_down_and_connects_when_it_comes() {
    // Nothing listens on this port yet.
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let gateway = TestGateway::start_toml(&url, "").await;

    assert_eq!(status(&gateway.admin_url("/healthz")).await, Some(200));
    assert_eq!(status(&gateway.admin_url("/readyz")).await, Some(503));

    let _redis = RedisServer::start_on(port);
    assert!(
        becomes(&gateway.admin_url("/readyz"), 200, Duration::from_secs(15)).await,
        "connects once Redis is there"
    );
}

#[tokio::test]
async fn readyz_answers_within_its_bound_when_redis_hangs() {
    // A listener that accepts but never answers: a black-holed Redis.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("redis://{}/0", silent.local_addr().expect("addr"));
    let gateway = TestGateway::start_toml(&url, "").await;
    let started = std::time::Instant::now();
    assert_eq!(status(&gateway.admin_url("/readyz")).await, Some(503));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "readyz must not hang with Redis: took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unknown_path_on_public_listener_is_a_json_404() {
    let redis = RedisServer::start();
    let gateway = TestGateway::start_toml(&redis.url(), "").await;
    let response = reqwest::Client::new()
        .post(gateway.public_url("/hooks/nobody"))
        .body("{}")
        .send()
        .await
        .expect("public listener answers");
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.expect("json body");
    assert_eq!(body["error"], "unknown_source");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("/hooks/nobody"))
    );
}

#[tokio::test]
async fn persistence_settings_are_read_from_redis() {
    let durable = RedisServer::start();
    let volatile = RedisServer::start_with(&["--appendonly", "no"]);
    for (redis, expect_none) in [(&durable, false), (&volatile, true)] {
        let config = parse_config(&config_toml(&redis.url(), ""));
        let queue = switchyard::queue::Queue::connect_lazy(&config.redis).expect("client");
        let report = queue.report().await.expect("INFO works");
        let persistence = report.persistence.expect("CONFIG GET works");
        assert_eq!(persistence.is_none(), expect_none, "{persistence:?}");
    }
}

async fn json_of(url: &str) -> serde_json::Value {
    reqwest::get(url)
        .await
        .expect("answers")
        .json()
        .await
        .expect("a JSON body")
}
