//! Admin token check timing: the time to judge a presented token must not
//! depend on how much of a configured token it matches, nor on the length of
//! the configured tokens; only on the presented token's own length, which the
//! caller knows anyway. Each group's lines should agree within noise.
//! Run: `cargo bench --bench admin_auth`; figures in RELIABILITY.md.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use switchyard::admin::auth::Tokens;
use switchyard::config::{AdminToken, Secret};

/// The configured token of the first group: 32 bytes.
const TOKEN: &[u8] = b"0123456789abcdef0123456789abcdef";

fn tokens(secrets: &[&[u8]]) -> Tokens {
    let configured: Vec<AdminToken> = secrets
        .iter()
        .enumerate()
        .map(|(i, secret)| AdminToken {
            name: format!("token-{i}"),
            secret: Secret::new(secret.to_vec()),
        })
        .collect();
    Tokens::new(&configured)
}

fn bench(c: &mut Criterion) {
    // Same presented length, different amounts matching.
    let configured = tokens(&[TOKEN, b"another-configured-token-of-ops"]);
    let mut group = c.benchmark_group("presented 32 bytes vs a 32-byte token");
    let mut prefix = TOKEN.to_vec();
    prefix[31] = b'X';
    let mut first_wrong = TOKEN.to_vec();
    first_wrong[0] = b'X';
    for (label, presented) in [
        ("exact", TOKEN.to_vec()),
        ("31-byte prefix matches", prefix),
        ("first byte differs", first_wrong),
        ("nothing in common", vec![b'z'; 32]),
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(label), &presented, |b, p| {
            b.iter(|| configured.name_of(std::hint::black_box(p)))
        });
    }
    group.finish();

    // Same (wrong) presented token, configured tokens of different lengths.
    let mut group = c.benchmark_group("presented 32 bytes vs configured token length");
    for length in [8usize, 32, 256, 4096] {
        let configured = tokens(&[&vec![b'a'; length]]);
        let presented = vec![b'b'; 32];
        group.bench_with_input(BenchmarkId::from_parameter(length), &presented, |b, p| {
            b.iter(|| configured.name_of(std::hint::black_box(p)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
