//! Deliveries through the egress proxy the environment names: plain `http`
//! relayed in absolute form with the proxy's credentials, `https` through a
//! `CONNECT` tunnel, and `NO_PROXY` hosts reached directly.

use std::time::Duration;

use base64::Engine as _;
use http::Method;

use crate::delivery::{SECRET, config, route};
use crate::support::eventually;
use crate::support::gateway::{GatewayProcess, ProcessOptions};
use crate::support::github;
use crate::support::proxy::ForwardProxy;
use crate::support::receiver::Receiver;
use crate::support::redis::RedisServer;
use crate::support::tls::UntrustedTls;

/// The proxy URL with `egress:s3cret` as its credentials.
fn with_credentials(proxy: &ForwardProxy) -> String {
    proxy.url().replace("http://", "http://egress:s3cret@")
}

fn basic(credentials: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

/// A gateway process on `redis` with one route to `url`.
async fn gateway_to(redis: &RedisServer, url: &str, options: ProcessOptions) -> GatewayProcess {
    let routes = config([route(0, url)]).build();
    GatewayProcess::start_with(&redis.url(), &routes, options).await
}

async fn send(gateway: &GatewayProcess, delivery: &str) {
    let url = gateway.public_url("/hooks/github");
    let (status, answer) = github::post(
        &reqwest::Client::new(),
        &url,
        SECRET,
        "push",
        delivery,
        br#"{"via":"proxy"}"#,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test]
async fn http_deliveries_go_through_the_proxy_with_its_credentials() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let proxy = ForwardProxy::start().await;
    let options = ProcessOptions::default().env("HTTP_PROXY", &with_credentials(&proxy));
    let gateway = gateway_to(&redis, &receiver.url("/r0"), options).await;

    send(&gateway, "d-proxied").await;
    let delivered = receiver.wait_for(1, Duration::from_secs(10)).await;

    assert_eq!(delivered[0].body.as_ref(), br#"{"via":"proxy"}"#);
    let asked = proxy.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].method, Method::POST);
    assert_eq!(
        asked[0].target,
        receiver.url("/r0"),
        "absolute form, naming the destination"
    );
    assert_eq!(
        asked[0].authorization.as_deref(),
        Some(basic("egress:s3cret").as_str())
    );
    let log = gateway.log();
    assert!(
        log.contains("deliveries go through a proxy") && log.contains(&proxy.url()),
        "the proxy in use is logged at start:\n{log}"
    );
    for secret in ["s3cret", basic("egress:s3cret").as_str()] {
        assert!(!log.contains(secret), "proxy credentials reached the log");
    }
}

/// A proxy refusing the gateway's credentials (407) is a failure of ours to
/// retry, not the destination's rejection to dead-letter at once.
#[tokio::test]
async fn a_proxy_refusing_the_credentials_is_retried() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let proxy = ForwardProxy::requiring(&basic("egress:rotated")).await;
    let options = ProcessOptions::default().env("HTTP_PROXY", &with_credentials(&proxy));
    let gateway = gateway_to(&redis, &receiver.url("/r0"), options).await;

    send(&gateway, "d-refused").await;
    let retried = eventually(Duration::from_secs(10), || async {
        proxy.asked().len() >= 2
    })
    .await;

    assert!(
        retried,
        "asked {} time(s): {:?}",
        proxy.asked().len(),
        proxy.asked()
    );
    assert!(receiver.requests().is_empty());
    let logged = eventually(Duration::from_secs(5), || async {
        gateway.log().lines().any(|line| {
            line.contains(r#""outcome":"retryable""#) && line.contains(r#""status":407"#)
        })
    })
    .await;
    assert!(logged, "no retryable 407 logged:\n{}", gateway.log());
}

#[tokio::test]
async fn no_proxy_hosts_are_reached_directly() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let proxy = ForwardProxy::start().await;
    let options = ProcessOptions::default()
        .env("HTTP_PROXY", &with_credentials(&proxy))
        .env("NO_PROXY", "localhost,127.0.0.1");
    let gateway = gateway_to(&redis, &receiver.url("/r0"), options).await;

    send(&gateway, "d-direct").await;
    let delivered = receiver.wait_for(1, Duration::from_secs(10)).await;

    assert!(proxy.asked().is_empty(), "{:?}", proxy.asked());
    assert_eq!(
        delivered[0].header("proxy-authorization"),
        "",
        "the proxy's credentials go only to the proxy"
    );
}

#[tokio::test]
async fn https_deliveries_tunnel_through_the_proxy() {
    let redis = RedisServer::start();
    let destination = UntrustedTls::start().await;
    let proxy = ForwardProxy::start().await;
    let options = ProcessOptions::default().env("HTTPS_PROXY", &with_credentials(&proxy));
    let gateway = gateway_to(&redis, &destination.url("/r0"), options).await;

    send(&gateway, "d-tunnelled").await;
    let tunnelled = eventually(Duration::from_secs(10), || async {
        destination.connections() >= 1
    })
    .await;

    assert!(tunnelled, "the destination was never reached");
    let asked = proxy.asked();
    assert!(!asked.is_empty(), "the proxy was not asked for a tunnel");
    for tunnel in &asked {
        assert_eq!(tunnel.method, Method::CONNECT, "{asked:?}");
        assert_eq!(tunnel.target, destination.authority());
        assert_eq!(
            tunnel.authorization.as_deref(),
            Some(basic("egress:s3cret").as_str())
        );
    }
    // TLS ran end to end through the tunnel: the client checked the
    // destination's certificate (self-signed, so refused), sent nothing, and
    // the attempt's log line says why it failed.
    let logged = eventually(Duration::from_secs(10), || async {
        gateway.log().lines().any(|line| {
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|l| {
                l["message"] == "delivery attempt"
                    && l["outcome"] == "retryable"
                    && l["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("certificate"))
            })
        })
    })
    .await;
    assert!(
        logged,
        "no failed attempt naming the certificate; log:\n{}",
        gateway.log()
    );
    assert_eq!(destination.bytes_read(), 0);
}
