//! The other hot pure functions of the webhook path: route filter matching
//! (header tests, JSON pointer tests that parse the body once per event) and
//! the retry schedule (backoff with jitter, `Retry-After` parsing).
//! Run: `cargo bench --bench routing`.

use std::path::Path;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use rand::SeedableRng;
use rand::rngs::StdRng;
use switchyard::config::{Config, RetryPolicy};
use switchyard::delivery::{next_delay, parse_retry_after};
use switchyard::ingest::EventView;

/// One source with routes whose filters cover each kind of test.
const CONFIG: &str = r#"
[owners.o]
team = "T"
contact = "t@example.com"

[sources.github]
path = "/github"
scheme = "github"
secrets = ["s"]

[[routes]]
name = "header-equals"
source = "github"
owner = "o"
description = "d"
on_failure = "f"
filter = { header = "X-GitHub-Event", equals = "push" }
destination = { url = "http://127.0.0.1:9/a" }

[[routes]]
name = "json-prefix"
source = "github"
owner = "o"
description = "d"
on_failure = "f"
filter = { json_pointer = "/action", prefix = "open" }
destination = { url = "http://127.0.0.1:9/b" }

[[routes]]
name = "any-of-three"
source = "github"
owner = "o"
description = "d"
on_failure = "f"
filter = { any = [
  { header = "X-GitHub-Event", equals = "issues" },
  { header = "X-GitHub-Event", equals = "pull_request" },
  { json_pointer = "/repository/full_name", any_of = ["acme/api", "acme/web"] },
] }
destination = { url = "http://127.0.0.1:9/c" }
"#;

/// A 1 KiB JSON body with the fields the filters read.
fn body() -> Vec<u8> {
    let mut body = br#"{"action":"opened","repository":{"full_name":"acme/web"},"pad":""#.to_vec();
    body.resize(1022, b'x');
    body.extend_from_slice(b"\"}");
    body
}

fn bench_filters(c: &mut Criterion) {
    let config: Config =
        switchyard::config::from_toml(CONFIG, Path::new("bench.toml"), Path::new("."), &|_| None)
            .expect("bench config");
    let mut headers = HeaderMap::new();
    headers.insert("x-github-event", HeaderValue::from_static("push"));
    let body = body();
    let mut group = c.benchmark_group("filter, 1 KiB event");
    for route in &config.routes {
        group.bench_function(BenchmarkId::from_parameter(&route.name), |b| {
            b.iter(|| {
                // A fresh view per event, as ingest does: JSON is parsed here.
                let view = EventView::new(&headers, &body);
                view.matches(std::hint::black_box(route.filter.as_ref()))
            })
        });
    }
    group.bench_function("all three routes, one event", |b| {
        b.iter(|| {
            let view = EventView::new(&headers, &body);
            config
                .routes
                .iter()
                .filter(|route| view.matches(route.filter.as_ref()))
                .count()
        })
    });
    group.finish();
}

fn bench_retry(c: &mut Criterion) {
    let policy = RetryPolicy {
        max_attempts: 8,
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(300),
    };
    let mut rng = StdRng::seed_from_u64(7);
    let mut group = c.benchmark_group("retry schedule");
    group.bench_function("next_delay attempt 5", |b| {
        b.iter(|| next_delay(&policy, std::hint::black_box(5), None, &mut rng))
    });
    let now = SystemTime::now();
    group.bench_function("parse_retry_after seconds", |b| {
        b.iter(|| parse_retry_after(std::hint::black_box("120"), now))
    });
    group.bench_function("parse_retry_after http date", |b| {
        b.iter(|| parse_retry_after(std::hint::black_box("Wed, 21 Oct 2037 07:28:00 GMT"), now))
    });
    group.finish();
}

criterion_group!(benches, bench_filters, bench_retry);
criterion_main!(benches);
