//! Fuzzes the hmac verifier's header parsing.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use switchyard::signature::Verifier;

static VERIFIER: LazyLock<Arc<dyn Verifier>> = LazyLock::new(|| {
    switchyard_fuzz::verifier(
        r#"
[sources.fuzz]
path = "/hooks/fuzz"
scheme = "hmac"
secrets = ["fuzz-secret"]
header = "x-signature"
algorithm = "sha256"
encoding = "hex"
prefix = "sha256="
dedupe_header = "x-delivery"
"#,
    )
});

fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::run(VERIFIER.as_ref(), &["x-signature", "x-delivery"], data);
});
