//! Redis settings that decide whether an ack keeps its promise: an eviction
//! policy that may delete queued jobs is refused at start and, should Redis
//! change under a running gateway, stops acks until it is fixed; persistence
//! and policy are re-read after Redis restarts; Redis's own figures are
//! metrics.

use std::time::Duration;

use switchyard::queue::QueueError;
use switchyard::{Listeners, ServerError};
use tokio_util::sync::CancellationToken;

use crate::support::config::{ConfigBuilder, Owner, Route, Source};
use crate::support::eventually;
use crate::support::gateway::{GatewayProcess, TestGateway, config_toml, parse_config};
use crate::support::github;
use crate::support::redis::RedisServer;

const SECRET: &str = "redis-settings-secret";

fn routes() -> String {
    ConfigBuilder::new()
        .owner(Owner::devex())
        .source(Source::github(SECRET))
        .route(
            Route::new("to-nowhere", "github", "devex", "http://127.0.0.1:9/never")
                .description("a destination nobody answers; jobs stay queued"),
        )
        .build()
}

fn config(redis: &RedisServer, allow_eviction: bool) -> switchyard::config::Config {
    let toml = config_toml(&redis.url(), &routes()).replace(
        "[redis]\n",
        &format!("[redis]\nallow_eviction = {allow_eviction}\n"),
    );
    parse_config(&toml)
}

async fn post(url: &str, delivery: &str) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    github::post(&client, url, SECRET, "push", delivery, br#"{"ref":"main"}"#).await
}

async fn set_policy(redis: &RedisServer, policy: &str) {
    let mut conn = redis.connection().await;
    let _: () = ::redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg(policy)
        .query_async(&mut conn)
        .await
        .expect("CONFIG SET maxmemory-policy");
}

/// Jobs queued, in the stream or (their destination being down) the retry
/// schedule, read in one step so a job moving between them counts once.
async fn jobs(redis: &RedisServer) -> u64 {
    let mut conn = redis.connection().await;
    let (streamed, scheduled): (u64, u64) = ::redis::pipe()
        .atomic()
        .cmd("XLEN")
        .arg("{switchyard}:jobs")
        .cmd("ZCARD")
        .arg("{switchyard}:retry")
        .query_async(&mut conn)
        .await
        .expect("XLEN, ZCARD");
    streamed + scheduled
}

/// The value of an unlabelled metric, if exposed.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_redis_that_may_evict_any_key_is_refused_at_start() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let config = config(&redis, false);
    let listeners = Listeners::bind(&config).await.expect("bind");
    let run = switchyard::run(config, listeners, CancellationToken::new());
    let result = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the gateway refuses at once instead of serving");
    match result {
        Err(ServerError::Queue(QueueError::Evicting { policy, .. })) => {
            assert_eq!(policy, "allkeys-lru");
        }
        other => panic!("expected a refusal naming the policy, got {other:?}"),
    }
    let message = QueueError::Evicting {
        url: redis.url(),
        policy: "allkeys-lru".into(),
    }
    .to_string();
    for needed in ["allkeys-lru", "noeviction", "redis.allow_eviction", "acked"] {
        assert!(message.contains(needed), "{needed:?} missing: {message}");
    }
}

#[tokio::test]
async fn allow_eviction_runs_on_such_a_redis_and_says_so_in_metrics() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lfu"]);
    let gateway = TestGateway::start(config(&redis, true)).await;
    let (status, body) = post(&gateway.public_url("/hooks/github"), "allowed-1").await;
    assert_eq!(status, 202, "{body}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(&gateway.metrics().await, "switchyard_redis_evicts_jobs") == Some(1.0)
        })
        .await,
        "the risk stays visible: {}",
        gateway.metrics().await
    );
    gateway.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_policy_changed_under_a_running_gateway_stops_acks_until_it_is_fixed() {
    let redis = RedisServer::start();
    let gateway = TestGateway::start(config(&redis, false)).await;
    let hook = gateway.public_url("/hooks/github");
    let readyz = gateway.admin_url("/readyz");
    assert_eq!(post(&hook, "before").await.0, 202);

    set_policy(&redis, "allkeys-random").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            post(&hook, "while-evicting").await.0 == 503
        })
        .await,
        "no ack while Redis may evict the job"
    );
    let before = jobs(&redis).await;
    let (status, body) = post(&hook, "while-evicting-2").await;
    assert_eq!(status, 503);
    assert_eq!(jobs(&redis).await, before, "a refused event is not written");
    assert_eq!(body["error"], "queue_unavailable", "{body}");
    let ready = reqwest::get(&readyz).await.expect("readyz answers");
    assert_eq!(ready.status().as_u16(), 503);
    let ready: serde_json::Value = ready.json().await.expect("json");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("allkeys-random")),
        "readyz names the policy: {ready}"
    );
    assert_eq!(
        metric(&gateway.metrics().await, "switchyard_redis_evicts_jobs"),
        Some(1.0)
    );

    set_policy(&redis, "noeviction").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            post(&hook, "after-fix").await.0 == 202
        })
        .await,
        "acks resume once the policy is safe"
    );
    assert_eq!(
        reqwest::get(&readyz)
            .await
            .expect("readyz")
            .status()
            .as_u16(),
        200
    );
    gateway.stop().await.expect("clean stop");
}

#[tokio::test]
async fn settings_are_read_again_after_redis_restarts_and_figures_are_metrics() {
    let mut redis = RedisServer::start();
    let gateway = GatewayProcess::start(&redis.url(), &routes()).await;
    let hook = gateway.public_url("/hooks/github");
    gateway
        .expect_log(
            "redis persistence",
            Duration::from_secs(10),
            "persistence read at start",
        )
        .await;
    for i in 0..5 {
        assert_eq!(post(&hook, &format!("figures-{i}")).await.0, 202);
    }
    // Five dedupe records, the stream and the per-route figures at least.
    assert!(
        eventually(Duration::from_secs(10), || async {
            let metrics = gateway.metrics().await;
            metric(&metrics, "switchyard_redis_keys").is_some_and(|keys| keys >= 6.0)
                && metric(&metrics, "switchyard_redis_used_memory_bytes")
                    .is_some_and(|bytes| bytes > 100_000.0)
        })
        .await,
        "Redis's figures are exposed: {}",
        gateway.metrics().await
    );
    assert!(!gateway.log().contains("keeps nothing on disk"));

    // An operator restarts Redis with persistence off and a volatile policy.
    redis.restart_with(&["--appendonly", "no", "--maxmemory-policy", "volatile-lru"]);
    assert!(
        eventually(Duration::from_secs(15), || async {
            let log = gateway.log();
            log.contains("keeps nothing on disk") && log.contains("dedupe records go first")
        })
        .await,
        "both are noticed without a gateway restart:\n{}",
        gateway.log()
    );
    // A volatile policy risks duplicates, not loss: webhooks are still acked.
    assert_eq!(post(&hook, "volatile").await.0, 202);

    // And back to a policy that may evict any key: acks stop.
    redis.restart_with(&["--appendonly", "yes", "--maxmemory-policy", "allkeys-lru"]);
    gateway
        .expect_log(
            "refusing webhooks with 503",
            Duration::from_secs(15),
            "noticed after the restart",
        )
        .await;
    // Redis is up again (the line above came from a look at it), and refuses.
    let (status, body) = post(&hook, "evicting").await;
    assert_eq!(status, 503, "{body}");
}
