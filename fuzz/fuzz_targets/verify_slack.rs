//! Fuzzes the slack verifier's header parsing.
#![no_main]

switchyard_fuzz::verify_target!(
    r#"
[sources.fuzz]
path = "/hooks/fuzz"
scheme = "slack"
secrets = ["fuzz-secret"]

"#,
    ["x-slack-signature", "x-slack-request-timestamp"]
);
