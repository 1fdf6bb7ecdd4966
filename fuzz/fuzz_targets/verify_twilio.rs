//! Fuzzes the twilio verifier's header parsing.
#![no_main]

switchyard_fuzz::verify_target!(
    r#"
[sources.fuzz]
path = "/hooks/fuzz"
scheme = "twilio"
secrets = ["fuzz-secret"]
public_url = "https://example.com/hooks/fuzz"
"#,
    ["x-twilio-signature"]
);
