//! The ops dashboard at `GET /` on the admin listener: served without a token
//! under a strict Content-Security-Policy (the data behind it still needs
//! one), and driven end to end in real headless Chromium by
//! tests/browser/dashboard.mjs (playwright-core on Debian's chromium; both
//! installed by `scripts/install-test-deps.sh`): sign in, see the failing
//! route and its dead letter, open it, replay it, and the destination gets it;
//! by tests/browser/flow.mjs: pause a route with a reason, follow a paced
//! replay job into it (held), resume it at a rate and see it drain; and by
//! tests/browser/ordered.mjs: free an ordered route's blocked key by
//! replaying the dead letter its row names.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use http::Method;
use serde_json::Value;

use crate::support::config::{ConfigBuilder, Owner, Route, Source};
use crate::support::env::{ADMIN_TOKEN, TestEnv};
use crate::support::github;
use crate::support::process::run;
use crate::support::receiver::{Receiver, Reply};

const SECRET: &str = "dashboard-test-secret";
const CHROMIUM: &str = "/usr/bin/chromium";
/// A header value that would become elements if the page wrote HTML.
const MARKUP: &str = r#"<img src=x id=injected onerror="document.title='injected'"><b>bold?</b>"#;
/// Bound on the browser run (it takes a few seconds).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

/// Two owners and two routes on one GitHub source: `payments-route` (owned by
/// Payments, with a runbook) and `devex-route`, to the receiver's `/payments`
/// and `/devex`.
fn config(receiver: &Receiver) -> String {
    let route = |name: &str, owner: &str, event: &str| {
        Route::new(name, "github", owner, &receiver.url(&format!("/{event}")))
            .when_github_event(event)
            .destination("timeout", r#""2s""#)
    };
    ConfigBuilder::new()
        .retry(3, "100ms", "1s")
        // The destination fails on purpose; the breaker must not defer the replay.
        .breaker(100000, None)
        .owner(
            Owner::new("payments", "Payments", "payments-oncall@example.com").with(
                "runbook",
                "https://wiki.example.com/runbooks/stripe-invoices",
            ),
        )
        .owner(Owner::devex())
        .source(Source::github(SECRET))
        .route(
            route("payments-route", "payments", "payments")
                .description("Invoice events mark invoices paid in billing-service")
                .on_failure("Invoices stay unpaid in the UI until the dead letter is replayed"),
        )
        .route(
            route("devex-route", "devex", "devex")
                .description("Push events start CI builds")
                .on_failure("CI does not start for new commits"),
        )
        .build()
}

/// The browser scripts' directory, once what they need is installed.
fn browser_scripts(root: &Path) -> PathBuf {
    let browser = root.join("tests/browser");
    installed(
        browser.join("node_modules/playwright-core"),
        "the npm package playwright-core",
    );
    installed(PathBuf::from(CHROMIUM), "Debian's chromium");
    browser
}

/// `node <script>` in `browser`, with the admin token; the test adds the
/// script's flags.
fn node(browser: &Path, script: &str) -> Command {
    let mut node = Command::new("node");
    node.arg(browser.join(script))
        .env("SWITCHYARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .current_dir(browser);
    node
}

/// Runs a browser script (in `dir`, within `BROWSER_TIMEOUT`) and fails
/// unless every step passed; its output is shown on failure, or with
/// `--nocapture`.
async fn passes(node: Command, dir: &Path, script: &str) {
    let report = run(node, dir, script, BROWSER_TIMEOUT).await;
    println!("{report}");
    assert!(
        report.success,
        "the browser run failed ({}); its output is printed above",
        report.status
    );
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

#[tokio::test]
async fn the_page_needs_no_token_but_its_data_does() {
    let s = TestEnv::start(SECRET, |_, _| String::new()).await;
    let (gateway, client) = (&s.gateway, &s.client);

    for (path, content_type) in [
        ("/", "text/html"),
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let response = client
            .get(gateway.admin_url(path))
            .send()
            .await
            .expect("admin answers");
        assert_eq!(response.status(), 200, "GET {path} without a token");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            header("content-type").starts_with(content_type),
            "GET {path}: content-type {:?}",
            header("content-type")
        );
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "GET {path}: CSP {csp:?}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(header("x-content-type-options"), "nosniff");
        let body = response.text().await.expect("body");
        assert!(!body.contains(ADMIN_TOKEN), "no token in the static assets");
        if path == "/" {
            assert!(body.contains("<title>Switchyard</title>"), "{body}");
        }
    }

    let response = client
        .get(gateway.admin_url("/admin/routes"))
        .send()
        .await
        .expect("admin answers");
    assert_eq!(response.status(), 401, "the data still needs the token");
    let (status, _) = s.admin(Method::GET, "/admin/routes", None).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_an_operator_finds_and_replays_a_dead_letter() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser = browser_scripts(root);

    let s = TestEnv::start(SECRET, |receiver, _| config(receiver)).await;
    let (gateway, receiver, client) = (&s.gateway, &s.receiver, &s.client);
    // The first delivery is rejected (a dead letter at once); the rest succeed.
    receiver.then(Reply::status(400));
    let hook = gateway.public_url("/hooks/github");

    let body =
        br#"{"type":"invoice.payment_succeeded","invoice":"in_1042","amount_paid":4200,"currency":"eur"}"#;
    // Markup in what the sender sent must reach the page as text
    // (dashboard.mjs checks no element came of it).
    let response = client
        .post(&hook)
        .header("X-Hub-Signature-256", github::signature(SECRET, body))
        .header("X-GitHub-Delivery", "delivery-1042")
        .header("X-GitHub-Event", "payments")
        .header("X-Customer-Note", MARKUP)
        .header("Content-Type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.expect("json answer");
    let event_id = answer["id"].as_str().expect("event id").to_owned();

    let list_url = "/admin/dead-letters?route=payments-route";
    let mut items = Vec::new();
    for _ in 0..100 {
        items = s.admin(Method::GET, list_url, None).await.1["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !items.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(items.len(), 1, "one dead letter on payments-route");
    let dead_letter = items[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(items[0]["event_id"], event_id.as_str());

    // The other route delivers, so the page shows one red and one green route.
    let (status, answer) = s
        .post_as(client, "devex", "delivery-7", br#"{"ref":"main"}"#)
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        receiver.wait_for(2, Duration::from_secs(10)).await.len(),
        2,
        "the devex event was delivered"
    );
    // The health the page must show (dashboard.mjs reads it off the rows).
    let (_, inventory) = s.admin(Method::GET, "/admin/routes", None).await;
    let health = |name: &str| {
        inventory["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == name)
            .map(|r| r["health"]["status"].clone())
    };
    assert_eq!(
        health("payments-route"),
        Some("failing".into()),
        "{inventory}"
    );
    assert_eq!(health("devex-route"), Some("ok".into()), "{inventory}");

    let dir = tempfile::tempdir().expect("temp dir");
    let screenshot = dir.path().join("dashboard.png");
    // Also kept where a person can look at it after the run.
    let kept = root.join("target/dashboard.png");
    let mut node = node(&browser, "dashboard.mjs");
    node.args(["--url", &format!("http://{}", gateway.admin)])
        .args(["--route", "payments-route"])
        .args(["--healthy-route", "devex-route"])
        .args(["--team", "Payments"])
        .args(["--dead-letter", &dead_letter])
        .args(["--markup", MARKUP])
        // The first path also names the screenshot of a failure: keep it.
        .arg("--screenshot")
        .arg(&kept)
        .arg("--screenshot")
        .arg(&screenshot);
    passes(node, dir.path(), "dashboard.mjs").await;
    let png = std::fs::read(&screenshot).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is a PNG"
    );

    // The click really replayed it: the destination got the same event again...
    let requests = receiver.wait_for(3, Duration::from_secs(10)).await;
    let replayed: Vec<_> = requests
        .iter()
        .skip(1)
        .filter(|r| {
            r.uri == "/payments"
                && r.headers
                    .get("x-switchyard-event-id")
                    .is_some_and(|v| v.as_bytes() == event_id.as_bytes())
        })
        .collect();
    assert_eq!(replayed.len(), 1, "the replay reached the destination once");
    assert_eq!(replayed[0].body.as_ref(), body, "with the original body");
    // ...and the dead letter is gone.
    let (status, _) = s
        .admin(
            Method::GET,
            &format!("/admin/dead-letters/{dead_letter}"),
            None,
        )
        .await;
    assert_eq!(status, 404, "the dead letter is gone");
    let (_, page) = s.admin(Method::GET, list_url, None).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0), "{page}");
}

/// Dead letters the flow-control browser run replays, and the paces it uses.
const FLOW_DEAD_LETTERS: usize = 150;
const FLOW_REPLAY_RATE: &str = "30/s";
const FLOW_DRAIN_RATE: &str = "100/s";
const FLOW_RATE_LIMIT: &str = "200/s";
const FLOW_REASON: &str = "orders-service maintenance until 14:00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_an_operator_pauses_replays_into_and_resumes_a_route() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser = browser_scripts(root);

    let s = TestEnv::start(SECRET, |receiver, _| {
        ConfigBuilder::new()
            .retry(3, "100ms", "1s")
            .breaker(100000, None)
            .owner(Owner::devex())
            .source(Source::github(SECRET))
            .route(
                Route::new("orders-route", "github", "devex", &receiver.url("/orders"))
                    .when_github_event("orders")
                    .destination("rate_limit", &format!("{FLOW_RATE_LIMIT:?}")),
            )
            .build()
    })
    .await;
    let (gateway, receiver) = (&s.gateway, &s.receiver);
    // Every first delivery is rejected: FLOW_DEAD_LETTERS dead letters to replay.
    receiver.then(Reply::status(400).times(FLOW_DEAD_LETTERS));
    let mut events = Vec::new();
    for i in 0..FLOW_DEAD_LETTERS {
        let body = format!(r#"{{"order":{i}}}"#);
        events.push(
            s.send("orders", &format!("order-{i}"), body.as_bytes())
                .await,
        );
    }
    let mut dead = 0;
    for _ in 0..200 {
        let (_, routes) = s.admin(Method::GET, "/admin/routes", None).await;
        dead = routes["routes"][0]["dead_letters"].as_u64().unwrap_or(0);
        if dead == FLOW_DEAD_LETTERS as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead, FLOW_DEAD_LETTERS as u64, "every event dead-lettered");

    let dir = tempfile::tempdir().expect("temp dir");
    let kept = root.join("target/dashboard-flow.png");
    let mut node = node(&browser, "flow.mjs");
    node.args(["--url", &format!("http://{}", gateway.admin)])
        .args(["--route", "orders-route"])
        .args(["--dead-letters", &FLOW_DEAD_LETTERS.to_string()])
        .args(["--by", "test-ops"])
        .args(["--reason", FLOW_REASON])
        .args(["--replay-rate", FLOW_REPLAY_RATE])
        .args(["--drain-rate", FLOW_DRAIN_RATE])
        .args(["--rate-limit", FLOW_RATE_LIMIT])
        .arg("--screenshot")
        .arg(&kept);
    passes(node, dir.path(), "flow.mjs").await;

    // Each event delivered once more after the resume, paced by the rate the
    // page sent (without it the destination's 200/s burst would take all at once).
    let all = receiver
        .wait_for(2 * FLOW_DEAD_LETTERS, Duration::from_secs(20))
        .await;
    let delivered: Vec<_> = all
        .iter()
        .filter(|r| r.answered.is_some_and(|a| a.status.is_success()))
        .collect();
    let mut ids: Vec<String> = delivered
        .iter()
        .map(|r| r.header("x-switchyard-event-id"))
        .collect();
    ids.sort();
    let mut sent = events.clone();
    sent.sort();
    assert_eq!(ids, sent, "every event delivered once after the resume");
    assert_eq!(all.len(), 2 * FLOW_DEAD_LETTERS, "no other attempts");
    let span = delivered[delivered.len() - 1].at - delivered[0].at;
    assert!(
        span >= Duration::from_millis(900),
        "{FLOW_DEAD_LETTERS} held events drained in {span:?}: not paced at {FLOW_DRAIN_RATE}"
    );

    // Every click is in the audit log, with who and why.
    let (_, audit) = s.admin(Method::GET, "/admin/audit", None).await;
    let entry = |action: &str| {
        audit["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["action"] == action)
            .cloned()
            .unwrap_or_else(|| panic!("{action} audited: {audit}"))
    };
    let pause = entry("pause");
    assert_eq!(pause["token"], "test-ops");
    assert_eq!(pause["reason"], FLOW_REASON);
    assert!(
        entry("resume")["reason"]
            .as_str()
            .is_some_and(|r| r.contains(FLOW_DRAIN_RATE)),
        "{audit}"
    );
    assert_eq!(entry("bulk_replay_start")["count"], FLOW_DEAD_LETTERS);
    assert_eq!(entry("bulk_replay_end")["count"], FLOW_DEAD_LETTERS);
}

/// An ordered route blocking its key on a dead letter: the row names the
/// key, its button opens the dead letter, and the replay from the page frees
/// the key, whose waiting events then go in order, the replayed one last.
#[tokio::test]
async fn in_chromium_an_operator_frees_a_blocked_key_by_replaying_its_dead_letter() {
    const KEY: &str = "customer-7";
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser = browser_scripts(root);

    let s = TestEnv::start(SECRET, |receiver, _| {
        ConfigBuilder::new()
            .retry(3, "100ms", "1s")
            .breaker(100000, None)
            .owner(Owner::devex())
            .source(Source::github(SECRET).with("ordering_key", r#"{ json_pointer = "/key" }"#))
            .route(
                Route::new("ledger-route", "github", "devex", &receiver.url("/ledger"))
                    .with("ordered", "true")
                    .with("on_dead_letter", r#""block""#),
            )
            .build()
    })
    .await;
    let (receiver, client) = (&s.receiver, &s.client);
    // The key's first event is refused: a dead letter that blocks the key.
    receiver.then(Reply::status(400));
    let body = |seq: usize| format!(r#"{{"key":"{KEY}","seq":{seq}}}"#).into_bytes();
    let (status, answer) = s.post_as(client, "push", "ledger-0", &body(0)).await;
    assert_eq!(status, 202, "{answer}");
    receiver.wait_for(1, Duration::from_secs(10)).await;
    for seq in 1..3 {
        let (status, answer) = s
            .post_as(client, "push", &format!("ledger-{seq}"), &body(seq))
            .await;
        assert_eq!(status, 202, "{answer}");
    }
    let mut dead_letter = None;
    for _ in 0..100 {
        let (_, list) = s
            .admin(Method::GET, "/admin/dead-letters?route=ledger-route", None)
            .await;
        dead_letter = list["items"][0]["id"].as_str().map(str::to_owned);
        if dead_letter.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead_letter = dead_letter.expect("the refused event is a dead letter");

    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = node(&browser, "ordered.mjs");
    node.args(["--url", &format!("http://{}", s.gateway.admin)])
        .args(["--route", "ledger-route"])
        .args(["--key", KEY])
        .args(["--dead-letter", &dead_letter])
        .arg("--screenshot")
        .arg(root.join("target/dashboard-ordered.png"));
    passes(node, dir.path(), "ordered.mjs").await;

    let arrived = receiver.wait_for(4, Duration::from_secs(10)).await;
    let seqs: Vec<u64> = arrived
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).expect("json")["seq"]
                .as_u64()
                .unwrap_or(99)
        })
        .collect();
    assert_eq!(
        seqs,
        [0, 1, 2, 0],
        "the waiting events in order, the replay last"
    );
}
