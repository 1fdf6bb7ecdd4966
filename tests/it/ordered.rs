//! Ordered delivery per key, on real gateway processes, a real Redis (and
//! Redis Cluster in the cluster pass) and a real receiver: on a route with
//! `ordered = true` the events of one ordering key arrive in the order they
//! were acked, one attempt at a time, while other keys go on; a key whose
//! head dead-letters moves on, or with `on_dead_letter = "block"` waits for
//! the dead letter's replay; events without a key go unordered, counted.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::support::config::{ConfigBuilder, Owner, Route, Source, quoted};
use crate::support::gateway::GatewayProcess;
use crate::support::github;
use crate::support::receiver::{Receiver, Recorded, Reply};
use crate::support::test_redis::{QueueKeys, TestRedis};
use crate::support::{HEAVY_TURN, counter, eventually};

const SECRET: &str = "ordered-test-secret";

/// A GitHub source whose events' ordering key is the body's `/key`, and one
/// ordered route to `receiver`, shaped by `shape`. A killed process's
/// jobs are taken over 2 s after its last touch; an attempt ends before
/// that (1 s timeout), so a live process's job is never taken over.
fn config(receiver: &Receiver, shape: impl FnOnce(Route) -> Route) -> String {
    let route = Route::new("ordered", "github", "sre", &receiver.url("/ordered"))
        .with("ordered", "true")
        .destination("timeout", &quoted("1s"));
    ConfigBuilder::new()
        .delivery("visibility_timeout", &quoted("2s"))
        .retry(20, "50ms", "200ms")
        // Failing on purpose is not a destination's breakdown here.
        .breaker(1_000_000, None)
        .owner(Owner::sre())
        .source(Source::github(SECRET).with("ordering_key", r#"{ json_pointer = "/key" }"#))
        .route(shape(route))
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

/// Sends events `seqs` for each of `keys`, each key's in sequence (so
/// its ack order is its sequence) and the keys concurrently, spread over
/// `urls`.
async fn send_in_sequence(urls: &[String], keys: &[String], seqs: Range<usize>) {
    let client = reqwest::Client::new();
    let senders = keys.iter().enumerate().map(|(k, key)| {
        let (client, url, seqs) = (client.clone(), urls[k % urls.len()].clone(), seqs.clone());
        async move {
            for seq in seqs {
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

/// Waits up to 60 s for `n` deliveries (2xx) at `receiver`; fails if they
/// do not come.
async fn all_delivered(receiver: &Receiver, n: usize) {
    let delivered = eventually(Duration::from_secs(60), || async {
        receiver.accepted().len() >= n
    })
    .await;
    assert!(delivered, "{} of {n} delivered", receiver.accepted().len());
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

/// What the receiver saw of each key's attempts.
#[derive(Debug, Default)]
struct KeyAudit {
    attempts: usize,
    failed: usize,
    /// Deliveries (2xx) of an event already delivered: a crash between the
    /// destination's answer and its record allows them.
    duplicates: usize,
    /// An attempt that started before the previous one of its key had
    /// ended (answered, or its connection gone).
    overlaps: Vec<String>,
    /// An attempt of an event acked before one already attempted.
    out_of_order: Vec<String>,
    /// Events never delivered.
    lost: Vec<String>,
}

impl KeyAudit {
    /// Audits `requests` of `keys` keys with `per_key` events each, sent in
    /// sequence 0, 1, … per key.
    fn of(requests: &[Recorded], keys: &[String], per_key: usize) -> Self {
        let mut audit = Self::default();
        let by_key = by_key(requests);
        for key in keys {
            let attempts = by_key.get(key).map_or(&[][..], Vec::as_slice);
            let mut delivered = vec![0usize; per_key];
            let mut furthest = 0;
            for (i, attempt) in attempts.iter().enumerate() {
                let seq = key_and_seq(attempt).1 as usize;
                audit.attempts += 1;
                if let Some(next) = attempts.get(i + 1)
                    && attempt.ended().is_none_or(|ended| ended > next.at)
                {
                    audit.overlaps.push(format!(
                        "{key}: {seq} still open when {:?} began",
                        key_and_seq(next).1
                    ));
                }
                if seq < furthest {
                    audit
                        .out_of_order
                        .push(format!("{key}: {seq} attempted after {furthest}"));
                }
                furthest = furthest.max(seq);
                match attempt.answered {
                    Some(answer) if answer.status.is_success() => {
                        if let Some(count) = delivered.get_mut(seq) {
                            *count += 1;
                        }
                    }
                    _ => audit.failed += 1,
                }
            }
            for (seq, count) in delivered.into_iter().enumerate() {
                match count {
                    0 => audit.lost.push(format!("{key}-{seq}")),
                    n => audit.duplicates += n - 1,
                }
            }
        }
        audit
    }

    /// Fails unless no attempt overlapped, none came out of order and
    /// every event was delivered.
    fn assert_sound(&self) {
        let first = |list: &[String]| list.iter().take(5).cloned().collect::<Vec<_>>();
        assert!(
            self.overlaps.is_empty(),
            "{} attempts overlapped another of their key: {:?}",
            self.overlaps.len(),
            first(&self.overlaps)
        );
        assert!(
            self.out_of_order.is_empty(),
            "{} attempts out of order: {:?}",
            self.out_of_order.len(),
            first(&self.out_of_order)
        );
        assert!(
            self.lost.is_empty(),
            "{} events never delivered: {:?}",
            self.lost.len(),
            first(&self.lost)
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
    let toml = config(&receiver, |route| route);
    let a = GatewayProcess::start_on(&redis, &toml).await;
    let b = GatewayProcess::start_on(&redis, &toml).await;
    let keys: Vec<String> = (0..KEYS).map(|k| format!("customer-{k}")).collect();
    send_in_sequence(
        &[a.public_url("/hooks/github"), b.public_url("/hooks/github")],
        &keys,
        0..PER_KEY,
    )
    .await;
    all_delivered(&receiver, KEYS * PER_KEY).await;
    // Anything sent twice would arrive now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = receiver.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.answered.is_some_and(|a| a.status == 503)),
        "some attempts failed and were retried"
    );
    let audit = KeyAudit::of(&requests, &keys, PER_KEY);
    audit.assert_sound();
    assert_eq!(
        audit.duplicates, 0,
        "without a crash, each event is delivered once"
    );
    let route = ordered_route(&a).await;
    assert_eq!(route["dead_letters"], 0, "{route}");
    // A key's state lives only while it has events.
    assert_eq!(route["keys"]["active"], 0, "{route}");
    assert_eq!(route["keys"]["waiting_jobs"], 0, "{route}");
}

/// Sends each key's `per_key` events in sequence, all keys at once, the way
/// a sender retries: an event not answered 2xx (its process was killed) is
/// sent again, to the next of `urls`, until it is; so each key's ack order
/// is its sequence. Fails past `within`.
async fn send_through_crashes(urls: &[String], keys: &[String], per_key: usize, within: Duration) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    let senders = keys.iter().enumerate().map(|(k, key)| {
        let client = client.clone();
        async move {
            for seq in 0..per_key {
                let (delivery, body) = (format!("{key}-{seq}"), body(key, seq));
                for turn in k.. {
                    let url = &urls[turn % urls.len()];
                    let sent = github::try_post(&client, url, SECRET, "push", &delivery, &body);
                    if sent.await.is_ok_and(|status| (200..300).contains(&status)) {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{delivery} not acked within {within:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    futures_util::future::join_all(senders).await;
}

/// The chaos ordering check: 500 keys × 20 events from concurrent senders
/// over two processes, the receiver answering 503 to a random 20 % of
/// attempts; one process is SIGKILLed until two kills have caught
/// deliveries in flight, and restarted each time, as a supervisor would. Per key: no attempt
/// began before the previous one ended, no event was attempted after a
/// later one (so first deliveries are in ack order), none was lost. A
/// killed process's jobs are redelivered by whoever takes them over, so
/// duplicates are allowed, counted and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_keys_stay_in_order_through_failures_and_kills() {
    let _turn = HEAVY_TURN.lock().await;
    const KEYS: usize = 500;
    const PER_KEY: usize = 20;
    let started = Instant::now();
    let redis = TestRedis::start();
    let receiver = Receiver::start().await;
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    // A script longer than the attempts the run makes (about 1.25 per event).
    for _ in 0..(KEYS * PER_KEY * 2) {
        let reply = if rng.random_bool(0.2) {
            Reply::status(503)
        } else {
            Reply::ok()
        };
        receiver.then(reply.delay(Duration::from_millis(2)));
    }
    let toml = config(&receiver, |route| route);
    let mut doomed = GatewayProcess::start_on(&redis, &toml).await;
    let survivor = GatewayProcess::start_on(&redis, &toml).await;
    let urls = Arc::new([
        doomed.public_url("/hooks/github"),
        survivor.public_url("/hooks/github"),
    ]);
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|k| format!("customer-{k}")).collect());
    let sending = tokio::spawn({
        let (urls, keys) = (urls.clone(), keys.clone());
        async move { send_through_crashes(&urls[..], &keys, PER_KEY, Duration::from_secs(90)).await }
    });
    let mut queue = QueueKeys::of(&redis).await;
    // Two kills that catch deliveries in flight, early enough that every
    // key still has events; a kill that came just after the process's jobs
    // were done (it had some a moment before) is one more kill, not one of
    // the two.
    let mut caught = Vec::new();
    let mut kills = 0;
    while caught.len() < 2 {
        assert!(
            kills < 8,
            "{kills} kills, {caught:?} caught deliveries in flight"
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let jobs = queue.kill_with_jobs_in_flight(&mut doomed).await;
        kills += 1;
        if jobs > 0 {
            caught.push(jobs);
        }
        doomed.restart().await;
    }
    sending.await.expect("every event acked");
    let delivered = eventually(Duration::from_secs(90), || async {
        let audit = KeyAudit::of(&receiver.requests(), &keys, PER_KEY);
        audit.lost.is_empty()
    })
    .await;
    // Anything sent twice, or out of turn, would arrive now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let audit = KeyAudit::of(&receiver.requests(), &keys, PER_KEY);
    eprintln!(
        "ordered chaos (seed {seed}): {KEYS} keys × {PER_KEY} events, {} attempts, {} failed, \
         delivered all: {delivered}, duplicates {}, overlaps {}, out of order {}, lost {}; \
         {kills} kills, {caught:?} jobs in flight at those that caught some; {:.1}s",
        audit.attempts,
        audit.failed,
        audit.duplicates,
        audit.overlaps.len(),
        audit.out_of_order.len(),
        audit.lost.len(),
        started.elapsed().as_secs_f64()
    );
    audit.assert_sound();
    assert!(audit.failed > 0, "some attempts failed and were retried");
    let route = ordered_route(&survivor).await;
    assert_eq!(route["dead_letters"], 0, "{route}");
    assert_eq!(
        route["keys"]["active"], 0,
        "nothing left of any key: {route}"
    );
    assert_eq!(route["keys"]["waiting_jobs"], 0, "{route}");
}

/// 30 keys × 8 events to an ordered route whose destination takes 2
/// requests at a time and 50 a second, answering 503 to every fifth: the
/// first half meets the rate limit and parking, the route is paused while
/// they go (nothing is attempted while it is) and the second half is sent
/// into the pause; once resumed the keys go on in order, one attempt at a
/// time, through the drain, every event once, and nothing is left of them.
#[tokio::test]
async fn keys_stay_in_order_through_rate_limit_parking_pause_and_resume() {
    let _turn = HEAVY_TURN.lock().await;
    const KEYS: usize = 30;
    const PER_KEY: usize = 8;
    let redis = TestRedis::start();
    let receiver = Receiver::start().await;
    for _ in 0..(KEYS * PER_KEY) {
        receiver.then(Reply::ok().delay(Duration::from_millis(5)).times(4));
        receiver.then(Reply::status(503).delay(Duration::from_millis(5)));
    }
    let toml = config(&receiver, |route| {
        route
            .destination("rate_limit", &quoted("50/s"))
            .destination("max_in_flight", "2")
    });
    let a = GatewayProcess::start_on(&redis, &toml).await;
    let b = GatewayProcess::start_on(&redis, &toml).await;
    let urls = [a.public_url("/hooks/github"), b.public_url("/hooks/github")];
    let keys: Vec<String> = (0..KEYS).map(|k| format!("account-{k}")).collect();
    send_in_sequence(&urls, &keys, 0..PER_KEY / 2).await;
    let (status, answer) = a
        .admin(
            Method::POST,
            "/admin/routes/ordered/pause",
            Some(json!({"reason": "ordered under flow control"})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    // Both processes obey the pause within 500 ms; attempts under way end.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = receiver.requests().len();
    assert!(
        before < KEYS * PER_KEY / 2,
        "the pause came while the first half went ({before} attempts)"
    );
    send_in_sequence(&urls, &keys, PER_KEY / 2..PER_KEY).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.requests().len(),
        before,
        "nothing attempted while paused"
    );
    let route = ordered_route(&a).await;
    assert!(route["held"].as_u64() > Some(0), "{route}");
    assert!(route["keys"]["waiting_jobs"].as_u64() > Some(0), "{route}");
    let (status, answer) = b
        .admin(
            Method::POST,
            "/admin/routes/ordered/resume",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    all_delivered(&receiver, KEYS * PER_KEY).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let audit = KeyAudit::of(&receiver.requests(), &keys, PER_KEY);
    audit.assert_sound();
    assert_eq!(audit.duplicates, 0, "each event delivered once");
    assert!(audit.failed > 0, "some attempts failed and were retried");
    let metrics = a.metrics().await + &b.metrics().await;
    let waited = |outcome: &str| {
        counter(
            &metrics,
            "switchyard_deliveries_deferred_total",
            &format!(r#"outcome="{outcome}""#),
        )
    };
    assert!(
        waited("rate_limited") + waited("destination_saturated") > 0,
        "the destination's limits made heads wait: {metrics}"
    );
    let route = ordered_route(&a).await;
    assert_eq!(route["held"], 0, "{route}");
    assert_eq!(route["keys"]["active"], 0, "{route}");
    assert_eq!(route["keys"]["waiting_jobs"], 0, "{route}");
}

/// The ordered route of the inventory.
async fn ordered_route(gateway: &GatewayProcess) -> Value {
    let (status, routes) = gateway.admin(Method::GET, "/admin/routes", None).await;
    assert_eq!(status, 200, "{routes}");
    routes["routes"][0].clone()
}

/// What happens to a key's dead letter in
/// [`a_dead_letter_lets_its_key_move_on_or_blocks_it_until_replayed`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unblock {
    /// `on_dead_letter = "continue"`: nothing to do.
    NotBlocked,
    Replay,
    Delete,
}

/// A key whose head event is refused dead-letters it and moves on: its
/// later events arrive in order; with `on_dead_letter = "block"` the key
/// waits (other keys go on) until the dead letter is replayed, which then
/// goes to the back of the key's line, or deleted.
#[tokio::test]
async fn a_dead_letter_lets_its_key_move_on_or_blocks_it_until_replayed() {
    let _turn = HEAVY_TURN.lock().await;
    for unblock in [Unblock::NotBlocked, Unblock::Replay, Unblock::Delete] {
        let block = unblock != Unblock::NotBlocked;
        let redis = TestRedis::start();
        let receiver = Receiver::start().await;
        // The first request (blocked-0) is refused; the rest succeed.
        receiver.then(Reply::status(400));
        let toml = config(&receiver, |route| {
            if block {
                route.with("on_dead_letter", "\"block\"")
            } else {
                route
            }
        });
        let gateway = GatewayProcess::start_on(&redis, &toml).await;
        let url = [gateway.public_url("/hooks/github")];
        send_in_sequence(&url, &["blocked".to_owned()], 0..1).await;
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
        send_in_sequence(&url, &["other".to_owned()], 0..2).await;
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
        let (request, expected) = match unblock {
            Unblock::Replay => (
                (Method::POST, format!("/admin/dead-letters/{id}/replay")),
                // The replayed event goes last.
                &[0, 1, 2, 3, 0][..],
            ),
            _ => (
                (Method::DELETE, format!("/admin/dead-letters/{id}")),
                &[0, 1, 2, 3][..],
            ),
        };
        let (status, answer) = gateway.admin(request.0, &request.1, Some(json!({}))).await;
        assert!((200..300).contains(&status), "{status} {answer}");
        assert!(
            eventually(Duration::from_secs(10), || async {
                arrived("blocked") == expected
            })
            .await,
            "after {unblock:?} the key goes on in order: {:?}",
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
    let gateway = GatewayProcess::start_on(&redis, &config(&receiver, |route| route)).await;
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
