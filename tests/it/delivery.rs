//! The delivery engine against a real receiver: exact bytes, fan-out,
//! retries with backoff and Retry-After, timeouts, rejections and dead letters.

use std::time::Duration;

use redis::AsyncCommands;
use switchyard::delivery::{Outbound, Outcome};

use crate::support::config::{ConfigBuilder, Owner, Route, Source, quoted};
use crate::support::env::TestEnv;
use crate::support::gateway::{TestGateway, config_toml, config_toml_on, parse_config};
use crate::support::receiver::{Receiver, Reply};
use crate::support::redis::RedisServer;
use crate::support::signing;
use crate::support::tls::{TrustedTls, UntrustedTls};

pub(crate) const SECRET: &str = "delivery-test-secret";

/// The `devex` owner, one GitHub source and `routes`, with a fast retry
/// policy.
pub(crate) fn config(routes: impl IntoIterator<Item = Route>) -> ConfigBuilder {
    let builder = ConfigBuilder::new()
        .retry(3, "200ms", "3s")
        .owner(Owner::devex().with("runbook", "https://wiki.example.com/devex"))
        .source(Source::github(SECRET));
    routes.into_iter().fold(builder, ConfigBuilder::route)
}

/// Route `r<i>` to `url`, with a 2 s timeout.
pub(crate) fn route(i: usize, url: &str) -> Route {
    Route::new(&format!("r{i}"), "github", "devex", url)
        .description(&format!("route {i}"))
        .destination("timeout", r#""2s""#)
}

/// `n` routes `r0…` to `<receiver>/r0…`.
fn routes_to(receiver: &Receiver, n: usize) -> Vec<Route> {
    (0..n)
        .map(|i| route(i, &receiver.url(&format!("/r{i}"))))
        .collect()
}

/// A gateway on the config `config(receiver)` writes.
async fn setup(config: impl FnOnce(&Receiver) -> ConfigBuilder) -> TestEnv {
    TestEnv::start(SECRET, |receiver, _| config(receiver).build()).await
}

/// [`setup`] on `routes` routes to the receiver.
async fn setup_routes(routes: usize) -> TestEnv {
    setup(|receiver| config(routes_to(receiver, routes))).await
}

/// Posts a signed GitHub-style `push` as [`SENDER_AGENT`]; the event id.
async fn send(s: &TestEnv, delivery: &str, body: &[u8]) -> String {
    let sender = reqwest::Client::builder()
        .user_agent(SENDER_AGENT)
        .build()
        .expect("client");
    s.send_as(&sender, "push", delivery, body).await
}

/// The dead letter hashes in Redis, of every partition.
async fn dead_letters(s: &TestEnv) -> Vec<std::collections::HashMap<String, Vec<u8>>> {
    let mut conn = s.redis.connection().await;
    let mut out = Vec::new();
    for tag in s.redis.partition_tags() {
        let ids: Vec<String> = conn
            .zrange(format!("{{{tag}}}:dead"), 0, -1)
            .await
            .expect("ZRANGE");
        for id in ids {
            out.push(
                conn.hgetall(format!("{{{tag}}}:dead:{id}"))
                    .await
                    .expect("HGETALL"),
            );
        }
    }
    out
}

/// The dead letters once there are any (waits up to 5 s).
async fn first_dead_letters(s: &TestEnv) -> Vec<std::collections::HashMap<String, Vec<u8>>> {
    for _ in 0..50 {
        let dead = dead_letters(s).await;
        if !dead.is_empty() {
            return dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Vec::new()
}

/// Stream entries and scheduled retries left, over every partition.
async fn live_work(s: &TestEnv) -> (usize, usize) {
    let mut conn = s.redis.connection().await;
    let (mut stream, mut retries) = (0, 0);
    for tag in s.redis.partition_tags() {
        let entries: usize = conn.xlen(format!("{{{tag}}}:jobs")).await.expect("XLEN");
        let scheduled: usize = conn.zcard(format!("{{{tag}}}:retry")).await.expect("ZCARD");
        stream += entries;
        retries += scheduled;
    }
    (stream, retries)
}

/// The User-Agent of events sent by these tests.
const SENDER_AGENT: &str = "GitHub-Hookshot/test";

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("utf-8")
}

#[tokio::test]
async fn an_event_is_delivered_once_to_each_route_with_its_bytes_and_headers() {
    let s = setup_routes(3).await;
    let body = b"{\"ref\":\"main\",\"bytes\":\"\xc3\xa9\"}";
    let event_id = send(&s, "d-1", body).await;

    let requests = s.receiver.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(requests.len(), 3);
    let mut paths: Vec<&str> = requests.iter().map(|r| r.uri.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/r0", "/r1", "/r2"], "one delivery per route");
    for request in &requests {
        assert_eq!(&request.body[..], body, "body byte for byte");
        assert_eq!(request.headers["content-type"], "application/json");
        assert_eq!(
            request.headers["x-github-event"], "push",
            "event headers forwarded"
        );
        assert_eq!(
            request.headers["user-agent"], SENDER_AGENT,
            "the sender's User-Agent forwarded"
        );
        assert_eq!(request.headers["x-switchyard-event-id"], event_id.as_str());
        assert_eq!(request.headers["x-switchyard-attempt"], "1");
        let route = request.headers["x-switchyard-route"]
            .to_str()
            .expect("route");
        assert_eq!(format!("/{route}"), request.uri);
    }
    // Nothing more arrives, and nothing is left in Redis.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.receiver.requests().len(), 3, "exactly once");
    assert_eq!(
        live_work(&s).await,
        (0, 0),
        "delivered jobs leave the stream"
    );
}

#[tokio::test]
async fn retryable_failures_are_retried_with_backoff_until_delivered() {
    let s = setup_routes(1).await;
    s.receiver.then(Reply::status(503).times(2));
    send(&s, "d-503", b"{}").await;
    let requests = s.receiver.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(requests.len(), 3);
    let attempts: Vec<&str> = requests
        .iter()
        .map(|r| r.headers["x-switchyard-attempt"].to_str().expect("attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    // Backoff: at least initial_backoff (200 ms) between attempts; the
    // second wait is drawn from [200 ms, 400 ms].
    let first_gap = requests[1].at - requests[0].at;
    let second_gap = requests[2].at - requests[1].at;
    assert!(first_gap >= Duration::from_millis(200), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(200), "{second_gap:?}");
    assert!(
        second_gap < Duration::from_millis(1600),
        "a due retry starts within 1 s: {second_gap:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.receiver.requests().len(),
        3,
        "no attempt after the success"
    );
    assert_eq!(live_work(&s).await, (0, 0));
    assert!(dead_letters(&s).await.is_empty());
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let s = setup_routes(1).await;
    s.receiver.then(Reply::status(429).retry_after("2"));
    send(&s, "d-429", b"{}").await;
    let requests = s.receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "waited {gap:?}, Retry-After said 2 s"
    );
    assert!(gap < Duration::from_secs(4), "{gap:?}");
}

#[tokio::test]
async fn timeouts_and_dropped_connections_are_retried() {
    let s = setup_routes(1).await;
    // The route's timeout is 2 s.
    s.receiver
        .then(Reply::ok().delay(Duration::from_secs(3)))
        .then(Reply::close());
    send(&s, "d-timeout", b"{}").await;
    let requests = s.receiver.wait_for(3, Duration::from_secs(15)).await;
    assert_eq!(
        requests.len(),
        3,
        "timeout, then closed connection, then delivered"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(live_work(&s).await, (0, 0));
    assert!(dead_letters(&s).await.is_empty());
}

#[tokio::test]
async fn a_rejection_is_dead_lettered_at_once_with_its_owner_and_bytes() {
    let s = setup_routes(1).await;
    s.receiver.then(Reply::status(400));
    let body = b"{\"amount\":42}";
    let event_id = send(&s, "d-400", body).await;
    assert_eq!(
        s.receiver.wait_for(1, Duration::from_secs(5)).await.len(),
        1
    );
    let dead = first_dead_letters(&s).await;
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(text(&letter["reason"]), "rejected");
    assert_eq!(text(&letter["status"]), "400");
    assert_eq!(text(&letter["event_id"]), event_id);
    assert_eq!(text(&letter["team"]), "Developer Experience");
    assert_eq!(text(&letter["contact"]), "devex@example.com");
    assert_eq!(text(&letter["runbook"]), "https://wiki.example.com/devex");
    let job = switchyard::queue::Job::decode(&letter["job"]).expect("job");
    assert_eq!(job.body, body[..]);
    assert_eq!(job.history.len(), 1);
    assert_eq!(job.history[0].status, Some(400));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.receiver.requests().len(), 1, "a 400 is not retried");
    assert_eq!(live_work(&s).await, (0, 0));
}

#[tokio::test]
async fn exhausted_jobs_are_dead_lettered_with_every_attempt() {
    let s = setup_routes(1).await;
    s.receiver.otherwise(Reply::status(500));
    send(&s, "d-500", b"{}").await;
    assert_eq!(
        s.receiver.wait_for(3, Duration::from_secs(10)).await.len(),
        3
    );
    let dead = first_dead_letters(&s).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(text(&dead[0]["reason"]), "exhausted");
    let job = switchyard::queue::Job::decode(&dead[0]["job"]).expect("job");
    let statuses: Vec<Option<u16>> = job.history.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [Some(500), Some(500), Some(500)],
        "every attempt recorded"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(s.receiver.requests().len(), 3, "max_attempts = 3");
}

#[tokio::test]
async fn ingest_only_and_delivery_only_processes_split_the_work() {
    let s = setup(|receiver| config(routes_to(receiver, 1)).delivery("workers", "false")).await;
    send(&s, "d-roles", b"{}").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        s.receiver.requests().is_empty(),
        "an ingest-only process delivers nothing"
    );
    assert_eq!(live_work(&s).await, (1, 0), "the job waits in the stream");

    let routes = config(routes_to(&s.receiver, 1)).build();
    let server = config_toml_on(&s.redis.redis_block(), &routes).replace(
        "shutdown_timeout = \"5s\"",
        "shutdown_timeout = \"5s\"\ningest = false",
    );
    let delivery_only = TestGateway::start(parse_config(&server)).await;
    assert_eq!(
        s.receiver.wait_for(1, Duration::from_secs(5)).await.len(),
        1
    );
    let refused = reqwest::Client::new()
        .post(delivery_only.public_url("/hooks/github"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a delivery-only process serves no public listener"
    );
}

#[tokio::test]
async fn signed_destinations_get_standard_webhooks_headers_that_verify() {
    // "whsec_" + base64 of the key, as the receiver would be configured.
    let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let s = setup(|receiver| {
        config([route(0, &receiver.url("/r0")).destination("signing_secret", &quoted(whsec))])
    })
    .await;
    send(&s, "d-signed", b"{\"signed\":true}").await;
    let requests = s.receiver.wait_for(1, Duration::from_secs(5)).await;
    let request = &requests[0];
    // Verify with the gateway's own inbound Standard Webhooks verifier.
    let toml = format!(
        "[sources.sw]\npath = \"/sw\"\nscheme = \"standard-webhooks\"\nsecrets = [\"{whsec}\"]\n"
    );
    let config = parse_config(&config_toml_on(&s.redis.redis_block(), &toml));
    let verifier = switchyard::signature::verifier_for(&config.sources["sw"]);
    let uri: http::Uri = "/sw".parse().expect("uri");
    let signed = switchyard::signature::SignedRequest {
        headers: &request.headers,
        uri: &uri,
        body: &request.body,
    };
    assert_eq!(
        verifier.verify(&signed, std::time::SystemTime::now()),
        Ok(())
    );
    let job_id = request.headers["webhook-id"].to_str().expect("id");
    assert_eq!(verifier.delivery_id(&signed).as_deref(), Some(job_id));
    // And as the receiver's own library would: the same signature.
    let key = signing::whsec_key(whsec).expect("a whsec_ secret");
    let timestamp = request.headers["webhook-timestamp"]
        .to_str()
        .expect("timestamp")
        .parse()
        .expect("unix seconds");
    let expected = signing::standard_webhooks(&key, job_id, timestamp, &request.body);
    let sent = request.headers["webhook-signature"]
        .to_str()
        .expect("signature");
    assert!(
        sent.split(' ').any(|s| s == expected),
        "{sent} lacks {expected}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed_and_retry_on_adds_statuses() {
    let s =
        setup(|receiver| config([route(0, &receiver.url("/r0")).destination("retry_on", "[409]")]))
            .await;
    s.receiver.then(Reply::status(409)).then(Reply::status(302));
    send(&s, "d-302", b"{}").await;
    assert_eq!(
        s.receiver.wait_for(2, Duration::from_secs(5)).await.len(),
        2,
        "409 retried"
    );
    let dead = first_dead_letters(&s).await;
    assert_eq!(dead.len(), 1, "a 302 is a rejection");
    assert_eq!(text(&dead[0]["status"]), "302");
    assert_eq!(text(&dead[0]["reason"]), "rejected");
}

#[tokio::test]
async fn consumers_of_gone_processes_are_pruned_but_not_those_holding_jobs() {
    let redis = RedisServer::start();
    let config = parse_config(&config_toml(&redis.url(), ""));
    let queue = switchyard::queue::Queue::connect_lazy(&config.redis).expect("client");
    let partition = &queue.written_partitions()[0];
    queue.ensure_group(partition).await.expect("group");
    let mut conn = redis.connection().await;
    let _: String = redis::cmd("XADD")
        .arg("{switchyard}:jobs")
        .arg("*")
        .arg("job")
        .arg("x")
        .query_async(&mut conn)
        .await
        .expect("XADD");
    // "holder" takes the entry (pending); "idle" holds nothing.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("delivery")
        .arg("holder")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg("{switchyard}:jobs")
        .arg(">")
        .query_async(&mut conn)
        .await
        .expect("XREADGROUP");
    let _: u8 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg("{switchyard}:jobs")
        .arg("delivery")
        .arg("idle")
        .query_async(&mut conn)
        .await
        .expect("CREATECONSUMER");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pruned = queue
        .prune_consumers(partition, Duration::from_millis(10))
        .await
        .expect("prune");
    assert_eq!(pruned, ["idle"], "the holder keeps its pending job");
}

/// An https destination is reached over TLS with its certificate checked
/// against the web's roots: a self-signed one is refused during the
/// handshake, so not a byte of the event reaches it, and the attempt is a
/// retryable connection error that names the certificate.
#[tokio::test]
async fn https_destinations_with_untrusted_certificates_are_refused() {
    let server = UntrustedTls::start().await;
    let destination = destination(&server.url("/hook"), 5);
    let (outcome, _) = Outbound::new(&[])
        .attempt(&destination, &job())
        .await
        .expect("attempted");

    let Outcome::Retryable {
        status: None,
        error: Some(error),
        retry_after: None,
    } = &outcome
    else {
        panic!("a refused certificate is a retryable connection error, got {outcome:?}");
    };
    assert!(error.starts_with("connect: "), "{error}");
    assert!(error.contains("certificate"), "{error}");
    assert!(server.connections() >= 1, "TLS was attempted");
    assert_eq!(
        server.bytes_read(),
        0,
        "nothing sent in the clear or otherwise"
    );
}

/// A destination whose certificate an authority named in
/// `delivery.tls_ca_file` issued is trusted, and the delivery goes over
/// HTTP/2 when the destination offers it by ALPN, the body byte for byte.
#[tokio::test]
async fn https_destinations_of_a_configured_authority_get_deliveries_over_http2() {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;

    let server = TrustedTls::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("corp-ca.pem");
    std::fs::write(&ca_file, server.ca_pem()).expect("write CA file");
    let s = setup(|_| config([route(0, &server.url("/r0"))]).tls_ca_file(&ca_file)).await;
    send(&s, "d-tls", br#"{"over":"h2"}"#).await;
    let delivered = crate::support::eventually(Duration::from_secs(10), || async {
        !server.received().is_empty()
    })
    .await;
    assert!(delivered, "nothing reached the TLS destination");
    assert_eq!(
        server.received(),
        vec![(
            http::Version::HTTP_2,
            bytes::Bytes::from_static(br#"{"over":"h2"}"#)
        )]
    );

    // The same authority, not configured: refused, and nothing sent.
    let (outcome, _) = Outbound::new(&[])
        .attempt(&destination(&server.url("/direct"), 5), &job())
        .await
        .expect("attempted");
    let Outcome::Retryable {
        error: Some(error), ..
    } = &outcome
    else {
        panic!("an unknown authority is a retryable connection error, got {outcome:?}");
    };
    assert!(error.contains("certificate"), "{error}");
    assert_eq!(server.received().len(), 1);
    let trusted = [CertificateDer::from_pem_slice(server.ca_pem().as_bytes()).expect("CA")];
    let (outcome, _) = Outbound::new(&trusted)
        .attempt(&destination(&server.url("/direct"), 5), &job())
        .await
        .expect("attempted");
    assert_eq!(outcome, Outcome::Delivered { status: 200 });
}

/// A destination built by hand for `Outbound` alone.
fn destination(url: &str, timeout_secs: u64) -> switchyard::config::Destination {
    switchyard::config::Destination {
        url: url.parse().expect("url"),
        uri: url.parse().expect("uri"),
        authorization: None,
        timeout: Duration::from_secs(timeout_secs),
        max_in_flight: 1,
        signing_secret: None,
        forward_headers: None,
        retry_on: Vec::new(),
        rate_limit: None,
    }
}

/// A job built by hand for `Outbound` alone.
fn job() -> switchyard::queue::Job {
    switchyard::queue::Job {
        id: "job-1".to_owned(),
        event_id: "event-1".to_owned(),
        route: "direct".to_owned(),
        source: "github".to_owned(),
        received_ms: 0,
        attempt: 1,
        headers: bytes::Bytes::new(),
        body: bytes::Bytes::from_static(b"{\"secret\":\"payload\"}"),
        history: Vec::new(),
        rate_slot_ms: None,
        ordering_key: None,
    }
}

/// An answer whose head arrives in time but whose body stalls keeps the
/// outcome its status gave: a 200 is delivered (not retried, which would
/// deliver it again), a 503 keeps its status and Retry-After.
#[tokio::test]
async fn a_stalled_answer_body_does_not_change_the_outcome() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    for (head, expected) in [
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart",
            Outcome::Delivered { status: 200 },
        ),
        (
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\ncontent-length: 100\r\n\r\nbusy",
            Outcome::Retryable {
                status: Some(503),
                error: Some("busy".to_owned()),
                retry_after: Some(Duration::from_secs(7)),
            },
        ),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = vec![0; 16 * 1024];
            let _ = stream.read(&mut request).await;
            stream
                .write_all(head.as_bytes())
                .await
                .expect("answer head");
            // The rest of the body never comes; the connection stays open.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let destination = destination(&format!("http://127.0.0.1:{port}/hook"), 1);
        let (outcome, latency) = Outbound::new(&[])
            .attempt(&destination, &job())
            .await
            .expect("attempted");
        server.abort();
        assert_eq!(outcome, expected);
        assert!(
            latency < Duration::from_secs(3),
            "bounded by the deadline: {latency:?}"
        );
    }
}

/// Credentials written in a destination URL are sent as HTTP Basic auth.
#[tokio::test]
async fn credentials_in_the_destination_url_are_sent_as_basic_auth() {
    use base64::Engine as _;
    let s = setup(|receiver| {
        let url = receiver.url("/r0");
        config([route(
            0,
            &url.replace("http://127.0.0.1", "http://hooks:p%40ss@127.0.0.1"),
        )])
    })
    .await;
    send(&s, "d-basic", b"{}").await;
    let requests = s.receiver.wait_for(1, Duration::from_secs(10)).await;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("hooks:p@ss")
    );
    assert_eq!(requests[0].headers["authorization"], expected.as_str());
}
