//! `switchyard check`: the inventory, or every config error with exit 2.

use std::process::{Command, Output};

use crate::support::config::{ConfigBuilder, Owner, Route, Source};

fn switchyard(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command.args(args).env_remove("SWITCHYARD_CONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run switchyard")
}

fn manifest_path(rel: &str) -> String {
    format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_prints_the_inventory_of_the_default_config() {
    let out = switchyard(
        &[
            "check",
            "--config",
            &manifest_path("config/switchyard.toml"),
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "route",
        "owner",
        "demo-to-local-receiver",
        "Platform",
        "http://127.0.0.1:9000/events",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
}

#[test]
fn check_prints_the_multi_team_example_with_its_secrets_set() {
    let env = [
        ("SWITCHYARD_ADMIN_TOKEN", "t"),
        ("GITHUB_WEBHOOK_SECRET", "g"),
        ("STRIPE_WEBHOOK_SECRET", "s1"),
        ("STRIPE_WEBHOOK_SECRET_PREVIOUS", "s0"),
        ("SLACK_SIGNING_SECRET", "sl"),
    ];
    let out = switchyard(
        &[
            "check",
            "--config",
            &manifest_path("config/examples/multi-team.toml"),
        ],
        &env,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for team in ["Payments", "Developer Experience", "Support Tooling"] {
        assert!(stdout.contains(team), "{team} missing from:\n{stdout}");
    }
}

#[test]
fn check_reports_every_problem_at_once_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.toml");
    let broken = ConfigBuilder::new()
        .owner(Owner::new("payments", "Payments", "payments@example.com"))
        .source(Source::new(
            "stripe",
            "/hooks/stripe",
            "stripe",
            &["env:SWITCHYARD_TEST_UNSET_SECRET"],
        ))
        .source(Source::new("stripe-old", "/hooks/stripe", "none", &[]))
        .route(
            Route::new("invoices", "stripe", "paymnts", "http://127.0.0.1:9000/")
                .description("Invoices")
                .on_failure("Unpaid"),
        );
    std::fs::write(&path, broken.build()).expect("write config");
    let out = switchyard(
        &["check", "--config", path.to_str().expect("utf-8 path")],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("broken.toml"), "names the file: {stderr}");
    assert!(
        stderr.contains(r#"routes[0].owner: unknown owner "paymnts""#),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            r#"sources.stripe-old.path: "/hooks/stripe" is already the path of sources.stripe"#
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("sources.stripe.secrets[0]: environment variable SWITCHYARD_TEST_UNSET_SECRET is not set"),
        "{stderr}"
    );
}

#[test]
fn unknown_keys_and_unreadable_files_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "[server]\nlisten_addr = \"127.0.0.1:1\"\n").expect("write");
    let out = switchyard(&["check", "--config", path.to_str().expect("utf-8")], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("listen_addr"),
        "names the unknown key: {stderr}"
    );

    let out = switchyard(&["check", "--config", "/nonexistent/switchyard.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/switchyard.toml"));
}

#[test]
fn serve_refuses_a_broken_config_with_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[server]\nlisten = \"not-an-address\"\n").expect("write");
    let out = switchyard(&["serve", "--config", path.to_str().expect("utf-8")], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
}

#[test]
fn a_token_that_cannot_be_a_header_is_named_as_the_problem_and_not_shown() {
    for (token, why) in [
        ("s3cret-token\n", "whitespace"),
        (" s3cret-token", "whitespace"),
        ("s3cret\u{1}token", "control character"),
    ] {
        // Nothing listens on port 9: the answer must come before any request.
        let out = switchyard(
            &["routes", "--admin", "http://127.0.0.1:9"],
            &[("SWITCHYARD_ADMIN_TOKEN", token)],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{token:?}: {stderr}");
        assert!(
            stderr.contains("SWITCHYARD_ADMIN_TOKEN is not a valid HTTP header value")
                && stderr.contains(why),
            "{token:?}: {stderr}"
        );
        assert!(!stderr.contains("cannot reach"), "{token:?}: {stderr}");
        assert!(
            !stderr.contains("s3cret"),
            "the token is not printed: {stderr}"
        );
    }
}

#[test]
fn an_admin_address_that_is_no_url_is_named_as_the_problem() {
    for admin in ["localhost:8081", "127.0.0.1:8081", "ftp://127.0.0.1:8081"] {
        let out = switchyard(
            &["dlq", "list", "--admin", admin],
            &[("SWITCHYARD_ADMIN_TOKEN", "t")],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{admin}: {stderr}");
        assert!(
            stderr.contains(&format!("--admin {admin}")) && !stderr.contains("cannot reach"),
            "{admin}: {stderr}"
        );
    }
}
