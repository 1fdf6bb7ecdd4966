//! Fuzzes the hmac verifier's header parsing.
#![no_main]

switchyard_fuzz::verify_target!(
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
    ["x-signature", "x-delivery"]
);
