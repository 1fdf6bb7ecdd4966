//! Fuzzes the github verifier's header parsing.
#![no_main]

switchyard_fuzz::verify_target!(
    r#"
[sources.fuzz]
path = "/hooks/fuzz"
scheme = "github"
secrets = ["fuzz-secret"]

"#,
    ["x-hub-signature-256", "x-github-delivery"]
);
