//! Fuzzes the standard-webhooks verifier's header parsing.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use switchyard::signature::Verifier;

static VERIFIER: LazyLock<Arc<dyn Verifier>> = LazyLock::new(|| {
    switchyard_fuzz::verifier(
        r#"
[sources.fuzz]
path = "/hooks/fuzz"
scheme = "standard-webhooks"
secrets = ["whsec_ZnV6ei1zZWNyZXQ="]

"#,
    )
});

fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::run(VERIFIER.as_ref(), &["webhook-id", "webhook-timestamp", "webhook-signature", "svix-signature"], data);
});
