//! The chaos suite: DESIGN.md invariants 1 and 2 under faults, proven by a
//! ledger. Each scenario runs a steady signed load (github scheme, a fresh
//! `X-GitHub-Delivery` per event) through the real gateway binary as a child
//! process to a real receiver, injects its fault mid-load, lets the sender
//! retry what was not acked (as a real sender would), and reconciles (see
//! `ledger`): every acked job is delivered or dead-lettered (lost 0),
//! Redis ends with no work, nothing is delivered that the ledger cannot
//! explain, and the duplicate deliveries at-least-once allows stay within a
//! bound derived from the fault.
//!
//! Each scenario prints one line to stderr (run with `--nocapture`):
//! `chaos <scenario>: acked A, delivered D, dead-lettered X, lost 0,
//! duplicates N, non-2xx M [...]`, counting jobs (one per event and matched
//! route). "acked" includes events acked on the sender's retry; "non-2xx"
//! counts events whose first request was not answered 2xx.
//!
//! The scenarios take turns (`support::HEAVY_TURN`): they measure a gateway
//! on a small machine and would skew each other's timings. Each is bounded by
//! `SCENARIO_LIMIT`; everything it started is stopped on drop, even when it
//! fails.

mod ledger;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt;

use crate::support::config::{ConfigBuilder, Owner, Route, Source, quoted};
use crate::support::gateway::GatewayProcess;
use crate::support::receiver::{Receiver, Reply};
use crate::support::redis::RedisServer;
use crate::support::test_redis::{QueueKeys, TestConnection, TestRedis};
use crate::support::{HEAVY_TURN, counter, eventually, tail};
use ledger::{
    Attempt, HOOK_PATH, Ledger, Load, MAIN, Outcome, REJECTED_KIND, REJECTS, Reconciliation,
    SECRET, reclaimed_in_log, settle,
};

/// A scenario that has not finished by then fails (and stops what it started).
const SCENARIO_LIMIT: Duration = Duration::from_secs(75);
/// Events per second of the steady load: well within what a debug-build
/// gateway ingests and delivers on 2 shared cores, so the faults, not the
/// CPU, decide what happens.
const RATE: u32 = 150;
/// How long the sender keeps retrying what was not acked, once the fault is over.
const RETRY_WITHIN: Duration = Duration::from_secs(15);
/// How long every acked job gets to be delivered once the load stopped.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);
/// Deliveries in flight to the main destination, per gateway process: the
/// most a crash can catch in flight, hence the bound on its duplicates.
const MAIN_IN_FLIGHT: usize = 16;
/// The destinations' per-attempt deadline where a worker may die: below the
/// 2 s visibility timeout, so a live worker's job is never taken over.
const ROUTE_TIMEOUT: &str = "1s";

/// Delivery settings for scenarios where a process or Redis dies: a dead
/// worker's jobs are taken over 2 s after its last touch, retries come fast,
/// and the budget (30 attempts, backoff up to 1 s) outlasts any fault here.
fn fast_takeover() -> ConfigBuilder {
    ConfigBuilder::new()
        .delivery("visibility_timeout", r#""2s""#)
        .retry(30, "100ms", "1s")
        .breaker(5, Some("500ms"))
}

/// The destinations: `main` takes every event; `rejecter` answers 410 to
/// the `rejects` route's events, which are dead-lettered at once.
struct Destinations {
    main: Receiver,
    rejecter: Receiver,
}

impl Destinations {
    async fn start() -> Self {
        let rejecter = Receiver::start().await;
        rejecter.otherwise(Reply::status(410));
        Self {
            main: Receiver::start().await,
            rejecter,
        }
    }

    /// The gateway's `extra` TOML: `delivery` settings, the github source,
    /// the main route and (with `rejects`) the rejects route, with
    /// `route_timeout` per attempt.
    fn gateway_toml(&self, delivery: ConfigBuilder, route_timeout: &str, rejects: bool) -> String {
        let timeout = quoted(route_timeout);
        let config = delivery
            .owner(Owner::sre())
            .source(Source::new("github", HOOK_PATH, "github", &[SECRET]))
            .route(
                Route::new(MAIN, "github", "sre", &self.main.url("/main"))
                    .description("chaos: every event")
                    .destination("timeout", &timeout)
                    .destination("max_in_flight", &MAIN_IN_FLIGHT.to_string()),
            );
        let config = if rejects {
            config.route(
                Route::new(REJECTS, "github", "sre", &self.rejecter.url("/rejects"))
                    .description(&format!(
                        "chaos: {REJECTED_KIND} events to a destination that refuses them"
                    ))
                    .when_github_event(REJECTED_KIND)
                    .destination("timeout", &timeout),
            )
        } else {
            config
        };
        config.build()
    }

    fn all(&self) -> [&Receiver; 2] {
        [&self.main, &self.rejecter]
    }
}

/// Runs `scenario` in its turn, failing it if it outlives `SCENARIO_LIMIT`.
async fn in_turn(name: &str, scenario: impl Future<Output = ()>) {
    let _turn = HEAVY_TURN.lock().await;
    if tokio::time::timeout(SCENARIO_LIMIT, scenario)
        .await
        .is_err()
    {
        panic!("chaos {name}: did not finish within {SCENARIO_LIMIT:?}");
    }
}

/// Waits until every acked job is delivered or dead-lettered and Redis holds
/// no work (or `SETTLE_WITHIN` passes), and asserts the invariants every
/// scenario proves (see `Reconciliation::assert_sound`); `log` is shown on
/// failure.
async fn settled(
    scenario: &str,
    ledger: &Ledger,
    destinations: &Destinations,
    redis: &TestRedis,
    log: impl Fn() -> String,
) -> Reconciliation {
    let mut queue = QueueKeys::of(redis).await;
    let r = settle(ledger, &destinations.all(), &mut queue, SETTLE_WITHIN).await;
    r.assert_sound(scenario, &log());
    r
}

/// Scenario 1: the gateway is SIGKILLed every 3 s during the load (3 times)
/// and restarted each time, as a supervisor would. Requests in flight at a
/// kill go unanswered, and those sent while it is down are refused at
/// connect; the sender retries them (202, or `duplicate` when the kill came
/// after the write and before the answer). Jobs the dead process had read
/// are taken over by its successor after the visibility timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_every_few_seconds() {
    const KILLS: usize = 3;
    in_turn("sigkill", async {
        let started = Instant::now();
        let redis = TestRedis::start();
        let destinations = Destinations::start().await;
        // 20 ms per delivery: a few are always in flight when the kill comes.
        destinations
            .main
            .otherwise(Reply::ok().delay(Duration::from_millis(20)));
        let toml = destinations.gateway_toml(fast_takeover(), ROUTE_TIMEOUT, true);
        let mut gateway = GatewayProcess::start_on(&redis, &toml).await;
        let url = gateway.public_url(HOOK_PATH);
        let ledger = Ledger::new(true);
        let load = Load::start(&ledger, "sigkill", RATE, 0, vec![url.clone()]);

        let mut queue = QueueKeys::of(&redis).await;
        let mut pending_at_kills = Vec::new();
        for _ in 0..KILLS {
            tokio::time::sleep(Duration::from_secs(3)).await;
            gateway.signal(Signal::SIGKILL);
            tokio::task::block_in_place(|| gateway.wait_exit(Duration::from_secs(5)))
                .expect("SIGKILL ends the gateway");
            // Nothing moves jobs now: what the kill left in flight.
            let at_kill = queue.work().await.expect("queue state");
            pending_at_kills.push(at_kill.pending);
            gateway.restart().await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sent = load.stop().await;
        ledger
            .retry_unacked(std::slice::from_ref(&url), RETRY_WITHIN)
            .await;

        let r = settled("sigkill", &ledger, &destinations, &redis, || gateway.log()).await;
        let details = format!(
            "{KILLS} kills, jobs in flight at each {pending_at_kills:?}, {} taken over by \
             successors; {sent} sent at {RATE}/s; {:.1}s",
            reclaimed_in_log(&gateway.log()),
            started.elapsed().as_secs_f64()
        );
        eprintln!("{}", r.summary("sigkill", &details));
        assert!(
            r.non_2xx > 0,
            "the kills must cost senders answers (refused connections at least)"
        );
        // Duplicates come only from deliveries in flight at a kill: the
        // destination took them, the process died before recording it, and
        // its successor delivered them again. A process has at most
        // MAIN_IN_FLIGHT of them (the rejects route never answers 2xx).
        assert!(
            r.duplicates <= KILLS * MAIN_IN_FLIGHT,
            "{} duplicates, more than {KILLS} kills x {MAIN_IN_FLIGHT} in flight",
            r.duplicates
        );
    })
    .await;
}

/// Scenario 2: Redis (AOF, fsync on every write) stops mid-load for 2 s and
/// comes back on the same data. While it is down the gateway acks nothing
/// (503 `queue_unavailable`); once it is back, everything acked before,
/// and every event the sender retries, is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_mid_load() {
    in_turn("redis-restart", async {
        let started = Instant::now();
        let mut redis = TestRedis::Single(RedisServer::start_with(&[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]));
        let destinations = Destinations::start().await;
        destinations
            .main
            .otherwise(Reply::ok().delay(Duration::from_millis(20)));
        let toml = destinations.gateway_toml(fast_takeover(), ROUTE_TIMEOUT, true);
        let gateway = GatewayProcess::start_on(&redis, &toml).await;
        let url = gateway.public_url(HOOK_PATH);
        let ledger = Ledger::new(true);
        let load = Load::start(&ledger, "redis-restart", RATE, 0, vec![url.clone()]);

        tokio::time::sleep(Duration::from_secs(3)).await;
        let stopping = Instant::now();
        tokio::task::block_in_place(|| redis.stop());
        let down_from = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let down_until = Instant::now();
        tokio::task::block_in_place(|| redis.restart());
        let back = eventually(Duration::from_secs(15), || {
            let acked = ledger.count_since(down_until, Outcome::is_2xx);
            async move { acked > 0 }
        })
        .await;
        let back_at = Instant::now();
        assert!(
            back,
            "the gateway acks again after Redis returned; log:\n{}",
            tail(&gateway.log(), 30)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sent = load.stop().await;

        // Requests sent after Redis was gone and answered before it returned.
        let window = ledger.attempts_within(down_from, down_until);
        let acked_while_down: Vec<&Attempt> =
            window.iter().filter(|a| a.outcome.is_2xx()).collect();
        assert!(
            acked_while_down.is_empty(),
            "ACKED WHILE REDIS WAS DOWN: {acked_while_down:?}"
        );
        let refused = window.iter().filter(|a| a.outcome.is_status(503)).count();
        assert!(
            refused > 0,
            "requests must be answered (503) while Redis is down: {window:?}"
        );
        let not_503: Vec<&Attempt> = window
            .iter()
            .filter(|a| match &a.outcome {
                Outcome::Refused { status: 503, body } => !body.contains("queue_unavailable"),
                _ => true,
            })
            .collect();

        ledger
            .retry_unacked(std::slice::from_ref(&url), RETRY_WITHIN)
            .await;
        let r = settled("redis-restart", &ledger, &destinations, &redis, || {
            gateway.log()
        })
        .await;
        // Events answered 503 that were queued after all (the sender's retry
        // was a `duplicate`): when that 503 was sent, relative to the stop.
        // Allowed: Redis ran the script (and wrote it to the AOF) but its
        // reply was lost as it went down, so the gateway could not know; the
        // sender's retry learns it, and the event is delivered once.
        let entries = ledger.entries();
        let queued_refused: Vec<String> = entries
            .iter()
            .filter(|e| r.queued_refused.contains(&e.event.delivery))
            .map(|e| {
                let answered = e.attempts[0].answered_at;
                let ms = if answered >= down_from {
                    (answered - down_from).as_millis() as i64
                } else {
                    -((down_from - answered).as_millis() as i64)
                };
                format!("{} answered {ms:+} ms from the stop", e.event.delivery)
            })
            .collect();
        let details = format!(
            "Redis down {:.1}s: {} requests sent and answered meanwhile, none 2xx ({refused} \
             503 queue_unavailable, others {:?}); queued though answered 503: \
             {queued_refused:?}; {sent} sent at {RATE}/s; {:.1}s",
            (down_until - down_from).as_secs_f64(),
            window.len(),
            not_503
                .iter()
                .map(|a| &a.outcome)
                .take(3)
                .collect::<Vec<_>>(),
            started.elapsed().as_secs_f64()
        );
        eprintln!("{}", r.summary("redis-restart", &details));
        // Duplicates come only from deliveries whose state move could not be
        // recorded: the destination took them while Redis was gone (those in
        // flight at the stop, and those the process already held in line for
        // a slot), so the jobs stayed pending and were delivered again after
        // the visibility timeout. The slack before the stop covers a
        // completion batch on its way to Redis as it went down.
        let unrecordable = destinations
            .main
            .accepted()
            .iter()
            .filter_map(|r| r.answered)
            .filter(|a| a.at + Duration::from_millis(250) >= stopping && a.at <= back_at)
            .count();
        assert!(
            r.duplicates <= unrecordable,
            "{} duplicates, more than the {unrecordable} deliveries the destination took \
             while Redis could not record them",
            r.duplicates
        );
    })
    .await;
}

/// Scenario 3: the destination flaps: down for 3 s (connections closed
/// without an answer), up, a burst of 503s, up, answers slower than the
/// route timeout, up. Ingest is not affected (every event acked at once),
/// the breaker and the retry schedule carry the jobs through, and with a
/// retry budget (40 attempts, backoff up to 1 s) well beyond the flapping,
/// everything is delivered and nothing dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_flapping() {
    in_turn("flapping-destination", async {
        let started = Instant::now();
        let redis = TestRedis::start();
        let destinations = Destinations::start().await;
        let main = &destinations.main;
        let toml = destinations.gateway_toml(
            ConfigBuilder::new()
                .delivery("visibility_timeout", r#""10s""#)
                .retry(40, "100ms", "1s")
                .breaker(5, Some("500ms")),
            // The slow phase answers after 1.5 s: past this deadline.
            ROUTE_TIMEOUT,
            false,
        );
        let gateway = GatewayProcess::start_on(&redis, &toml).await;
        let url = gateway.public_url(HOOK_PATH);
        let ledger = Ledger::new(false);
        let load = Load::start(&ledger, "flapping", RATE, 0, vec![url.clone()]);

        // The destination's script: how long after the previous change, the
        // phase that begins, and what it answers in it. Slow answers take
        // longer than the 1 s route timeout: the gateway gives up on each.
        let slow = Reply::ok().delay(Duration::from_millis(1500));
        let script = [
            (Duration::from_millis(1500), "down", Reply::close()),
            (Duration::from_secs(3), "up", Reply::ok()),
            (Duration::from_millis(1500), "503-burst", Reply::status(503)),
            (Duration::from_millis(1500), "up", Reply::ok()),
            (Duration::from_secs(1), "slow", slow),
            (Duration::from_millis(1500), "up", Reply::ok()),
        ];
        let mut changes = vec![("up", Instant::now())];
        for (after, phase, reply) in script {
            tokio::time::sleep(after).await;
            main.otherwise(reply);
            changes.push((phase, Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let sent = load.stop().await;
        ledger
            .retry_unacked(std::slice::from_ref(&url), RETRY_WITHIN)
            .await;

        let r = settled(
            "flapping-destination",
            &ledger,
            &destinations,
            &redis,
            || gateway.log(),
        )
        .await;
        // What the destination did, by the phase a request arrived in (its
        // answer was chosen then).
        let mut phases: BTreeMap<&str, PhaseTally> = BTreeMap::new();
        for request in main.requests() {
            let phase = changes
                .iter()
                .rev()
                .find(|(_, at)| *at <= request.at)
                .map_or("up", |(phase, _)| *phase);
            let tally = phases.entry(phase).or_default();
            tally.requests += 1;
            match request.answered {
                None => tally.unanswered += 1,
                Some(a) if !a.status.is_success() => tally.failed += 1,
                // Taken after the gateway had given up on the attempt.
                Some(a) if a.at - request.at >= Duration::from_secs(1) => tally.late_2xx += 1,
                Some(_) => {}
            }
        }
        let deferred = counter(
            &gateway.metrics().await,
            "switchyard_deliveries_deferred_total",
            r#"outcome="breaker_open""#,
        );
        let details = format!(
            "destination requests by phase {phases:?}; {deferred} jobs deferred by the open \
             breaker; {sent} sent at {RATE}/s; {:.1}s",
            started.elapsed().as_secs_f64()
        );
        eprintln!("{}", r.summary("flapping-destination", &details));
        assert_eq!(
            r.non_2xx, 0,
            "a flapping destination must not affect ingest"
        );
        assert_eq!(
            (r.dead_lettered, r.work.dead),
            (0, 0),
            "nothing dead-lettered within the retry budget"
        );
        let phase = |name| phases.get(name).copied().unwrap_or_default();
        assert!(
            phase("down").unanswered > 0
                && phase("503-burst").failed > 0
                && phase("slow").unanswered + phase("slow").late_2xx > 0,
            "every fault must have hit deliveries: {phases:?}"
        );
        // Duplicates come only from answers slower than the route timeout:
        // the destination took the event after the gateway gave up on the
        // attempt, which the gateway then retried.
        let late_2xx: usize = phases.values().map(|t| t.late_2xx).sum();
        assert!(
            r.duplicates <= late_2xx,
            "{} duplicates but only {late_2xx} late answers",
            r.duplicates
        );
    })
    .await;
}

/// What the destination did with the requests of one phase.
#[derive(Default, Clone, Copy)]
struct PhaseTally {
    /// Requests that arrived.
    requests: usize,
    /// Closed without an answer, or abandoned by the gateway before the answer.
    unanswered: usize,
    /// Answered with a failure status.
    failed: usize,
    /// Answered 2xx after the route timeout.
    late_2xx: usize,
}

impl std::fmt::Debug for PhaseTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests ({} unanswered, {} failed, {} 2xx late)",
            self.requests, self.unanswered, self.failed, self.late_2xx
        )
    }
}

/// Scenario 4: Redis runs out of memory (`noeviction`; its `maxmemory` is
/// lowered mid-load to half of what it holds): ingest answers 503 and
/// writes nothing for a refused event, no dedupe record included. Once
/// memory is freed (the limit lifted), ingest accepts again, the sender's
/// retries of refused events are accepted as new (never `duplicate`), and
/// everything acked is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory_mid_load() {
    in_turn("redis-oom", async {
        let started = Instant::now();
        let redis = TestRedis::Single(RedisServer::start_with(&[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--maxmemory-policy",
            "noeviction",
        ]));
        let destinations = Destinations::start().await;
        let toml = destinations.gateway_toml(fast_takeover(), ROUTE_TIMEOUT, true);
        let gateway = GatewayProcess::start_on(&redis, &toml).await;
        let url = gateway.public_url(HOOK_PATH);
        let ledger = Ledger::new(true);
        // 1 KiB bodies: the queue holds real data.
        let load = Load::start(&ledger, "oom", RATE, 1024, vec![url.clone()]);
        let mut conn = redis.connection().await;

        tokio::time::sleep(Duration::from_secs(2)).await;
        let used = used_memory(&mut conn).await;
        set_maxmemory(&mut conn, used / 2).await;
        let full_from = Instant::now();
        let refusing = eventually(Duration::from_secs(10), || {
            let refused = ledger.count_since(full_from, |o| o.is_status(503));
            // About two seconds of refusals.
            async move { refused >= 2 * RATE as usize }
        })
        .await;
        assert!(
            refusing,
            "ingest must answer 503 when Redis is full; log:\n{}",
            tail(&gateway.log(), 30)
        );
        let full_until = Instant::now();
        set_maxmemory(&mut conn, 0).await;
        let accepting = eventually(Duration::from_secs(10), || {
            let acked = ledger.count_since(full_until, Outcome::is_2xx);
            async move { acked > 0 }
        })
        .await;
        assert!(accepting, "ingest accepts again once memory is freed");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let sent = load.stop().await;

        let window = ledger.attempts_within(full_from, full_until);
        let acked_while_full: Vec<&Attempt> =
            window.iter().filter(|a| a.outcome.is_2xx()).collect();
        assert!(
            acked_while_full.is_empty(),
            "ACKED WHILE REDIS WAS FULL: {acked_while_full:?}"
        );
        // No half-written state: a refused event left no dedupe record (which
        // would make the sender's retry a `duplicate` of nothing).
        let refused: Vec<String> = ledger
            .entries()
            .into_iter()
            .filter(|e| e.attempts.iter().all(|a| a.outcome.is_status(503)))
            .map(|e| e.event.delivery)
            .collect();
        let mut pipe = redis::pipe();
        for delivery in &refused {
            pipe.exists(format!("{{switchyard}}:seen:github:{delivery}"));
        }
        let seen: Vec<bool> = pipe.query_async(&mut conn).await.expect("EXISTS");
        let half_written: Vec<&String> = refused
            .iter()
            .zip(&seen)
            .filter(|(_, seen)| **seen)
            .map(|(d, _)| d)
            .collect();
        assert!(
            half_written.is_empty(),
            "HALF-WRITTEN: dedupe records of events refused with 503: {half_written:?}"
        );

        ledger
            .retry_unacked(std::slice::from_ref(&url), RETRY_WITHIN)
            .await;
        let r = settled("redis-oom", &ledger, &destinations, &redis, || {
            gateway.log()
        })
        .await;
        let delivered_while_full = destinations
            .main
            .accepted()
            .iter()
            .filter(|d| d.at >= full_from && d.at <= full_until)
            .count();
        let details = format!(
            "maxmemory lowered to {} KiB (half of {} KiB in use) for {:.1}s: {} requests \
             sent and answered meanwhile, none 2xx, {delivered_while_full} deliveries made; \
             {} events refused with 503 left no dedupe record; {sent} sent at {RATE}/s with \
             1 KiB bodies; {:.1}s",
            used / 2048,
            used / 1024,
            (full_until - full_from).as_secs_f64(),
            window.len(),
            refused.len(),
            started.elapsed().as_secs_f64()
        );
        eprintln!("{}", r.summary("redis-oom", &details));
        assert_eq!(
            r.queued_refused,
            Vec::<String>::new(),
            "an event refused for lack of memory was not queued: its retry is accepted, \
             not a duplicate"
        );
        // Expected 0: no process dies and delivery's state moves go through
        // while Redis is full. Were one refused, its job would stay pending
        // and be delivered again after the visibility timeout: at most the
        // MAIN_IN_FLIGHT deliveries in flight.
        assert!(
            r.duplicates <= MAIN_IN_FLIGHT,
            "{} duplicates",
            r.duplicates
        );
    })
    .await;
}

async fn used_memory(conn: &mut TestConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("INFO memory");
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO")
}

async fn set_maxmemory(conn: &mut TestConnection, bytes: u64) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(bytes)
        .query_async(conn)
        .await
        .expect("CONFIG SET maxmemory");
}

/// Scenario 5: two gateway processes share one Redis, the load split
/// between them; one is SIGKILLed mid-load (while it has deliveries in
/// flight) and the load goes on to the other, which takes over the dead
/// one's pending jobs after the visibility timeout (2 s; route timeouts 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_one_killed() {
    in_turn("two-gateways-one-killed", async {
        let started = Instant::now();
        let redis = TestRedis::start();
        let destinations = Destinations::start().await;
        // 100 ms per delivery: each process has several in flight at any time.
        destinations
            .main
            .otherwise(Reply::ok().delay(Duration::from_millis(100)));
        let toml = destinations.gateway_toml(fast_takeover(), ROUTE_TIMEOUT, true);
        let mut doomed = GatewayProcess::start_on(&redis, &toml).await;
        let survivor = GatewayProcess::start_on(&redis, &toml).await;
        let doomed_url = doomed.public_url(HOOK_PATH);
        let survivor_url = survivor.public_url(HOOK_PATH);
        let ledger = Ledger::new(true);
        let load = Load::start(
            &ledger,
            "two-gateways",
            RATE,
            0,
            vec![doomed_url, survivor_url.clone()],
        );
        let mut queue = QueueKeys::of(&redis).await;

        tokio::time::sleep(Duration::from_secs(3)).await;
        let pending_at_kill = queue.kill_with_jobs_in_flight(&mut doomed).await;
        load.retarget(vec![survivor_url.clone()]);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let sent = load.stop().await;
        ledger
            .retry_unacked(std::slice::from_ref(&survivor_url), RETRY_WITHIN)
            .await;

        let r = settled(
            "two-gateways-one-killed",
            &ledger,
            &destinations,
            &redis,
            || format!("{}\n--- survivor ---\n{}", doomed.log(), survivor.log()),
        )
        .await;
        let reclaimed = counter(
            &survivor.metrics().await,
            "switchyard_jobs_reclaimed_total",
            "",
        );
        let details = format!(
            "killed one of two after 3 s with {pending_at_kill} jobs in flight, the survivor \
             took over {reclaimed}; {sent} sent at {RATE}/s; {:.1}s",
            started.elapsed().as_secs_f64()
        );
        eprintln!("{}", r.summary("two-gateways-one-killed", &details));
        assert!(
            pending_at_kill > 0,
            "the kill must catch jobs in flight (else nothing is taken over)"
        );
        assert!(
            reclaimed >= pending_at_kill as u64,
            "the survivor took over the {pending_at_kill} jobs the dead one held; it \
             reclaimed {reclaimed}"
        );
        // Duplicates come only from the killed process's deliveries in
        // flight: the destination took them, the process died before
        // recording it, the survivor delivered them again. At most
        // MAIN_IN_FLIGHT.
        assert!(
            r.duplicates <= MAIN_IN_FLIGHT,
            "{} duplicates, more than the {MAIN_IN_FLIGHT} deliveries in flight",
            r.duplicates
        );
    })
    .await;
}

/// Where a sender's request is cut (the sender disconnects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Halfway through the headers.
    InHeaders,
    /// After the headers, before any body byte.
    AfterHeaders,
    /// Halfway through the body.
    MidBody,
    /// After the whole body, before the answer (socket closed 0–3 ms later).
    AfterBody,
    /// After the whole body and a write shutdown (FIN), before the answer.
    AfterBodyHalfClosed,
}

impl Cut {
    const ALL: [Cut; 5] = [
        Cut::InHeaders,
        Cut::AfterHeaders,
        Cut::MidBody,
        Cut::AfterBody,
        Cut::AfterBodyHalfClosed,
    ];

    fn name(self) -> &'static str {
        match self {
            Cut::InHeaders => "in-headers",
            Cut::AfterHeaders => "after-headers",
            Cut::MidBody => "mid-body",
            Cut::AfterBody => "after-body",
            Cut::AfterBodyHalfClosed => "after-body-half-closed",
        }
    }

    /// Whether the gateway had the whole request: only then may it queue it.
    fn whole_request(self) -> bool {
        matches!(self, Cut::AfterBody | Cut::AfterBodyHalfClosed)
    }
}

/// Sends `event` on a raw socket and disconnects at `cut`, `linger` after
/// the last byte written.
async fn cut_request(gateway: SocketAddr, event: &ledger::Event, cut: Cut, linger: Duration) {
    let head = format!(
        "POST {HOOK_PATH} HTTP/1.1\r\nhost: {gateway}\r\ncontent-type: application/json\r\n\
         x-github-event: {}\r\nx-github-delivery: {}\r\nx-hub-signature-256: {}\r\n\
         content-length: {}\r\n\r\n",
        event.kind,
        event.delivery,
        crate::support::github::signature(SECRET, &event.body),
        event.body.len()
    );
    let (head, body) = (head.as_bytes(), event.body.as_slice());
    let mut stream = tokio::net::TcpStream::connect(gateway)
        .await
        .expect("connect to the gateway");
    let written = match cut {
        Cut::InHeaders => stream.write_all(&head[..head.len() / 2]).await,
        Cut::AfterHeaders => stream.write_all(head).await,
        Cut::MidBody => {
            let half = [head, &body[..body.len() / 2]].concat();
            stream.write_all(&half).await
        }
        Cut::AfterBody => stream.write_all(&[head, body].concat()).await,
        Cut::AfterBodyHalfClosed => {
            let whole = [head, body].concat();
            match stream.write_all(&whole).await {
                Ok(()) => stream.shutdown().await,
                err => err,
            }
        }
    };
    written.expect("write to the gateway");
    tokio::time::sleep(linger).await;
    drop(stream);
}

/// Scenario 6: besides the steady load, senders disconnect mid-request at
/// every stage (halfway through the headers, after them, mid-body, right
/// after the body with and without a write shutdown) and retry at once with
/// the same delivery id. No half-written state: a cut request was either
/// wholly queued (the retry is answered `duplicate` with its event id) or
/// not at all (the retry is accepted, 202); one cut before the whole
/// request arrived is never queued; and every event, cut or not, is
/// delivered exactly once as the event id its ack named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_disconnecting_mid_request() {
    /// Cut requests per stage.
    const PER_CUT: usize = 30;
    in_turn("sender-disconnects", async {
        let started = Instant::now();
        let redis = TestRedis::start();
        let destinations = Destinations::start().await;
        // No worker dies here, and no attempt may time out on a busy
        // machine (that alone would repeat a delivery): generous deadlines.
        let toml = destinations.gateway_toml(
            ConfigBuilder::new()
                .delivery("visibility_timeout", r#""30s""#)
                .retry(30, "100ms", "1s"),
            "5s",
            true,
        );
        let gateway = GatewayProcess::start_on(&redis, &toml).await;
        let url = gateway.public_url(HOOK_PATH);
        let ledger = Ledger::new(true);
        let load = Load::start(&ledger, "steady", RATE, 0, vec![url.clone()]);

        let client = ledger::client();
        for i in 0..PER_CUT {
            for cut in Cut::ALL {
                let event = ledger.new_event(&format!("cut-{}", cut.name()), i, 512);
                let sent_at = Instant::now();
                let linger = Duration::from_millis((i % 4) as u64);
                cut_request(gateway.public, &event, cut, linger).await;
                ledger.record(
                    &event.delivery,
                    Attempt {
                        sent_at,
                        answered_at: Instant::now(),
                        outcome: Outcome::NoAnswer {
                            error: format!("sender disconnected {}", cut.name()),
                        },
                    },
                );
                // The sender's retry, at once: it may race the cut request.
                let retry = ledger::send(&client, &url, &event).await;
                ledger.record(&event.delivery, retry);
            }
            // Spread over ~3 s of the steady load.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let sent = load.stop().await;
        ledger
            .retry_unacked(std::slice::from_ref(&url), RETRY_WITHIN)
            .await;

        // Per stage: how the first retry was answered.
        let entries = ledger.entries();
        let mut tallies = Vec::new();
        for cut in Cut::ALL {
            let prefix = format!("cut-{}-", cut.name());
            let retries: Vec<&Outcome> = entries
                .iter()
                .filter(|e| {
                    e.event
                        .delivery
                        .strip_prefix(&prefix)
                        .is_some_and(|n| n.parse::<usize>().is_ok())
                })
                .filter_map(|e| e.attempts.get(1).map(|a| &a.outcome))
                .collect();
            let accepted = retries
                .iter()
                .filter(|o| matches!(o, Outcome::Accepted { .. }))
                .count();
            let duplicate = retries
                .iter()
                .filter(|o| matches!(o, Outcome::Duplicate { .. }))
                .count();
            assert_eq!(
                accepted + duplicate,
                PER_CUT,
                "every retry after a cut {} is acked: {retries:?}",
                cut.name()
            );
            if !cut.whole_request() {
                assert_eq!(
                    duplicate,
                    0,
                    "HALF-WRITTEN: a request cut {} (incomplete) was queued",
                    cut.name()
                );
            }
            tallies.push(format!(
                "{} {accepted} new / {duplicate} duplicate",
                cut.name()
            ));
        }
        let r = settled("sender-disconnects", &ledger, &destinations, &redis, || {
            gateway.log()
        })
        .await;
        let details = format!(
            "{PER_CUT} cuts per stage, each retried at once; the retry was answered: {}; \
             {sent} steady events at {RATE}/s besides; {:.1}s",
            tallies.join(", "),
            started.elapsed().as_secs_f64()
        );
        eprintln!("{}", r.summary("sender-disconnects", &details));
        // Nothing crashes and no attempt times out, and a delivery id is
        // queued once at most (the dedupe record and the jobs are one atomic
        // write): every job is delivered exactly once.
        assert_eq!(r.duplicates, 0, "no duplicate deliveries");
    })
    .await;
}
