//! Signed ingest end to end: verification, durable enqueue, dedupe, fan-out,
//! refusals with their codes, and Redis faults (invariant 1).

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::Value;

use crate::support::config::{ConfigBuilder, Owner, Route, Source};
use crate::support::env::TestEnv;
use crate::support::github;
use crate::support::redis::RedisServer;
use crate::support::test_redis::TestRedis;
use switchyard::queue::Job;

const SECRET: &str = "github-test-secret";
const JOBS: &str = "{switchyard}:jobs";

/// Ingest only: these tests inspect the stream, so no worker may take jobs.
fn sources() -> String {
    sources_with(audit_route())
}

/// The route that takes every event.
fn audit_route() -> Route {
    Route::new(
        "everything-to-audit",
        "github",
        "devex",
        "http://127.0.0.1:9/audit",
    )
    .description("Every event is archived")
    .on_failure("Audit gaps")
}

/// The test sources with `audit` as their catch-all route.
fn sources_with(audit: Route) -> String {
    ConfigBuilder::new()
        .delivery("workers", "false")
        .owner(Owner::devex())
        .source(Source::github(SECRET))
        .route(
            Route::new("pushes-to-ci", "github", "devex", "http://127.0.0.1:9/ci")
                .description("Pushes start CI")
                .on_failure("No CI")
                .when_github_event("push"),
        )
        .route(audit)
        .route(
            Route::new(
                "opened-to-tracker",
                "github",
                "devex",
                "http://127.0.0.1:9/tracker",
            )
            .description("Opened issues go to the tracker")
            .on_failure("Tracker stale")
            .with(
                "filter",
                r#"{ json_pointer = "/action", equals = "opened" }"#,
            ),
        )
        .build()
}

fn sign(body: &[u8]) -> String {
    github::signature(SECRET, body)
}

async fn setup() -> TestEnv {
    setup_with(|_| {}).await
}

/// A gateway on the test sources with `change` made to its config.
async fn setup_with(change: impl FnOnce(&mut switchyard::config::Config)) -> TestEnv {
    TestEnv::start_changed(SECRET, |_, _| sources(), change).await
}

/// What these tests do with the environment besides sending.
trait IngestEnv {
    fn env(&self) -> &TestEnv;

    async fn post(&self, event: &str, delivery: &str, body: &[u8]) -> (u16, Value) {
        let env = self.env();
        env.post_as(&env.client, event, delivery, body).await
    }

    async fn post_signed(
        &self,
        event: &str,
        delivery: &str,
        body: &[u8],
        signature: &str,
    ) -> (u16, Value) {
        let env = self.env();
        let url = env.gateway.public_url("/hooks/github");
        github::post_with_signature(&env.client, &url, signature, event, delivery, body).await
    }

    /// A signed push whose headers and first 5 body bytes are sent on a raw
    /// connection, the rest held back.
    async fn half_sent(&self, delivery: &str, body: &[u8]) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(self.env().gateway.public)
            .await
            .expect("connect");
        let head = format!(
            "POST /hooks/github HTTP/1.1\r\nhost: x\r\nx-github-event: push\r\nx-github-delivery: {delivery}\r\nx-hub-signature-256: {}\r\ncontent-length: {}\r\n\r\n",
            sign(body),
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        stream
            .write_all(&body[..5])
            .await
            .expect("part of the body");
        stream
    }

    async fn jobs(&self) -> Vec<Job> {
        queued_jobs(&self.env().redis).await
    }

    async fn metrics(&self) -> String {
        self.env().gateway.metrics().await
    }
}

impl IngestEnv for TestEnv {
    fn env(&self) -> &TestEnv {
        self
    }
}

/// Every job in the stream, decoded.
async fn queued_jobs(redis: &TestRedis) -> Vec<Job> {
    let mut conn = redis.connection().await;
    let mut jobs = Vec::new();
    for tag in redis.partition_tags() {
        let reply: redis::streams::StreamRangeReply = conn
            .xrange_all(format!("{{{tag}}}:jobs"))
            .await
            .expect("XRANGE jobs");
        jobs.extend(reply.ids.iter().map(|entry| match entry.map.get("job") {
            Some(redis::Value::BulkString(bytes)) => Job::decode(bytes).expect("job decodes"),
            other => panic!("entry without a job: {other:?}"),
        }));
    }
    jobs
}

#[tokio::test]
async fn a_signed_event_fans_out_to_every_matching_route_with_exact_bytes() {
    let s = setup().await;
    // Not valid UTF-8 after the JSON: bytes must survive exactly.
    let mut body = br#"{"action":"opened","ref":"main"}"#.to_vec();
    body.extend_from_slice(b" \xff\x00");
    let (status, answer) = s.post("push", "delivery-1", &body).await;
    assert_eq!(status, 202, "{answer}");
    let mut routes: Vec<&str> = answer["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    routes.sort_unstable();
    // The body is not JSON (trailing bytes), so the JSON filter does not match.
    assert_eq!(routes, ["everything-to-audit", "pushes-to-ci"]);

    let jobs = s.jobs().await;
    assert_eq!(jobs.len(), 2, "one job per matched route");
    for job in &jobs {
        assert_eq!(job.event_id, answer["id"].as_str().expect("id"));
        assert_eq!(job.body, body, "body bytes exact");
        assert_eq!(job.source, "github");
        assert_eq!(job.attempt, 1);
        let headers: Vec<(&str, &[u8])> = switchyard::queue::decode_headers(&job.headers).collect();
        assert!(headers.contains(&("x-github-delivery", &b"delivery-1"[..])));
        assert!(headers.contains(&("content-type", &b"application/json"[..])));
    }

    let (status, answer) = s
        .post("issues", "delivery-2", br#"{"action":"opened"}"#)
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        answer["routes"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
}

#[tokio::test]
async fn a_repeated_delivery_id_is_answered_duplicate_and_enqueues_nothing() {
    let s = setup().await;
    let body = br#"{"action":"opened"}"#;
    let (status, first) = s.post("issues", "same-delivery", body).await;
    assert_eq!(status, 202);
    let queued = s.jobs().await.len();

    for _ in 0..3 {
        let (status, again) = s.post("issues", "same-delivery", body).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["id"], first["id"], "answers the first event's id");
    }
    assert_eq!(s.jobs().await.len(), queued, "duplicates enqueue nothing");

    let mut conn = s.redis.connection().await;
    let ttl: i64 = conn
        .pttl("{switchyard}:seen:github:same-delivery")
        .await
        .expect("PTTL");
    let day_ms = 24 * 3600 * 1000;
    assert!(
        ttl > day_ms - 60_000 && ttl <= day_ms,
        "dedupe window is 24h, ttl {ttl}"
    );
}

/// Concurrent requests are written to Redis in batches; each must still be
/// answered for itself: one 202 per delivery id (its copies in the same or a
/// later batch answered `duplicate` with that event's id), and exactly its
/// jobs queued and counted.
#[tokio::test]
async fn concurrent_events_written_in_batches_are_each_answered_for_themselves() {
    let s = setup().await;
    let body = br#"{"action":"opened"}"#;
    let deliveries: Vec<String> = (0..150).map(|i| format!("batch-{i}")).collect();
    // Every third delivery id is sent three times at once.
    let sends = deliveries.iter().enumerate().flat_map(|(i, delivery)| {
        let copies = if i % 3 == 0 { 3 } else { 1 };
        std::iter::repeat_n(delivery.as_str(), copies)
    });
    let s = &s;
    let answers = futures_util::future::join_all(
        sends.map(|delivery| async move { (delivery, s.post("push", delivery, body).await) }),
    )
    .await;

    let mut accepted: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    for (delivery, (status, answer)) in &answers {
        if *status == 202 {
            let id = answer["id"].as_str().expect("id").to_owned();
            assert!(
                accepted.insert(delivery, id).is_none(),
                "{delivery} accepted twice"
            );
        }
    }
    assert_eq!(
        accepted.len(),
        deliveries.len(),
        "each delivery id accepted once"
    );
    for (delivery, (status, answer)) in &answers {
        if *status != 202 {
            assert_eq!(*status, 200, "{answer}");
            assert_eq!(answer["duplicate"], true);
            assert_eq!(answer["id"].as_str(), Some(accepted[delivery].as_str()));
        }
    }

    // A push with `"action":"opened"` matches all three routes.
    let jobs = s.jobs().await;
    assert_eq!(jobs.len(), 3 * deliveries.len());
    for id in accepted.values() {
        assert_eq!(
            jobs.iter().filter(|j| &j.event_id == id).count(),
            3,
            "event {id}"
        );
    }
    let mut conn = s.redis.connection().await;
    let received: std::collections::HashMap<String, u64> = conn
        .hgetall("{switchyard}:stats:received")
        .await
        .expect("HGETALL received");
    for route in ["pushes-to-ci", "everything-to-audit", "opened-to-tracker"] {
        assert_eq!(received.get(route), Some(&150), "{route}: {received:?}");
    }
}

#[tokio::test]
async fn an_event_matching_no_route_is_accepted_and_counted_as_unrouted() {
    let s = setup().await;
    let (status, answer) = s
        .post("star", "d-unrouted", br#"{"action":"created"}"#)
        .await;
    assert_eq!(status, 202);
    // "everything-to-audit" has no filter, so use a source view: only audit matched.
    assert_eq!(answer["routes"], serde_json::json!(["everything-to-audit"]));

    let only_filtered = sources_with(audit_route().when_github_event("never"));
    let none = TestEnv::start(SECRET, |_, _| only_filtered).await;
    let (status, answer) = none
        .post("star", "d-none", br#"{"action":"created"}"#)
        .await;
    assert_eq!(status, 202);
    assert_eq!(answer["routes"], serde_json::json!([]));
    let metrics = none.metrics().await;
    assert!(
        metrics.contains(r#"switchyard_unrouted_events_total{source="github"} 1"#),
        "{metrics}"
    );
    assert!(
        none.jobs().await.is_empty(),
        "nothing enqueued for an unrouted event"
    );
}

#[tokio::test]
async fn refusals_get_their_codes_and_are_counted() {
    let s = setup().await;
    let body = br#"{"action":"opened"}"#;
    let (status, answer) = s
        .post_signed("push", "r1", body, &sign(b"other body"))
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_signature"))
    );
    let (status, answer) = s.post_signed("push", "r2", body, "sha256=nothex").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("malformed_signature"))
    );
    let response = s
        .client
        .post(s.gateway.public_url("/hooks/github"))
        .body(body.to_vec())
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 401);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["error"], "missing_signature");
    // The message never reveals the expected signature.
    let expected = sign(body);
    assert!(!answer.to_string().contains(&expected[7..]));

    assert!(s.jobs().await.is_empty(), "nothing refused is queued");
    let metrics = s.metrics().await;
    for outcome in [
        "invalid_signature",
        "malformed_signature",
        "missing_signature",
    ] {
        let line =
            format!(r#"switchyard_ingest_requests_total{{source="github",outcome="{outcome}"}} 1"#);
        assert!(metrics.contains(&line), "{line} missing in:\n{metrics}");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_whether_declared_or_streamed() {
    let s = setup_with(|config| config.server.max_body_bytes = 1024).await;
    let (gateway, client) = (&s.gateway, &s.client);
    let big = vec![b'x'; 4096];

    let declared = client
        .post(gateway.public_url("/hooks/github"))
        .header("X-Hub-Signature-256", sign(&big))
        .body(big.clone())
        .send()
        .await
        .expect("answer");
    assert_eq!(declared.status(), 413);
    let answer: Value = declared.json().await.expect("json body");
    assert_eq!(answer["error"], "body_too_large");

    // Chunked: no Content-Length, so the limit trips while reading.
    let chunks = futures_util::stream::iter(
        big.chunks(512)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let streamed = client
        .post(gateway.public_url("/hooks/github"))
        .header("X-Hub-Signature-256", sign(&big))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("answer");
    assert_eq!(streamed.status(), 413);
    let answer: Value = streamed.json().await.expect("json body");
    assert_eq!(answer["error"], "body_too_large");
    let metrics = gateway.metrics().await;
    let line = r#"switchyard_ingest_requests_total{source="github",outcome="body_too_large"} 2"#;
    assert!(metrics.contains(line), "{line} missing in:\n{metrics}");
}

/// A body over axum's own default cap (2 MiB) but within `max_body_bytes`
/// is accepted: the configured limit is the only one.
#[tokio::test]
async fn the_configured_body_limit_is_the_only_one() {
    let s = setup_with(|config| config.server.max_body_bytes = 4 * 1024 * 1024).await;
    let big = format!(
        r#"{{"action":"opened","pad":"{}"}}"#,
        "x".repeat(3 * 1024 * 1024)
    );
    let (status, answer) = s
        .post_signed("push", "big-1", big.as_bytes(), &sign(big.as_bytes()))
        .await;
    assert_eq!(status, 202, "{answer}");
}

/// Any method but POST on a source path: 405 naming POST in `Allow`,
/// counted under the source.
#[tokio::test]
async fn other_methods_get_405_with_allow_post() {
    let s = setup().await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::HEAD,
    ] {
        let response = s
            .client
            .request(method.clone(), s.gateway.public_url("/hooks/github"))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(
            response.headers().get("allow").map(|v| v.as_bytes()),
            Some(&b"POST"[..]),
            "{method}"
        );
    }
    let metrics = s.metrics().await;
    let line =
        r#"switchyard_ingest_requests_total{source="github",outcome="method_not_allowed"} 3"#;
    assert!(metrics.contains(line), "{line} missing in:\n{metrics}");
}

#[tokio::test]
async fn redis_down_means_503_and_never_2xx_then_accepting_again() {
    let mut s = setup().await;
    s.redis.stop();
    for i in 0..3 {
        let (status, answer) = s.post("push", &format!("down-{i}"), b"{}").await;
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"], "queue_unavailable");
    }
    s.redis.restart();
    let mut accepted = false;
    for _ in 0..100 {
        let (status, _) = s.post("push", "down-0", b"{}").await;
        if status == 202 {
            accepted = true;
            break;
        }
        assert_eq!(
            status, 503,
            "only 503 until Redis is back, never a duplicate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "accepting again after Redis returned");
    // One accepted push event, matching two routes; nothing from the refusals.
    assert_eq!(s.jobs().await.len(), 2);
}

#[tokio::test]
async fn redis_out_of_memory_refuses_with_503_and_leaves_no_dedupe_record() {
    let s = setup().await;
    let mut conn = s.redis.connection().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query_async(&mut conn)
        .await
        .expect("CONFIG SET");
    let (status, answer) = s.post("push", "oom-1", b"{}").await;
    assert_eq!(status, 503, "{answer}");
    let seen: bool = conn
        .exists("{switchyard}:seen:github:oom-1")
        .await
        .expect("EXISTS");
    assert!(!seen, "no dedupe record without its jobs");

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query_async(&mut conn)
        .await
        .expect("CONFIG SET");
    let (status, answer) = s.post("push", "oom-1", b"{}").await;
    assert_eq!(
        status, 202,
        "the sender's retry is accepted, not called a duplicate: {answer}"
    );
    assert_eq!(s.jobs().await.len(), 2);
}

/// The delivery id is claimed before the jobs are added (one `SET NX GET`),
/// so a job Redis refuses must take the claim back: otherwise the sender's
/// retry would be answered `duplicate` for an event that was never queued.
#[tokio::test]
async fn a_job_redis_refuses_takes_back_its_dedupe_claim() {
    let s = setup().await;
    let mut conn = s.redis.connection().await;
    // The jobs key holding a string makes every XADD fail (WRONGTYPE).
    let _: () = conn.set(JOBS, "not a stream").await.expect("SET");
    let (status, answer) = s.post("push", "refused-1", b"{}").await;
    assert_eq!(status, 503, "{answer}");
    let seen: bool = conn
        .exists("{switchyard}:seen:github:refused-1")
        .await
        .expect("EXISTS");
    assert!(!seen, "no dedupe record without its jobs");

    let _: () = conn.del(JOBS).await.expect("DEL");
    let (status, answer) = s.post("push", "refused-1", b"{}").await;
    assert_eq!(
        status, 202,
        "the sender's retry is accepted, not called a duplicate: {answer}"
    );
    assert_eq!(s.jobs().await.len(), 2);
}
#[tokio::test]
async fn a_sender_that_disconnects_mid_body_leaves_nothing_behind() {
    let s = setup().await;
    let body = br#"{"action":"opened"}"#;
    drop(s.half_sent("cut", body).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.jobs().await.is_empty());

    // The sender's retry is a fresh, accepted event.
    let (status, _) = s.post("push", "cut", body).await;
    assert_eq!(status, 202);
}

/// Load shedding: past `server.max_concurrent_requests`, a request is
/// answered 503 `overloaded` at once (before its body is read) and counted;
/// when a held request finishes, the next one is accepted.
#[tokio::test]
async fn requests_past_the_concurrency_limit_are_shed_until_one_finishes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup_with(|config| {
        config.server.max_concurrent_requests = 2;
    })
    .await;
    let body = br#"{"action":"opened"}"#;

    // Two senders hold their requests open mid-body, each holding a slot.
    let mut held = Vec::new();
    for i in 0..2 {
        held.push(s.half_sent(&format!("held-{i}"), body).await);
    }
    let shed = crate::support::eventually(Duration::from_secs(5), || async {
        s.post("push", "third", body).await.1["error"] == "overloaded"
    })
    .await;
    assert!(shed, "a third request is shed while two are held");
    let metrics = s.metrics().await;
    assert!(
        metrics
            .contains(r#"switchyard_ingest_requests_total{source="github",outcome="overloaded"}"#),
        "{metrics}"
    );

    // One held sender finishes: its event is accepted and its slot freed.
    let mut first = held.remove(0);
    first.write_all(&body[5..]).await.expect("rest of the body");
    let mut answer = vec![0; 512];
    let n = first.read(&mut answer).await.expect("answer");
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 202"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    let (status, answer) = s.post("push", "fourth", body).await;
    assert_eq!(status, 202, "{answer}");
}

/// Connection limit: at `server.max_connections` open connections the
/// listener stops accepting, so a new sender waits (in the kernel's accept
/// queue) instead of costing memory; when a connection closes, it is served.
#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    let s = setup_with(|config| {
        config.server.max_connections = 2;
    })
    .await;
    let body = br#"{"action":"opened"}"#;
    let mut held = Vec::new();
    for i in 0..2 {
        held.push(s.half_sent(&format!("held-{i}"), body).await);
    }

    let third = s.post("push", "third", body);
    tokio::pin!(third);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third)
            .await
            .is_err(),
        "a third connection is not served while two are open"
    );
    let metrics = s.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|line| line == "switchyard_connection_limit_reached_total 1")
            && metrics
                .lines()
                .any(|line| line == "switchyard_open_connections 2"),
        "{metrics}"
    );

    // Well within the held requests' own timeout: it is the close that frees a place.
    drop(held.remove(0));
    let (status, answer) = tokio::time::timeout(Duration::from_secs(3), third)
        .await
        .expect("served once a connection closed");
    assert_eq!(status, 202, "{answer}");
}

/// A connection that sends nothing, or idles after a request, is closed after
/// `request_timeout` like one that trickles its headers, so silent clients
/// cannot hold the connection limit.
#[tokio::test]
async fn silent_connections_are_closed_and_free_their_place() {
    use tokio::io::AsyncReadExt;
    let s = setup_with(|config| {
        config.server.max_connections = 1;
        config.server.request_timeout = Duration::from_secs(1);
    })
    .await;
    let mut silent = tokio::net::TcpStream::connect(s.gateway.public)
        .await
        .expect("connect");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed within the header timeout, not left open");
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "closed without an answer to nothing: {closed:?}"
    );
    let (status, answer) = tokio::time::timeout(
        Duration::from_secs(5),
        s.post("push", "after-silence", br#"{"action":"opened"}"#),
    )
    .await
    .expect("the place is free again");
    assert_eq!(status, 202, "{answer}");
}

/// A body that stops coming is answered 408 in JSON after
/// `request_timeout`, counted under its source, and nothing is queued.
#[tokio::test]
async fn a_body_that_stops_coming_is_answered_408_and_counted() {
    use tokio::io::AsyncReadExt;
    let s = setup_with(|config| config.server.request_timeout = Duration::from_secs(1)).await;
    let mut stream = s.half_sent("stalled", br#"{"action":"opened"}"#).await;
    let mut answer = Vec::new();
    let read_answer = async {
        let mut chunk = [0u8; 1024];
        while !answer.ends_with(b"}") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read_answer)
        .await
        .expect("answered within the request timeout and then some");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
    assert!(s.jobs().await.is_empty(), "nothing queued");
    let metrics = s.metrics().await;
    let line = r#"switchyard_ingest_requests_total{source="github",outcome="request_timeout"} 1"#;
    assert!(metrics.contains(line), "{line} missing in:\n{metrics}");
}

/// A queue slower than `request_timeout` is answered 503
/// `queue_unavailable` (retry later), not 408: the request itself arrived
/// in time.
#[tokio::test]
async fn a_queue_slower_than_the_request_deadline_is_answered_503() {
    let s = setup_with(|config| config.server.request_timeout = Duration::from_secs(1)).await;
    let mut conn = s.redis.connection().await;
    // Scripts wait while writes are paused.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("WRITE")
        .query_async(&mut conn)
        .await
        .expect("CLIENT PAUSE");
    let (status, answer) = s.post("push", "paused", br#"{"action":"opened"}"#).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("queue_unavailable")),
        "{answer}"
    );
    let metrics = s.metrics().await;
    let line = r#"switchyard_ingest_requests_total{source="github",outcome="queue_unavailable"} 1"#;
    assert!(metrics.contains(line), "{line} missing in:\n{metrics}");
}

/// The gateway raises its soft open-file limit to what `max_connections`
/// needs (systemd starts services at 1,024, below the default 4,096).
#[tokio::test]
async fn the_open_file_limit_is_raised_to_what_the_connection_limit_needs() {
    let redis = RedisServer::start();
    let gateway = crate::support::gateway::GatewayProcess::start_with(
        &redis.url(),
        "",
        crate::support::gateway::ProcessOptions::default().soft_open_files(512),
    )
    .await;
    let pid = gateway.pid().expect("running");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("an open-files line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    let (soft, hard) = (numbers[0], numbers[1]);
    // max_connections 4096 + admin_max_connections 256
    // + delivery.concurrency 256 + 256 others.
    let needed = 4096 + 256 + 256 + 256;
    assert_eq!(soft, needed.min(hard), "{line}");
    assert!(soft > 512, "raised from the 512 it started with: {line}");
}

/// Under connection pressure (under a quarter of `max_connections` left), a
/// new connection serves one request and closes, so places turn over instead
/// of idling in senders' pools; with room, connections are kept alive.
#[tokio::test]
async fn under_connection_pressure_new_connections_serve_one_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let setup = setup_with(|config| config.server.max_connections = 4).await;
    let s = &setup;
    let body = br#"{"action":"opened"}"#;
    // One whole request on a raw connection; the answer's head and whether
    // the connection closed after it.
    let exchange = |delivery: &'static str| async move {
        let mut stream = s.half_sent(delivery, body).await;
        stream
            .write_all(&body[5..])
            .await
            .expect("rest of the body");
        let mut answer = vec![0; 1024];
        let n = stream.read(&mut answer).await.expect("answer");
        let head = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
        let closed = matches!(
            tokio::time::timeout(Duration::from_millis(500), stream.read(&mut answer)).await,
            Ok(Ok(0))
        );
        (head, closed, stream)
    };

    let (head, closed, _first) = exchange("roomy").await;
    assert!(head.starts_with("http/1.1 202"), "{head}");
    assert!(
        !closed && !head.contains("connection: close"),
        "kept alive: {head}"
    );

    let mut held = Vec::new();
    for delivery in ["held-0", "held-1"] {
        held.push(s.half_sent(delivery, body).await);
    }
    // Three of four places taken: this one is the last.
    let (head, closed, _last) = exchange("pressed").await;
    assert!(head.starts_with("http/1.1 202"), "{head}");
    assert!(
        closed && head.contains("connection: close"),
        "one request, then closed: {head}"
    );
}
