//! Fuzzes the shopify verifier's header parsing.
#![no_main]

switchyard_fuzz::verify_target!(
    r#"
[sources.fuzz]
path = "/hooks/fuzz"
scheme = "shopify"
secrets = ["fuzz-secret"]

"#,
    ["x-shopify-hmac-sha256", "x-shopify-webhook-id"]
);
