//! One test environment: a private Redis (or Redis Cluster, see
//! [`super::test_redis`]), a gateway in-process on a config
//! that names a scriptable receiver (deliveries) and a second one (owner
//! alerts), and a client with helpers to send signed events and call the
//! admin API with the test token.

use serde_json::Value;

use switchyard::config::Config;

use super::gateway::{TestGateway, config_toml_on, parse_config};
use super::github;
use super::receiver::Receiver;
use super::test_redis::TestRedis;

/// The admin token `config_toml` configures.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A running gateway with its Redis and receivers; all stopped on drop.
pub struct TestEnv {
    /// The gateway's private Redis.
    pub redis: TestRedis,
    /// Where routes deliver.
    pub receiver: Receiver,
    /// Where owners are alerted.
    pub alerts: Receiver,
    /// The gateway.
    pub gateway: TestGateway,
    /// A plain client.
    pub client: reqwest::Client,
    github_secret: String,
}

impl TestEnv {
    /// Starts Redis and both receivers, then a gateway on the TOML that
    /// `extra(receiver, alerts)` writes; `github_secret` signs [`TestEnv::send`].
    pub async fn start(
        github_secret: &str,
        extra: impl FnOnce(&Receiver, &Receiver) -> String,
    ) -> Self {
        Self::start_changed(github_secret, extra, |_| {}).await
    }

    /// [`TestEnv::start`] with `change` made to the parsed config (settings
    /// the TOML of `config_toml` fixes, such as `server.max_body_bytes`).
    pub async fn start_changed(
        github_secret: &str,
        extra: impl FnOnce(&Receiver, &Receiver) -> String,
        change: impl FnOnce(&mut Config),
    ) -> Self {
        let redis = TestRedis::start();
        let receiver = Receiver::start().await;
        let alerts = Receiver::start().await;
        let mut config = parse_config(&config_toml_on(
            &redis.redis_block(),
            &extra(&receiver, &alerts),
        ));
        change(&mut config);
        let gateway = TestGateway::start(config).await;
        Self {
            redis,
            receiver,
            alerts,
            gateway,
            client: reqwest::Client::new(),
            github_secret: github_secret.to_owned(),
        }
    }

    /// Posts a signed GitHub-style event to `/hooks/github` with `client`;
    /// the status and JSON answer.
    pub async fn post_as(
        &self,
        client: &reqwest::Client,
        event: &str,
        delivery: &str,
        body: &[u8],
    ) -> (u16, Value) {
        let url = self.gateway.public_url("/hooks/github");
        github::post(client, &url, &self.github_secret, event, delivery, body).await
    }

    /// [`TestEnv::post_as`] that must be accepted; the event id.
    pub async fn send_as(
        &self,
        client: &reqwest::Client,
        event: &str,
        delivery: &str,
        body: &[u8],
    ) -> String {
        let (status, answer) = self.post_as(client, event, delivery, body).await;
        assert_eq!(status, 202, "{answer}");
        answer["id"].as_str().expect("event id").to_owned()
    }

    /// [`TestEnv::send_as`] with the plain client.
    pub async fn send(&self, event: &str, delivery: &str, body: &[u8]) -> String {
        self.send_as(&self.client, event, delivery, body).await
    }

    /// Calls the admin API with the test token; the status and JSON answer.
    pub async fn admin(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.gateway.admin(method, path, body).await
    }
}
