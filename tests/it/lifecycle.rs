//! The real binary: signals end it cleanly.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::gateway::GatewayProcess;
use crate::support::redis::RedisServer;

/// `config_toml` sets shutdown_timeout = "5s"; exiting must not take longer.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

async fn exits_cleanly_on(signal: Signal) {
    let redis = RedisServer::start();
    let mut gateway = GatewayProcess::start(&redis.url(), "").await;
    // An idle keep-alive connection must not hold shutdown up.
    let client = reqwest::Client::new();
    let probe = client
        .get(format!("http://{}/healthz", gateway.admin))
        .send()
        .await
        .expect("probe");
    assert_eq!(probe.status(), 200);
    let public = client
        .post(format!("http://{}/hooks/none", gateway.public))
        .send()
        .await
        .expect("public listener answers");
    assert_eq!(public.status(), 404);

    gateway.signal(signal);
    let status = gateway
        .wait_exit(SHUTDOWN_DEADLINE + Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no exit after {signal}; log:\n{}", gateway.log()));
    assert_eq!(status.code(), Some(0), "log:\n{}", gateway.log());
    let log = gateway.log();
    assert!(log.contains("shutdown requested"), "log:\n{log}");
    assert!(log.contains("switchyard stopped"), "log:\n{log}");
}

#[tokio::test]
async fn sigterm_exits_zero_within_the_deadline() {
    exits_cleanly_on(Signal::SIGTERM).await;
}

#[tokio::test]
async fn sigint_exits_zero_within_the_deadline() {
    exits_cleanly_on(Signal::SIGINT).await;
}

#[tokio::test]
async fn logs_are_json_lines_when_asked() {
    let redis = RedisServer::start();
    let mut gateway = GatewayProcess::start(&redis.url(), "").await;
    gateway.signal(Signal::SIGTERM);
    gateway.wait_exit(SHUTDOWN_DEADLINE);
    let log = gateway.log();
    assert!(!log.trim().is_empty());
    for line in log.lines() {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(parsed.get("level").is_some(), "{line}");
    }
    // The literal admin token of the test config never reaches the log.
    assert!(!log.contains("test-admin-token"), "secret leaked:\n{log}");
}
