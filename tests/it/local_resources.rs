//! A gateway out of its own file descriptors: deliveries are put back
//! without spending an attempt (a healthy destination's job must not be
//! dead-lettered for our shortage), and the failing accepts are logged at a
//! bounded rate.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::support::config::{ConfigBuilder, Owner, Route, Source};
use crate::support::gateway::{GatewayProcess, ProcessOptions};
use crate::support::github;
use crate::support::receiver::{Receiver, Reply};
use crate::support::redis::RedisServer;

const SECRET: &str = "local-resources-secret";
/// Low enough to run out of with a few hundred idle connections, high
/// enough to start (listeners, Redis, the runtime).
const HARD_OPEN_FILES: u64 = 128;
/// More idle connections than the gateway has file descriptors.
const IDLE_CONNECTIONS: usize = 200;

fn extra(receiver: &Receiver) -> String {
    ConfigBuilder::new()
        .retry(2, "3s", "3s")
        .owner(Owner::devex())
        .source(Source::github(SECRET))
        .route(
            Route::new("healthy", "github", "devex", &receiver.url("/healthy"))
                .description("a destination that works")
                .destination("timeout", r#""2s""#),
        )
        .build()
}

fn count(log: &str, message: &str) -> usize {
    log.lines().filter(|line| line.contains(message)).count()
}

#[tokio::test]
async fn out_of_file_descriptors_defers_deliveries_without_spending_attempts() {
    let _turn = crate::support::HEAVY_TURN.lock().await;
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    // The first attempt fails on the destination's side (its only failure),
    // spending one of the two attempts; a new connection is then needed.
    receiver.then(Reply::close());
    receiver.otherwise(Reply::ok());
    let gateway = GatewayProcess::start_with(
        &redis.url(),
        &extra(&receiver),
        ProcessOptions::default().hard_open_files(HARD_OPEN_FILES),
    )
    .await;
    let client = reqwest::Client::new();
    let (status, body) = github::post(
        &client,
        &gateway.public_url("/hooks/github"),
        SECRET,
        "push",
        "short-of-files",
        br#"{"ref":"main"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    receiver.wait_for(1, Duration::from_secs(10)).await;

    // Take every descriptor the gateway has left (idle connections keep
    // theirs until the header deadline, 10 s by default).
    let mut idle = Vec::new();
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(TcpStream::connect(gateway.public).await.expect("connect"));
    }
    gateway
        .expect_log(
            "accept failed",
            Duration::from_secs(10),
            "the gateway ran out of descriptors",
        )
        .await;
    // The retry comes due while it is out of them.
    gateway
        .expect_log(
            "short of its own resources",
            Duration::from_secs(15),
            "the failed connect is ours, not the destination's",
        )
        .await;
    // Accept keeps failing every 50 ms meanwhile; the log says so rarely.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = gateway.log();
    assert!(
        count(&log, "accept failed") <= 2,
        "accept failures flood the log:\n{log}"
    );
    assert!(count(&log, "short of its own resources") <= 2, "{log}");
    assert_eq!(count(&log, "\"dead letter\""), 0, "{log}");

    drop(idle);
    let delivered = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(delivered.len(), 2, "delivered once descriptors are free");
    assert_eq!(
        delivered[1].header("x-switchyard-attempt"),
        "2",
        "the deferrals spent no attempt"
    );
    let mut conn = redis.connection().await;
    let dead: u64 = ::redis::cmd("ZCARD")
        .arg("{switchyard}:dead")
        .query_async(&mut conn)
        .await
        .expect("ZCARD");
    assert_eq!(dead, 0, "nothing dead-lettered for our own shortage");
    let metrics = gateway.metrics().await;
    for needed in [
        r#"switchyard_deliveries_deferred_total{route="healthy",outcome="local_resources"}"#,
        r#"switchyard_accept_failures_total{listener="public"}"#,
    ] {
        assert!(metrics.contains(needed), "{needed} missing:\n{metrics}");
    }
}
