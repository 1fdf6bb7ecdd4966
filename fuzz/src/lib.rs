//! Shared driver of the signature fuzz targets: the input is split into the
//! scheme's header values and a body, and the verifier must neither panic nor
//! accept (no input can carry a valid MAC of a secret it does not know).

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use switchyard::signature::{SignedRequest, Verifier, verifier_for};

/// A verifier for one source written in TOML (`[sources.fuzz]`).
pub fn verifier(source_toml: &str) -> Arc<dyn Verifier> {
    let config = switchyard::config::from_toml(source_toml, Path::new("fuzz.toml"), Path::new("."), &|_| None)
        .expect("fuzz config is valid");
    verifier_for(&config.sources["fuzz"])
}

/// Runs `verifier` on `data`: NUL-separated header values (in `names`
/// order), then the body.
pub fn run(verifier: &dyn Verifier, names: &[&'static str], data: &[u8]) {
    let mut parts = data.splitn(names.len() + 1, |b| *b == 0);
    let mut headers = HeaderMap::new();
    for name in names {
        if let Some(value) = parts.next().and_then(|v| HeaderValue::from_bytes(v).ok()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    let body = parts.next().unwrap_or_default();
    let uri: Uri = "/hooks/fuzz?bodySHA256=00".parse().expect("static uri");
    let request = SignedRequest { headers: &headers, uri: &uri, body };
    let now = SystemTime::now();
    assert!(verifier.verify(&request, now).is_err(), "fuzz input verified");
    let _ = verifier.delivery_id(&request);
}

/// Declares a fuzz target for the verifier of `$source_toml`, feeding it the
/// headers `$names` and a body.
#[macro_export]
macro_rules! verify_target {
    ($source_toml:expr, [$($name:expr),* $(,)?]) => {
        static VERIFIER: std::sync::LazyLock<std::sync::Arc<dyn switchyard::signature::Verifier>> =
            std::sync::LazyLock::new(|| $crate::verifier($source_toml));

        libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            $crate::run(VERIFIER.as_ref(), &[$($name),*], data);
        });
    };
}
