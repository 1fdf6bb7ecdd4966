//! The admin listener protects itself as the public one does: a bounded
//! number of connections and a deadline on every request's headers, so
//! clients of the admin port cannot take the file descriptors ingest needs;
//! and a probe that fails is not a log line each time.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::support::config::{ConfigBuilder, Source};
use crate::support::gateway::{GatewayProcess, TestGateway, config_toml, parse_config};
use crate::support::github;
use crate::support::redis::RedisServer;

const SECRET: &str = "admin-listener-secret";

fn source() -> String {
    ConfigBuilder::new().source(Source::github(SECRET)).build()
}

/// Reads until the server closes `stream`; `None` if it stays open `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut answered = Vec::new();
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answered.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| answered)
}

#[tokio::test]
async fn admin_connections_are_bounded_and_silent_ones_are_closed() {
    let redis = RedisServer::start();
    let mut config = parse_config(&config_toml(&redis.url(), &source()));
    config.server.admin_max_connections = 2;
    config.server.request_timeout = Duration::from_secs(2);
    let gateway = TestGateway::start(config).await;

    // Two clients take both places and say nothing.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(gateway.admin).await.expect("connect"));
    }
    // While they hold them, a third is not served...
    let client = reqwest::Client::new();
    let healthz = gateway.admin_url("/healthz");
    let waiting = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .get(&healthz)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!waiting.is_finished(), "served past admin_max_connections");
    // ...and ingest goes on meanwhile.
    let (status, body) = github::post(
        &client,
        &gateway.public_url("/hooks/github"),
        SECRET,
        "push",
        "during-admin-flood",
        b"{}",
    )
    .await;
    assert_eq!(status, 202, "{body}");

    // The silent ones are closed after the header deadline, unanswered...
    for stream in &mut silent {
        let answered = closed_within(stream, Duration::from_secs(5))
            .await
            .expect("closed within the header deadline, not left open");
        assert!(
            answered.is_empty(),
            "{}",
            String::from_utf8_lossy(&answered)
        );
    }
    // ...which lets the third in.
    let status = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once a place is free")
        .expect("task")
        .expect("answer");
    assert_eq!(status, 200);
    let metrics = gateway.metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("switchyard_admin_connection_limit_reached_total ")
                && !l.ends_with(" 0")
        ),
        "the limit is counted:\n{metrics}"
    );
    gateway.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_failing_readiness_probe_is_not_a_log_line_per_probe() {
    let mut redis = RedisServer::start();
    let gateway = GatewayProcess::start(&redis.url(), &source()).await;
    let readyz = format!("http://{}/readyz", gateway.admin);
    redis.stop();
    gateway
        .expect_log(
            "redis unreachable",
            Duration::from_secs(10),
            "the outage is logged once",
        )
        .await;
    for _ in 0..10 {
        let status = reqwest::get(&readyz).await.expect("readyz").status();
        assert_eq!(status.as_u16(), 503);
    }
    // Give a late line time to be written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = gateway.log();
    let error_lines: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(
        error_lines.len(),
        1,
        "only the change of state is an error line:\n{log}"
    );
    assert!(error_lines[0].contains("redis unreachable"), "{log}");
}
