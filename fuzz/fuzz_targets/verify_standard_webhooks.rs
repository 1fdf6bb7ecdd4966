//! Fuzzes the standard-webhooks verifier's header parsing.
#![no_main]

switchyard_fuzz::verify_target!(
    r#"
[sources.fuzz]
path = "/hooks/fuzz"
scheme = "standard-webhooks"
secrets = ["whsec_ZnV6ei1zZWNyZXQ="]

"#,
    ["webhook-id", "webhook-timestamp", "webhook-signature", "svix-signature"]
);
