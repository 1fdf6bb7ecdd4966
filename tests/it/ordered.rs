//! Ordered delivery per key, on real gateway processes, a real Redis (and
//! Redis Cluster in the cluster pass) and a real receiver: on a route with
//! `ordered = true` the events of one ordering key arrive in the order they
//! were acked, one attempt at a time, while other keys go on; a key whose
//! head dead-letters moves on, or with `on_dead_letter = "block"` waits for
//! the dead letter's replay; events without a key go unordered, counted.

use std::collections::HashMap;
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use crate::support::config::{ConfigBuilder, Owner, Route, Source, quoted};
use crate::support::gateway::GatewayProcess;
use crate::support::github;
use crate::support::receiver::{Receiver, Recorded, Reply};
use crate::support::test_redis::TestRedis;
use crate::support::{HEAVY_TURN, counter, eventually};

const SECRET: &str = "ordered-test-secret";

/// A GitHub source whose events' ordering key is the body's `/key`, and one
/// ordered route to `receiver` with `extra` route keys.
fn config(receiver: &Receiver, extra: &[(&str, &str)]) -> String {
    let mut route = Route::new("ordered", "github", "sre", &receiver.url("/ordered"))
        .with("ordered", "true")
        .destination("timeout", &quoted("2s"));
    for (key, value) in extra {
        route = route.with(key, value);
    }
    ConfigBuilder::new()
        .delivery("visibility_timeout", &quoted("5s"))
        .retry(20, "50ms", "200ms")
        // Failing on purpose is not a destination's breakdown here.
        .breaker(1_000_000, None)
        .owner(Owner::sre())
        .source(Source::github(SECRET).with("ordering_key", r#"{ json_pointer = "/key" }"#))
        .route(route)
        .build()
}

/// The body of event `seq` of `key`.
fn body(key: &str, seq: usize) -> Vec<u8> {
    format!(r#"{{"key":"{key}","seq":{seq}}}"#).into_bytes()
}

/// A request's key and sequence number, from its body.
fn key_and_seq(request: &Recorded) -> (String, u64) {
    let body: Value = serde_json::from_slice(&request.body).expect("a JSON body");
    (
        body["key"].as_str().unwrap_or_default().to_owned(),
        body["seq"].as_u64().unwrap_or(u64::MAX),
    )
}

/// Sends `per_key` events for each of `keys`, each key's in sequence (so
/// its ack order is its sequence) and the keys concurrently, spread over
/// `urls`.
async fn send_in_sequence(urls: &[String], keys: &[String], per_key: usize) {
    let client = reqwest::Client::new();
    let senders = keys.iter().enumerate().map(|(k, key)| {
        let (client, url) = (client.clone(), urls[k % urls.len()].clone());
        async move {
            for seq in 0..per_key {
                let (status, answer) = github::post(
                    &client,
                    &url,
                    SECRET,
                    "push",
                    &format!("{key}-{seq}"),
                    &body(key, seq),
                )
                .await;
                assert_eq!(status, 202, "{answer}");
            }
        }
    });
    futures_util::future::join_all(senders).await;
}

/// Per key, its requests in arrival order.
fn by_key(requests: &[Recorded]) -> HashMap<String, Vec<&Recorded>> {
    let mut keys: HashMap<String, Vec<&Recorded>> = HashMap::new();
    for request in requests {
        keys.entry(key_and_seq(request).0)
            .or_default()
            .push(request);
    }
    for list in keys.values_mut() {
        list.sort_by_key(|r| r.at);
    }
    keys
}

/// Fails unless each key's first successful deliveries come in sequence and
/// no two attempts of a key overlapped at the receiver.
fn assert_in_order_one_at_a_time(requests: &[Recorded], keys: usize, per_key: usize) {
    let by_key = by_key(requests);
    assert_eq!(by_key.len(), keys, "every key delivered");
    for (key, attempts) in &by_key {
        for pair in attempts.windows(2) {
            let answered = pair[0].answered.map(|a| a.at);
            assert!(
                answered.is_some_and(|at| at <= pair[1].at),
                "two attempts of {key} overlapped: {:?} then {:?}",
                key_and_seq(pair[0]),
                key_and_seq(pair[1])
            );
        }
        let delivered: Vec<u64> = attempts
            .iter()
            .filter(|r| r.answered.is_some_and(|a| a.status.is_success()))
            .map(|r| key_and_seq(r).1)
            .collect();
        let expected: Vec<u64> = (0..per_key as u64).collect();
        assert_eq!(
            delivered, expected,
            "{key}: delivered out of order or not once each"
        );
    }
}

/// 40 keys × 10 events over two processes, the destination answering 503 to
/// every third attempt: each key's events arrive in ack order, never two of
/// a key at once, every event delivered once.
#[tokio::test]
async fn each_keys_events_arrive_in_ack_order_one_at_a_time_through_retries() {
    let _turn = HEAVY_TURN.lock().await;
    const KEYS: usize = 40;
    const PER_KEY: usize = 10;
    let redis = TestRedis::start();
    let receiver = Receiver::start().await;
    for _ in 0..(KEYS * PER_KEY) {
        receiver
            .then(Reply::ok().delay(Duration::from_millis(5)))
            .then(Reply::ok().delay(Duration::from_millis(5)))
            .then(Reply::status(503).delay(Duration::from_millis(5)));
    }
    let toml = config(&receiver, &[]);
    let a = GatewayProcess::start_on(&redis, &toml).await;
    let b = GatewayProcess::start_on(&redis, &toml).await;
    let keys: Vec<String> = (0..KEYS).map(|k| format!("customer-{k}")).collect();
    send_in_sequence(
        &[a.public_url("/hooks/github"), b.public_url("/hooks/github")],
        &keys,
        PER_KEY,
    )
    .await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            receiver.accepted().len() >= KEYS * PER_KEY
        })
        .await,
        "{} of {} delivered",
        receiver.accepted().len(),
        KEYS * PER_KEY
    );
    // Anything sent twice would arrive now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = receiver.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.answered.is_some_and(|a| a.status == 503)),
        "some attempts failed and were retried"
    );
    assert_in_order_one_at_a_time(&requests, KEYS, PER_KEY);
    let route = ordered_route(&a).await;
    assert_eq!(route["dead_letters"], 0, "{route}");
    // A key's state lives only while it has events.
    assert_eq!(route["keys"]["active"], 0, "{route}");
    assert_eq!(route["keys"]["waiting_jobs"], 0, "{route}");
}

/// The ordered route of the inventory.
async fn ordered_route(gateway: &GatewayProcess) -> Value {
    let (status, routes) = gateway.admin(Method::GET, "/admin/routes", None).await;
    assert_eq!(status, 200, "{routes}");
    routes["routes"][0].clone()
}

/// A key whose head event is refused dead-letters it and moves on: its
/// later events arrive in order; with `on_dead_letter = "block"` the key
/// waits (other keys go on) until the dead letter is replayed, which then
/// goes to the back of the key's line.
#[tokio::test]
async fn a_dead_letter_lets_its_key_move_on_or_blocks_it_until_replayed() {
    let _turn = HEAVY_TURN.lock().await;
    for block in [false, true] {
        let redis = TestRedis::start();
        let receiver = Receiver::start().await;
        // The first request (blocked-0) is refused; the rest succeed.
        receiver.then(Reply::status(400));
        let extra: &[(&str, &str)] = if block {
            &[("on_dead_letter", "\"block\"")]
        } else {
            &[]
        };
        let gateway = GatewayProcess::start_on(&redis, &config(&receiver, extra)).await;
        let url = [gateway.public_url("/hooks/github")];
        send_in_sequence(&url, &["blocked".to_owned()], 1).await;
        assert!(
            eventually(Duration::from_secs(10), || async {
                receiver.requests().len() == 1
            })
            .await
        );
        // Sent once its head is a dead letter: they queue behind it (block)
        // or go (continue); another key goes either way.
        let client = reqwest::Client::new();
        for seq in 1..4 {
            let (status, _) = github::post(
                &client,
                &url[0],
                SECRET,
                "push",
                &format!("blocked-{seq}"),
                &body("blocked", seq),
            )
            .await;
            assert_eq!(status, 202);
        }
        send_in_sequence(&url, &["other".to_owned()], 2).await;
        let arrived = |key: &str| -> Vec<u64> {
            receiver
                .requests()
                .iter()
                .map(key_and_seq)
                .filter(|(k, _)| k == key)
                .map(|(_, seq)| seq)
                .collect()
        };
        assert!(
            eventually(Duration::from_secs(10), || async {
                arrived("other") == [0, 1]
            })
            .await,
            "another key is not held up: {:?}",
            arrived("other")
        );
        if !block {
            assert!(
                eventually(Duration::from_secs(10), || async {
                    arrived("blocked") == [0, 1, 2, 3]
                })
                .await,
                "the key moved on past its dead letter: {:?}",
                arrived("blocked")
            );
            continue;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            arrived("blocked"),
            [0],
            "the blocked key waits for its dead letter"
        );
        let (_, list) = gateway
            .admin(Method::GET, "/admin/dead-letters?route=ordered", None)
            .await;
        let id = list["items"][0]["id"]
            .as_str()
            .expect("the dead letter")
            .to_owned();
        let route = ordered_route(&gateway).await;
        assert_eq!(
            route["keys"]["blocked"],
            json!([{"key": "blocked", "dead_letter": id}]),
            "the inventory names the blocked key and its dead letter: {route}"
        );
        assert_eq!(route["keys"]["waiting_jobs"], 3, "{route}");
        assert!(
            route["health"]["reasons"]
                .to_string()
                .contains("1 key blocked"),
            "{route}"
        );
        let (status, answer) = gateway
            .admin(
                Method::POST,
                &format!("/admin/dead-letters/{id}/replay"),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        assert!(
            eventually(Duration::from_secs(10), || async {
                arrived("blocked") == [0, 1, 2, 3, 0]
            })
            .await,
            "after the replay the key goes on in order, the replayed event last: {:?}",
            arrived("blocked")
        );
        assert!(
            eventually(Duration::from_secs(5), || async {
                ordered_route(&gateway).await["keys"]["active"] == 0
            })
            .await,
            "nothing left of the key: {}",
            ordered_route(&gateway).await
        );
    }
}

/// An event of an ordered route without an ordering key is still delivered
/// (unordered) and counted, never refused.
#[tokio::test]
async fn an_event_without_a_key_is_delivered_unordered_and_counted() {
    let redis = TestRedis::start();
    let receiver = Receiver::start().await;
    let gateway = GatewayProcess::start_on(&redis, &config(&receiver, &[])).await;
    let client = reqwest::Client::new();
    let (status, answer) = github::post(
        &client,
        &gateway.public_url("/hooks/github"),
        SECRET,
        "push",
        "no-key-1",
        br#"{"seq":1}"#,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let metrics = gateway.metrics().await;
    assert_eq!(
        counter(
            &metrics,
            "switchyard_unordered_events_total",
            r#"route="ordered""#
        ),
        1,
        "{metrics}"
    );
}
