//! Fuzzes the gitlab verifier's header parsing.
#![no_main]

switchyard_fuzz::verify_target!(
    r#"
[sources.fuzz]
path = "/hooks/fuzz"
scheme = "gitlab"
secrets = ["fuzz-secret"]

"#,
    ["x-gitlab-token", "x-gitlab-event-uuid"]
);
