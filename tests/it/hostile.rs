//! Hostile-input catalogue (issue 8): many kinds of bad request, each on a
//! fresh connection, each answered with its specific refusal (or, for
//! protocol abuse, a 4xx from hyper or a closed connection) within a bound;
//! after every one a good signed request is still accepted, and the test
//! process's resident memory stays within a generous bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::config::{ConfigBuilder, Owner, Route, Source};
use crate::support::gateway::{TestGateway, config_toml, parse_config};
use crate::support::github;
use crate::support::redis::RedisServer;
use crate::support::signing::{self, Algorithm};

const GITHUB_SECRET: &str = "hostile-github-secret";
const STRIPE_SECRET: &str = "whsec_hostile_stripe";
const SLACK_SECRET: &str = "hostile-slack-secret";
const SHOPIFY_SECRET: &str = "hostile-shopify-secret";
/// Standard Webhooks key bytes; the configured secret is `whsec_<base64>`.
const SVIX_KEY: &[u8] = b"hostile-standard-webhooks-key-32";
const ROUTE: &str = "opened-to-tracker";
const MAX_BODY: usize = 65536;
/// Every case must end (answer or close) within this.
const BOUND: Duration = Duration::from_secs(15);

fn extra() -> String {
    let svix_secret = format!("whsec_{}", B64.encode(SVIX_KEY));
    ConfigBuilder::new()
        .delivery("workers", "false")
        .owner(Owner::new("sec", "Security", "sec@example.com"))
        .source(Source::github(GITHUB_SECRET))
        .source(Source::new(
            "stripe",
            "/hooks/stripe",
            "stripe",
            &[STRIPE_SECRET],
        ))
        .source(Source::new(
            "slack",
            "/hooks/slack",
            "slack",
            &[SLACK_SECRET],
        ))
        .source(Source::new(
            "shopify",
            "/hooks/shopify",
            "shopify",
            &[SHOPIFY_SECRET],
        ))
        .source(Source::new(
            "svix",
            "/hooks/svix",
            "standard-webhooks",
            &[&svix_secret],
        ))
        .route(
            Route::new(ROUTE, "github", "sec", "http://127.0.0.1:9/tracker")
                .description("Opened issues go to the tracker")
                .on_failure("Tracker stale")
                .with(
                    "filter",
                    r#"{ json_pointer = "/action", equals = "opened" }"#,
                ),
        )
        .route(
            Route::new("stripe-all", "stripe", "sec", "http://127.0.0.1:9/stripe")
                .description("Stripe events")
                .on_failure("Billing stale"),
        )
        .build()
}

/// Hex HMAC-SHA256 of `parts`: timestamps here may be any text, so the
/// providers' signers (which take numbers) do not fit.
fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(signing::hmac(Algorithm::Sha256, key, parts))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

static DELIVERY: AtomicU64 = AtomicU64::new(0);

fn delivery_id() -> String {
    format!("hostile-{}", DELIVERY.fetch_add(1, Ordering::Relaxed))
}

/// A complete HTTP/1.1 request with a correct Content-Length.
fn request(method: &str, target: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn h(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_owned(), value.into())
}

/// Headers of a GitHub delivery (fresh delivery id) plus `signature` if any.
fn github_headers(signature: Option<String>) -> Vec<(String, String)> {
    let mut headers = vec![
        h("Content-Type", "application/json"),
        h("X-GitHub-Event", "issues"),
        h("X-GitHub-Delivery", delivery_id()),
    ];
    if let Some(signature) = signature {
        headers.push(h("X-Hub-Signature-256", signature));
    }
    headers
}

fn github(signature: Option<String>, body: &[u8]) -> Vec<u8> {
    request("POST", "/hooks/github", &github_headers(signature), body)
}

/// A GitHub delivery signed correctly over `body`.
fn github_signed(body: &[u8]) -> Vec<u8> {
    github(Some(github::signature(GITHUB_SECRET, body)), body)
}

const STRIPE_BODY: &[u8] = br#"{"id":"evt_hostile","type":"invoice.paid"}"#;

/// A Stripe delivery whose `v1` is a correct HMAC over `t` (whatever its
/// text), so the timestamp check itself is reached.
fn stripe_with_t(t: &str) -> Vec<u8> {
    let v1 = hmac_hex(STRIPE_SECRET.as_bytes(), &[t.as_bytes(), b".", STRIPE_BODY]);
    request(
        "POST",
        "/hooks/stripe",
        &[
            h("Content-Type", "application/json"),
            h("Stripe-Signature", format!("t={t},v1={v1}")),
        ],
        STRIPE_BODY,
    )
}

/// A Slack delivery signed correctly over the timestamp text `ts`.
fn slack_with_ts(ts: &str) -> Vec<u8> {
    let body = b"token=x&team_id=T1";
    let sig = hmac_hex(
        SLACK_SECRET.as_bytes(),
        &[b"v0:", ts.as_bytes(), b":", body],
    );
    request(
        "POST",
        "/hooks/slack",
        &[
            h("Content-Type", "application/x-www-form-urlencoded"),
            h("X-Slack-Request-Timestamp", ts),
            h("X-Slack-Signature", format!("v0={sig}")),
        ],
        body,
    )
}

/// A Standard Webhooks delivery with `signature` (None: signed correctly).
fn svix(ts: &str, signature: Option<&str>) -> Vec<u8> {
    let body = br#"{"type":"user.created"}"#;
    let id = delivery_id();
    let good = format!(
        "v1,{}",
        B64.encode(signing::hmac(
            Algorithm::Sha256,
            SVIX_KEY,
            &[id.as_bytes(), b".", ts.as_bytes(), b".", body]
        ))
    );
    request(
        "POST",
        "/hooks/svix",
        &[
            h("Content-Type", "application/json"),
            h("webhook-id", id.clone()),
            h("webhook-timestamp", ts),
            h("webhook-signature", signature.map_or(good, str::to_owned)),
        ],
        body,
    )
}

/// A request head (no body) for `/hooks/github`, signed over `signed_body`,
/// with the given framing headers instead of a true Content-Length.
fn github_head(framing: &str, signed_body: &[u8]) -> Vec<u8> {
    let mut out = String::from("POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in github_headers(Some(github::signature(GITHUB_SECRET, signed_body))) {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(framing);
    out.push_str("\r\n");
    out.into_bytes()
}

/// How the bytes of a case are sent.
enum Send {
    /// Everything at once; the write side stays open.
    Whole(Vec<u8>),
    /// Everything at once, then the write side is shut down.
    ThenClose(Vec<u8>),
    /// The bytes, then one more byte of `trickle` every 100 ms, never ending
    /// the headers (slowloris).
    Trickle(Vec<u8>, Vec<u8>),
}

/// What the gateway did.
#[derive(Debug)]
enum Outcome {
    Answer {
        status: u16,
        error: Option<String>,
        routes: Option<Vec<String>>,
    },
    Closed,
    Hung,
}

/// What a case must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This status with this JSON `error` code.
    Error(u16, &'static str),
    /// 202; `routed`: whether the filtered route matched.
    Accepted { routed: bool },
    /// Protocol abuse: a closed connection or one of these statuses.
    CloseOr(&'static [u16]),
}

impl Expect {
    fn holds(self, outcome: &Outcome) -> bool {
        match (self, outcome) {
            (
                Expect::Error(want, code),
                Outcome::Answer {
                    status,
                    error: Some(error),
                    ..
                },
            ) => *status == want && error == code,
            (
                Expect::Accepted { routed },
                Outcome::Answer {
                    status: 202,
                    routes: Some(routes),
                    ..
                },
            ) => routes.iter().any(|r| r == ROUTE) == routed,
            (Expect::CloseOr(_), Outcome::Closed) => true,
            (Expect::CloseOr(allowed), Outcome::Answer { status, .. }) => allowed.contains(status),
            _ => false,
        }
    }
}

struct Case {
    name: &'static str,
    send: Send,
    expect: Expect,
}

fn case(name: &'static str, send: Send, expect: Expect) -> Case {
    Case { name, send, expect }
}

/// Parses what the gateway sent back, if it is a whole response.
fn parse(buf: &[u8], eof: bool) -> Option<Outcome> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return eof.then_some(Outcome::Closed);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = &buf[end + 4..];
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let complete = match length {
        Some(length) => body.len() >= length,
        None if head.contains("transfer-encoding: chunked") => body.ends_with(b"0\r\n\r\n"),
        None => eof,
    };
    if !complete && !eof {
        return None;
    }
    let text = String::from_utf8_lossy(body);
    let json: Value = match (text.find('{'), text.rfind('}')) {
        (Some(a), Some(b)) if a < b => serde_json::from_str(&text[a..=b]).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    Some(Outcome::Answer {
        status,
        error: json["error"].as_str().map(str::to_owned),
        routes: json["routes"].as_array().map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        }),
    })
}

/// Sends one case on a fresh connection and waits (up to `BOUND`) for an
/// answer or a close.
async fn run_case(gateway: &TestGateway, send: Send) -> Outcome {
    let stream = TcpStream::connect(gateway.public).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    // The gateway may answer (and close) before everything is written:
    // write concurrently and ignore write errors.
    let writing = tokio::spawn(async move {
        match send {
            Send::Whole(bytes) => {
                let _ = writer.write_all(&bytes).await;
            }
            Send::ThenClose(bytes) => {
                let _ = writer.write_all(&bytes).await;
                let _ = writer.shutdown().await;
            }
            Send::Trickle(head, trickle) => {
                let _ = writer.write_all(&head).await;
                for byte in trickle {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if writer.write_all(&[byte]).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Keep the write half open until the case is over.
        writer
    });
    let reading = async {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return parse(&buf, true).unwrap_or(Outcome::Closed),
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(outcome) = parse(&buf, false) {
                        return outcome;
                    }
                }
            }
        }
    };
    let outcome = tokio::time::timeout(BOUND, reading)
        .await
        .unwrap_or(Outcome::Hung);
    writing.abort();
    outcome
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

fn fillers(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| h(&format!("X-Filler-{i}"), i.to_string()))
        .collect()
}

fn cases() -> Vec<Case> {
    let body = br#"{"action":"opened"}"#.to_vec();
    let sha1_hex = "a".repeat(40);
    let now = now();
    let over = vec![b'x'; MAX_BODY + 1];
    let mut many_headers = String::from("POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for i in 0..120 {
        many_headers.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    many_headers.push_str("Content-Length: 0\r\n\r\n");
    let huge_value = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
        "v".repeat(512 * 1024)
    );
    let huge_name = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nX-{}: v\r\nContent-Length: 0\r\n\r\n",
        "n".repeat(512 * 1024)
    );
    let long_target = format!(
        "POST /hooks/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let mut over_chunked = github_head("Transfer-Encoding: chunked\r\n", &over);
    over_chunked.extend_from_slice(format!("{:x}\r\n", over.len()).as_bytes());
    over_chunked.extend_from_slice(&over);
    over_chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let mut over_declared = github_head(&format!("Content-Length: {}\r\n", over.len()), &over);
    over_declared.extend_from_slice(&over);
    let mut lying_close = github_head("Content-Length: 1000\r\n", &body);
    lying_close.extend_from_slice(&body);
    let lying_open = lying_close.clone();
    let mut chunked_open = github_head("Transfer-Encoding: chunked\r\n", &body);
    chunked_open.extend_from_slice(b"5\r\n{\"act");
    let mut bad_chunk = github_head("Transfer-Encoding: chunked\r\n", &body);
    bad_chunk.extend_from_slice(b"zz\r\nhello\r\n0\r\n\r\n");
    let mut both_framings = github_head(
        &format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            body.len()
        ),
        &body,
    );
    both_framings.extend_from_slice(&body);
    let mut two_lengths = github_head("Content-Length: 19\r\nContent-Length: 20\r\n", &body);
    two_lengths.extend_from_slice(&body);
    let mut negative_length = github_head("Content-Length: -1\r\n", &body);
    negative_length.extend_from_slice(&body);
    let invalid_utf8 = b"{\"action\":\"\xff\xfe opened\"}".to_vec();
    let nested = vec![b'['; 65000];
    let valid_sig = github::signature(GITHUB_SECRET, &body);
    let repeated_bad_first = {
        let mut headers = github_headers(Some(format!("sha256={}", "0".repeat(64))));
        headers.push(h("X-Hub-Signature-256", valid_sig.clone()));
        request("POST", "/hooks/github", &headers, &body)
    };
    let repeated_good_first = {
        let mut headers = github_headers(Some(valid_sig.clone()));
        headers.push(h(
            "X-Hub-Signature-256",
            format!("sha256={}", "0".repeat(64)),
        ));
        request("POST", "/hooks/github", &headers, &body)
    };
    let shopify_bad_b64 = request(
        "POST",
        "/hooks/shopify",
        &[
            h("Content-Type", "application/json"),
            h("X-Shopify-Webhook-Id", delivery_id()),
            h("X-Shopify-Hmac-Sha256", "!!!not*base64!!!"),
        ],
        &body,
    );
    let now_s = now.to_string();

    use Expect::*;
    use Send::*;
    vec![
        // Signatures.
        case("no signature", Whole(github(None, &body)), Error(401, "missing_signature")),
        case(
            "empty signature",
            Whole(github(Some(String::new()), &body)),
            Error(401, "malformed_signature"),
        ),
        case(
            "garbage signature",
            Whole(github(Some("hello, world".into()), &body)),
            Error(401, "malformed_signature"),
        ),
        case(
            "huge 64 KiB signature header",
            Whole(github(Some(format!("sha256={}", "a".repeat(64 * 1024))), &body)),
            Error(401, "malformed_signature"),
        ),
        case(
            "repeated signature headers (forged first, valid second)",
            Whole(repeated_bad_first),
            Error(401, "malformed_signature"),
        ),
        case(
            "repeated signature headers (valid first, forged second)",
            Whole(repeated_good_first),
            Error(401, "malformed_signature"),
        ),
        case(
            "wrong scheme prefix sha1=",
            Whole(github(Some(format!("sha1={sha1_hex}")), &body)),
            Error(401, "malformed_signature"),
        ),
        case(
            "bad hex",
            Whole(github(Some(format!("sha256={}", "zz".repeat(32))), &body)),
            Error(401, "malformed_signature"),
        ),
        case(
            "well-formed but wrong signature",
            Whole(github(Some(format!("sha256={}", "0".repeat(64))), &body)),
            Error(401, "invalid_signature"),
        ),
        case(
            "non-ASCII signature bytes",
            Whole(github(Some("sha256=\u{e9}\u{e9}".into()), &body)),
            Error(401, "malformed_signature"),
        ),
        case(
            "shopify bad base64",
            Whole(shopify_bad_b64),
            Error(401, "malformed_signature"),
        ),
        case(
            "standard-webhooks bad base64",
            Whole(svix(&now_s, Some("v1,!!!not*base64!!!"))),
            Error(401, "malformed_signature"),
        ),
        case(
            "standard-webhooks timestamp overflow",
            Whole(svix("99999999999999999999", None)),
            Error(401, "malformed_signature"),
        ),
        case(
            "standard-webhooks stale timestamp",
            Whole(svix(&(now - 3600).to_string(), None)),
            Error(401, "timestamp_out_of_tolerance"),
        ),
        // Timestamps.
        case(
            "stripe timestamp overflow",
            Whole(stripe_with_t("99999999999999999999")),
            Error(401, "malformed_signature"),
        ),
        case(
            "stripe timestamp i64::MAX",
            Whole(stripe_with_t(&i64::MAX.to_string())),
            Error(401, "timestamp_out_of_tolerance"),
        ),
        case(
            "stripe negative timestamp",
            Whole(stripe_with_t("-1")),
            Error(401, "malformed_signature"),
        ),
        case(
            "stripe non-numeric timestamp",
            Whole(stripe_with_t("yesterday")),
            Error(401, "malformed_signature"),
        ),
        case(
            "stripe empty timestamp",
            Whole(stripe_with_t("")),
            Error(401, "malformed_signature"),
        ),
        case(
            "stripe stale timestamp",
            Whole(stripe_with_t(&(now - 3600).to_string())),
            Error(401, "timestamp_out_of_tolerance"),
        ),
        case(
            "stripe future timestamp",
            Whole(stripe_with_t(&(now + 3600).to_string())),
            Error(401, "timestamp_out_of_tolerance"),
        ),
        case(
            "slack timestamp overflow",
            Whole(slack_with_ts("99999999999999999999")),
            Error(401, "malformed_signature"),
        ),
        case(
            "slack stale timestamp",
            Whole(slack_with_ts(&(now - 3600).to_string())),
            Error(401, "timestamp_out_of_tolerance"),
        ),
        // Bodies.
        case(
            "body over the limit, declared",
            Whole(over_declared),
            Error(413, "body_too_large"),
        ),
        case(
            "body over the limit, chunked",
            Whole(over_chunked),
            Error(413, "body_too_large"),
        ),
        case(
            "Content-Length lying (more than sent), then close",
            ThenClose(lying_close),
            CloseOr(&[400]),
        ),
        case(
            "Content-Length lying, connection held open",
            Whole(lying_open),
            Error(408, "request_timeout"),
        ),
        case(
            "chunked body never finishing",
            Whole(chunked_open),
            Error(408, "request_timeout"),
        ),
        case("invalid chunk framing", Whole(bad_chunk), CloseOr(&[400])),
        case(
            "slowloris: headers trickled a byte per 100 ms, never finished",
            Trickle(
                b"POST /hooks/github HTTP/1.1\r\nHost: x\r\n".to_vec(),
                "X-Slow: ".bytes().chain(std::iter::repeat_n(b'a', 140)).collect(),
            ),
            // hyper's header-read timeout (request_timeout, 2 s here) closes it.
            CloseOr(&[408]),
        ),
        case(
            "both Content-Length and Transfer-Encoding",
            Whole(both_framings),
            CloseOr(&[400]),
        ),
        case(
            "two different Content-Length headers",
            Whole(two_lengths),
            CloseOr(&[400]),
        ),
        case(
            "negative Content-Length",
            Whole(negative_length),
            CloseOr(&[400]),
        ),
        case(
            "invalid UTF-8 body on a JSON-pointer route",
            Whole(github_signed(&invalid_utf8)),
            Accepted { routed: false },
        ),
        case(
            "non-JSON body on a JSON-pointer route",
            Whole(github_signed(b"action=opened")),
            Accepted { routed: false },
        ),
        case(
            "65,000 nested '[' on a JSON-pointer route",
            Whole(github_signed(&nested)),
            Accepted { routed: false },
        ),
        // Methods and paths.
        case(
            "unknown method BREW",
            Whole(request("BREW", "/hooks/github", &[], b"")),
            Error(405, "method_not_allowed"),
        ),
        case(
            "GET on a source path",
            Whole(request("GET", "/hooks/github", &[], b"")),
            Error(405, "method_not_allowed"),
        ),
        case(
            "path traversal /hooks/../admin/routes",
            Whole(request("POST", "/hooks/../admin/routes", &[], b"")),
            Error(404, "unknown_source"),
        ),
        case(
            "path traversal %2e%2e",
            Whole(request("POST", "/hooks/%2e%2e/admin/routes", &[], b"")),
            Error(404, "unknown_source"),
        ),
        case(
            "path traversal into a source /x/../hooks/github",
            Whole(request("POST", "/x/../hooks/github", &[], b"")),
            Error(404, "unknown_source"),
        ),
        case(
            "encoded source path /hooks/%67ithub",
            Whole(request("POST", "/hooks/%67ithub", &[], b"")),
            Error(404, "unknown_source"),
        ),
        case(
            "absolute-form URI to another host",
            Whole(request("POST", "http://evil.example/admin/routes", &[], b"")),
            Error(404, "unknown_source"),
        ),
        case(
            "unknown source",
            Whole(request("POST", "/hooks/nope", &[], b"")),
            Error(404, "unknown_source"),
        ),
        // Protocol abuse.
        case(
            "90 extra headers (under hyper's 100), signed",
            Whole(request(
                "POST",
                "/hooks/github",
                &[github_headers(Some(valid_sig.clone())), fillers(90)].concat(),
                &body,
            )),
            Accepted { routed: true },
        ),
        case(
            "200 KiB header value (under hyper's buffer), signed",
            Whole(request(
                "POST",
                "/hooks/github",
                &[
                    github_headers(Some(valid_sig.clone())),
                    vec![h("X-Big", "v".repeat(200 * 1024))],
                ]
                .concat(),
                &body,
            )),
            Accepted { routed: true },
        ),
        case(
            "more headers than hyper allows (120)",
            Whole(many_headers.into_bytes()),
            CloseOr(&[431]),
        ),
        case(
            "512 KiB header value",
            Whole(huge_value.into_bytes()),
            CloseOr(&[431]),
        ),
        case(
            "512 KiB header name",
            Whole(huge_name.into_bytes()),
            CloseOr(&[431]),
        ),
        case(
            "512 KiB request target",
            Whole(long_target.into_bytes()),
            CloseOr(&[414, 431]),
        ),
        case(
            "header name with a space",
            Whole(b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nBad Name: v\r\nContent-Length: 0\r\n\r\n".to_vec()),
            CloseOr(&[400]),
        ),
        case(
            "not HTTP at all (TLS ClientHello bytes)",
            Whole(vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]),
            CloseOr(&[400]),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_inputs_get_their_refusals_and_never_hurt_the_next_request() {
    let started = Instant::now();
    let rss_before = vm_rss_kib();
    let redis = RedisServer::start();
    let toml = config_toml(&redis.url(), &extra()).replace(
        "shutdown_timeout = \"5s\"",
        "shutdown_timeout = \"5s\"\nmax_body_bytes = 65536\nrequest_timeout = \"2s\"",
    );
    let gateway = TestGateway::start(parse_config(&toml)).await;
    let url = gateway.public_url("/hooks/github");
    let good_body = br#"{"action":"opened"}"#;

    let cases = cases();
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    let mut failures = Vec::new();
    let mut report = Vec::new();
    let mut rss_peak = rss_before;
    for case in cases {
        let t = Instant::now();
        let outcome = run_case(&gateway, case.send).await;
        let took = t.elapsed();
        let ok = case.expect.holds(&outcome) && took < BOUND;
        report.push(format!(
            "{:<55} {:>6.2}s {:?}",
            case.name,
            took.as_secs_f64(),
            outcome
        ));
        if !ok {
            failures.push(format!(
                "{}: expected {:?}, got {outcome:?} in {took:?}",
                case.name, case.expect
            ));
        }
        // A good request on a fresh connection right after.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(BOUND)
            .build()
            .expect("client");
        let (status, answer) = github::post(
            &client,
            &url,
            GITHUB_SECRET,
            "issues",
            &delivery_id(),
            good_body,
        )
        .await;
        if status != 202 || answer["routes"] != serde_json::json!([ROUTE]) {
            failures.push(format!(
                "good request after {:?}: {status} {answer}",
                case.name
            ));
        }
        rss_peak = rss_peak.max(vm_rss_kib());
    }
    let rss_after = vm_rss_kib();
    eprintln!("hostile catalogue:\n{}", report.join("\n"));
    eprintln!(
        "VmRSS before {rss_before} KiB, peak {rss_peak} KiB, after {rss_after} KiB; \
         {} s in all",
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    assert!(
        rss_peak.saturating_sub(rss_before) < 200 * 1024,
        "RSS grew from {rss_before} KiB to {rss_peak} KiB"
    );
    gateway.stop().await.expect("gateway stops cleanly");
}

/// The head of `request` (everything up to the blank line) with
/// `Expect: 100-continue` added: what a client that waits before sending its
/// body writes first.
fn expecting_continue(request: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let end = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a request head");
    let mut head = request[..end].to_vec();
    head.extend_from_slice(b"\r\nExpect: 100-continue\r\n\r\n");
    (head, request[end + 4..].to_vec())
}

/// What the gateway sends after `head` until its first line is complete
/// (within 5 s); it may hold more than that line.
async fn first_answer(stream: &mut TcpStream, head: &[u8]) -> String {
    stream.write_all(head).await.expect("write the head");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the gateway answers the head alone");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The first line of `answer`.
fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or_default()
}

#[tokio::test]
async fn a_request_without_its_signature_headers_is_refused_before_100_continue() {
    let redis = RedisServer::start();
    let gateway = TestGateway::start(parse_config(&config_toml(&redis.url(), &extra()))).await;
    let body = br#"{"action":"opened"}"#;
    let without = |request: Vec<u8>, header: &str| -> Vec<u8> {
        let text = String::from_utf8_lossy(&request).into_owned();
        let kept: Vec<&str> = text
            .split("\r\n")
            .filter(|line| {
                !line
                    .to_ascii_lowercase()
                    .starts_with(&format!("{}:", header.to_ascii_lowercase()))
            })
            .collect();
        kept.join("\r\n").into_bytes()
    };
    for (name, request) in [
        ("github", github(None, body)),
        (
            "stripe",
            without(stripe_with_t(&now().to_string()), "Stripe-Signature"),
        ),
        (
            "slack",
            without(
                slack_with_ts(&now().to_string()),
                "X-Slack-Request-Timestamp",
            ),
        ),
        (
            "svix",
            without(svix(&now().to_string(), None), "webhook-signature"),
        ),
    ] {
        let (head, _) = expecting_continue(&request);
        let mut stream = TcpStream::connect(gateway.public).await.expect("connect");
        let mut answer = first_answer(&mut stream, &head).await;
        assert_eq!(
            status_line(&answer),
            "HTTP/1.1 401 Unauthorized",
            "{name}: refused from the head, never invited to send the body"
        );
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        answer.push_str(&String::from_utf8_lossy(&rest));
        assert!(
            answer.contains(r#""error":"missing_signature""#),
            "{name}: {answer}"
        );
    }

    // With its signature, the same client is invited, sends, and is accepted.
    let (head, rest) = expecting_continue(&github_signed(body));
    let mut stream = TcpStream::connect(gateway.public).await.expect("connect");
    assert_eq!(
        status_line(&first_answer(&mut stream, &head).await),
        "HTTP/1.1 100 Continue"
    );
    stream.write_all(&rest).await.expect("write the body");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(
        String::from_utf8_lossy(&answer).contains("HTTP/1.1 202"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    gateway.stop().await.expect("clean stop");
}
