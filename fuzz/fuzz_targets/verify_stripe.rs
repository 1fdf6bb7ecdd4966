//! Fuzzes the stripe verifier's header parsing.
#![no_main]

switchyard_fuzz::verify_target!(
    r#"
[sources.fuzz]
path = "/hooks/fuzz"
scheme = "stripe"
secrets = ["fuzz-secret"]

"#,
    ["stripe-signature"]
);
