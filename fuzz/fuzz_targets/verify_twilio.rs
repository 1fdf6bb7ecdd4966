//! Fuzzes the twilio verifier's header parsing.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use switchyard::signature::Verifier;

static VERIFIER: LazyLock<Arc<dyn Verifier>> = LazyLock::new(|| {
    switchyard_fuzz::verifier(
        r#"
[sources.fuzz]
path = "/hooks/fuzz"
scheme = "twilio"
secrets = ["fuzz-secret"]
public_url = "https://example.com/hooks/fuzz"
"#,
    )
});

fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::run(VERIFIER.as_ref(), &["x-twilio-signature"], data);
});
