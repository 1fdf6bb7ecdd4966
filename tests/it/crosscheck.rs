//! Cross-check against the providers' official libraries: a real gateway with
//! one source per scheme, and requests signed by GitHub's
//! `@octokit/webhooks-methods` (tests/crosscheck/github.mjs) and by the
//! Python libraries of Stripe, Slack, Standard Webhooks, Svix and Twilio
//! (tests/crosscheck/crosscheck.py, which sends every request and checks
//! every answer). Genuine requests must be accepted, tampered ones refused
//! with the right code. `scripts/install-test-deps.sh` installs the libraries.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::config::{ConfigBuilder, Owner, Route, Source, quoted};
use crate::support::eventually;
use crate::support::gateway::{TestGateway, config_toml, parse_config};
use crate::support::process::run;
use crate::support::redis::RedisServer;

/// What Twilio would be configured to call. Twilio signs this URL (plus the
/// query), and the gateway checks against it, not against the Host header,
/// so it need not be the address the driver really sends to.
const TWILIO_PUBLIC_URL: &str = "http://127.0.0.1/hooks/twilio";
/// The same with a port that is not the scheme's default: Twilio signs it
/// with or without that port.
const TWILIO_PORT_PUBLIC_URL: &str = "http://127.0.0.1:8443/hooks/twilio-port";

/// Bound on each helper process (the driver sends about a hundred requests).
const PROCESS_TIMEOUT: Duration = Duration::from_secs(120);

/// A source under test: name (also its path `/hooks/<name>` and its route
/// `<name>-crosscheck`), scheme, the two secrets (primary, then the rotated
/// one that must also verify), and scheme-specific keys.
struct CrossSource {
    name: &'static str,
    scheme: &'static str,
    secrets: [&'static str; 2],
    settings: &'static [(&'static str, &'static str)],
}

const SOURCES: &[CrossSource] = &[
    CrossSource {
        name: "github",
        scheme: "github",
        secrets: [
            "crosscheck-github-primary-5b1e",
            "crosscheck-github-rotated-c70d",
        ],
        settings: &[],
    },
    CrossSource {
        name: "stripe",
        scheme: "stripe",
        secrets: [
            "whsec_crosscheckPrimary4f2a9c",
            "whsec_crosscheckRotated81d0e7",
        ],
        settings: &[],
    },
    CrossSource {
        name: "slack",
        scheme: "slack",
        secrets: [
            "crosscheck-slack-primary-4d21",
            "crosscheck-slack-rotated-9e3b",
        ],
        settings: &[],
    },
    CrossSource {
        name: "shopify",
        scheme: "shopify",
        secrets: [
            "shpss_crosscheck_primary_77aa",
            "shpss_crosscheck_rotated_12cd",
        ],
        settings: &[],
    },
    CrossSource {
        name: "standard-webhooks",
        scheme: "standard-webhooks",
        // A 24-byte key (no base64 padding) and a 32-byte one (padded).
        secrets: [
            "whsec_9IoEEvCZ8GZOeRm861e7iDc136271RqM",
            "whsec_7+gcTrgcg7M2esn8HYTj+4jv1JP0vTNhP41Fh/2IMX8=",
        ],
        settings: &[],
    },
    CrossSource {
        name: "svix",
        scheme: "svix",
        secrets: [
            "whsec_gp3Hc9cKZl+HJbPbFw65i/EQH1AEobOp",
            "whsec_/EJMVkJpQRoihj0j3IE7AMJ0QD++0rdh",
        ],
        settings: &[],
    },
    CrossSource {
        name: "gitlab",
        scheme: "gitlab",
        secrets: [
            "crosscheck-gitlab-token-primary",
            "crosscheck-gitlab-token-rotated",
        ],
        settings: &[],
    },
    CrossSource {
        name: "twilio",
        scheme: "twilio",
        secrets: [
            "ad07473bcbbe49d7207b09e0eef7ef3c",
            "041739f0f784c74d79e1bbdffd52cf45",
        ],
        settings: &[("public_url", TWILIO_PUBLIC_URL)],
    },
    CrossSource {
        name: "twilio-port",
        scheme: "twilio",
        secrets: [
            "5c1f0a9e27d34b8c96e0f41a2b7d8c03",
            "e8a4d2c6b0f94e17a3c5d7b9f1e2a4c6",
        ],
        settings: &[("public_url", TWILIO_PORT_PUBLIC_URL)],
    },
    CrossSource {
        name: "hmac",
        scheme: "hmac",
        secrets: ["crosscheck-hmac-primary", "crosscheck-hmac-rotated"],
        settings: &[
            ("header", "X-Signature"),
            ("algorithm", "sha256"),
            ("encoding", "hex"),
            ("prefix", "sha256="),
            ("dedupe_header", "X-Delivery-Id"),
        ],
    },
    CrossSource {
        name: "hmac-b64",
        scheme: "hmac",
        secrets: ["crosscheck-hmac-b64-primary", "crosscheck-hmac-b64-rotated"],
        settings: &[
            ("header", "X-Signature"),
            ("algorithm", "sha512"),
            ("encoding", "base64"),
            ("dedupe_header", "X-Delivery-Id"),
        ],
    },
];

/// Owner, sources and routes for every [`SOURCES`] entry. Nothing delivers
/// in this test; the destination is the discard port of 127.0.0.1.
fn extra_toml() -> String {
    let mut config = ConfigBuilder::new().owner(Owner::new(
        "crosscheck",
        "Crosscheck",
        "crosscheck@example.com",
    ));
    for cross in SOURCES {
        let path = format!("/hooks/{}", cross.name);
        let mut source = Source::new(cross.name, &path, cross.scheme, &cross.secrets);
        for (key, value) in cross.settings {
            source = source.with(key, &quoted(value));
        }
        config = config.source(source).route(
            Route::new(
                &format!("{}-crosscheck", cross.name),
                cross.name,
                "crosscheck",
                "http://127.0.0.1:9/x",
            )
            .description(&format!("Cross-check of the {} verifier", cross.name))
            .on_failure("Nothing: test traffic only"),
        );
    }
    config.build()
}

/// `{"<source>": ["primary", "rotated"], ...}` for the helper processes.
fn secrets_json() -> String {
    let map: serde_json::Map<String, serde_json::Value> = SOURCES
        .iter()
        .map(|s| (s.name.to_owned(), serde_json::json!(s.secrets)))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// A path that `scripts/install-test-deps.sh` creates; panics naming it.
fn installed(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} is missing ({}): run scripts/install-test-deps.sh",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_library_signatures_verify_and_tampering_is_refused() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crosscheck = root.join("tests/crosscheck");
    let python = installed(
        root.join("target/crosscheck-venv/bin/python"),
        "the cross-check Python venv",
    );
    installed(
        crosscheck.join("node_modules/@octokit/webhooks-methods"),
        "the npm package @octokit/webhooks-methods",
    );

    let redis = RedisServer::start();
    let gateway = TestGateway::start(parse_config(&config_toml(&redis.url(), &extra_toml()))).await;
    let readyz = gateway.admin_url("/readyz");
    let ready = eventually(Duration::from_secs(10), || async {
        reqwest::get(&readyz)
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(ready, "gateway did not become ready");

    let dir = tempfile::tempdir().expect("temp dir");
    let secrets = secrets_json();
    let github_signed = dir.path().join("github-signed.json");

    let mut node = Command::new("node");
    node.arg(crosscheck.join("github.mjs"))
        .arg(&github_signed)
        .env("CROSSCHECK_SECRETS", &secrets);
    let signer = run(node, dir.path(), "github.mjs", PROCESS_TIMEOUT).await;
    assert!(signer.success, "GitHub signing failed: {signer}");

    let mut driver = Command::new(&python);
    driver
        .arg(crosscheck.join("crosscheck.py"))
        .arg("--base-url")
        .arg(format!("http://{}", gateway.public))
        .arg("--github-signed")
        .arg(&github_signed)
        .arg("--twilio-public-url")
        .arg(TWILIO_PUBLIC_URL)
        .arg("--twilio-port-public-url")
        .arg(TWILIO_PORT_PUBLIC_URL)
        .env("CROSSCHECK_SECRETS", &secrets)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let report = run(driver, dir.path(), "crosscheck.py", PROCESS_TIMEOUT).await;
    // Shown on failure, or with --nocapture.
    println!("{report}");
    let summary = report
        .stdout
        .lines()
        .last()
        .and_then(|line| line.strip_prefix("crosscheck: "))
        .and_then(|counts| counts.split_once(" passed, "))
        .and_then(|(passed, failed)| {
            Some((
                passed.parse::<u32>().ok()?,
                failed.strip_suffix(" failed")?.parse::<u32>().ok()?,
            ))
        });
    assert!(
        report.success && matches!(summary, Some((passed, 0)) if passed > 0),
        "the cross-check driver found disagreements ({}); its output is printed above",
        report.status
    );
}
