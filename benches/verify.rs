//! Signature verification cost per scheme at 1 KiB and 64 KiB, next to a bare
//! HMAC over the same bytes: the difference is the parsing overhead.
//! Run: `cargo bench --bench verify`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderValue, Uri};
use sha2::Sha256;
use switchyard::signature::{SignedRequest, Verifier, verifier_for};

const SECRET: &str = "bench-secret";
/// Standard Webhooks secret: "whsec_" + base64("bench-secret").
const WHSEC: &str = "whsec_YmVuY2gtc2VjcmV0";

const CONFIG: &str = r#"
[sources.github]
path = "/github"
scheme = "github"
secrets = ["bench-secret"]
[sources.stripe]
path = "/stripe"
scheme = "stripe"
secrets = ["bench-secret"]
[sources.slack]
path = "/slack"
scheme = "slack"
secrets = ["bench-secret"]
[sources.shopify]
path = "/shopify"
scheme = "shopify"
secrets = ["bench-secret"]
[sources.standard-webhooks]
path = "/sw"
scheme = "standard-webhooks"
secrets = ["whsec_YmVuY2gtc2VjcmV0"]
[sources.gitlab]
path = "/gitlab"
scheme = "gitlab"
secrets = ["bench-secret"]
[sources.hmac]
path = "/hmac"
scheme = "hmac"
secrets = ["bench-secret"]
header = "x-signature"
algorithm = "sha256"
encoding = "hex"
"#;

fn mac(parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// A body of `size` bytes that is JSON with an `id` (Stripe reads it).
fn body(size: usize) -> Vec<u8> {
    let head = br#"{"id":"evt_bench","pad":""#;
    let mut body = head.to_vec();
    body.resize(size - 2, b'x');
    body.extend_from_slice(b"\"}");
    body
}

fn headers_for(scheme: &str, body: &[u8], now: u64) -> HeaderMap {
    let ts = now.to_string();
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    let pairs: Vec<(&str, String)> = match scheme {
        "github" => vec![
            (
                "x-hub-signature-256",
                format!("sha256={}", hex::encode(mac(&[body]))),
            ),
            ("x-github-delivery", "d".into()),
        ],
        "stripe" => vec![(
            "stripe-signature",
            format!(
                "t={ts},v1={}",
                hex::encode(mac(&[ts.as_bytes(), b".", body]))
            ),
        )],
        "slack" => vec![
            (
                "x-slack-signature",
                format!(
                    "v0={}",
                    hex::encode(mac(&[b"v0:", ts.as_bytes(), b":", body]))
                ),
            ),
            ("x-slack-request-timestamp", ts.clone()),
        ],
        "shopify" => vec![("x-shopify-hmac-sha256", b64(mac(&[body])))],
        "standard-webhooks" => vec![
            ("webhook-id", "msg_1".into()),
            ("webhook-timestamp", ts.clone()),
            (
                "webhook-signature",
                format!("v1,{}", b64(mac(&[b"msg_1.", ts.as_bytes(), b".", body]))),
            ),
        ],
        "gitlab" => vec![("x-gitlab-token", SECRET.into())],
        "hmac" => vec![("x-signature", hex::encode(mac(&[body])))],
        other => panic!("no bench signer for {other}"),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.insert(name, HeaderValue::from_str(&value).expect("header"));
    }
    headers
}

fn verification(c: &mut Criterion) {
    assert_eq!(WHSEC.len(), "whsec_".len() + 16);
    let config =
        switchyard::config::from_toml(CONFIG, Path::new("bench.toml"), Path::new("."), &|_| None)
            .expect("bench config");
    let uri: Uri = "/hooks".parse().expect("uri");
    let now = SystemTime::now();
    let now_secs = now.duration_since(UNIX_EPOCH).expect("clock").as_secs();
    for size in [1024, 64 * 1024] {
        let body = body(size);
        let mut group = c.benchmark_group(format!("verify/{}KiB", size / 1024));
        group.throughput(Throughput::Bytes(size as u64));
        group.measurement_time(Duration::from_secs(3));
        group.bench_function("bare-hmac-sha256", |b| {
            b.iter(|| mac(&[std::hint::black_box(&body)]))
        });
        for (name, source) in &config.sources {
            let verifier: Arc<dyn Verifier> = verifier_for(source);
            let headers = headers_for(name, &body, now_secs);
            let request = SignedRequest {
                headers: &headers,
                uri: &uri,
                body: &body,
            };
            assert!(
                verifier.verify(&request, now).is_ok(),
                "{name} bench request verifies"
            );
            group.bench_with_input(BenchmarkId::from_parameter(name), &request, |b, request| {
                b.iter(|| verifier.verify(std::hint::black_box(request), now))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, verification);
criterion_main!(benches);
