//! The chaos suite's bookkeeping: a steady signed load whose every answer is
//! written in a [`Ledger`], the sender's side of at-least-once (an event not
//! acked is sent again with the same delivery id, as GitHub would), and the
//! reconciliation of the ledger with what the destination took and what
//! Redis still holds.
//!
//! Every event has a fresh `X-GitHub-Delivery`, its key in the ledger. The
//! gateway forwards that header downstream and keeps the original request in
//! a dead letter, so every delivery and every dead letter leads back to the
//! request that made it: nothing the gateway did goes unexplained, and
//! nothing it acked can go missing unnoticed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::AsyncCommands;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::support::receiver::Receiver;
use crate::support::test_redis::{QueueKeys, TestConnection, Work};
use crate::support::{github, tail};

/// The github source's signing secret.
pub const SECRET: &str = "chaos-test-secret";
/// Where the github source listens.
pub const HOOK_PATH: &str = "/hooks/github";
/// The route every event takes, to a destination that accepts.
pub const MAIN: &str = "main";
/// The route events of kind [`REJECTED_KIND`] also take, to a destination
/// answering 410: dead-lettered at the first attempt. It keeps the second
/// end state of a job (dead-lettered, not delivered) in every reconciliation.
pub const REJECTS: &str = "rejects";
/// `X-GitHub-Event` of the events the `rejects` route takes.
pub const REJECTED_KIND: &str = "issues";
/// One event in this many is of [`REJECTED_KIND`] (when the ledger has the route).
const REJECTED_EVERY: usize = 10;

/// A sender gives up on one request after this long (the gateway's own
/// request timeout is 10 s; a hung request must not stall a scenario).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests of the load in flight at most: while the gateway hangs, the load
/// slows down instead of piling up sockets.
const LOAD_IN_FLIGHT: usize = 256;
/// Requests in flight at most while the sender retries.
const RETRY_CONCURRENCY: usize = 16;
/// Pause between the sender's retry rounds.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How often [`settle`] looks again.
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// A (delivery id, route) pair: one delivery job.
pub type JobKey = (String, String);

/// One signed webhook of the load.
#[derive(Debug, Clone)]
pub struct Event {
    /// `X-GitHub-Delivery`: unique per event, the ledger key.
    pub delivery: String,
    /// `X-GitHub-Event`.
    pub kind: &'static str,
    /// The body: JSON naming the delivery id, padded to the size asked for.
    pub body: Vec<u8>,
}

/// What one request of an event was answered.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// 202: durably queued as `id`, one job per route.
    Accepted {
        /// The event id.
        id: String,
        /// The matched routes.
        routes: Vec<String>,
    },
    /// 200 `duplicate`: queued earlier as `id` (by a request whose answer
    /// was lost or was not a 2xx).
    Duplicate {
        /// The first request's event id.
        id: String,
    },
    /// Any other answer.
    Refused {
        /// HTTP status.
        status: u16,
        /// The body.
        body: String,
    },
    /// No answer: connection refused or cut, timeout.
    NoAnswer {
        /// What went wrong.
        error: String,
    },
}

impl Outcome {
    /// The event id the gateway acked, if it did (202 or 200 duplicate).
    pub fn acked_id(&self) -> Option<&str> {
        match self {
            Outcome::Accepted { id, .. } | Outcome::Duplicate { id } => Some(id),
            Outcome::Refused { .. } | Outcome::NoAnswer { .. } => None,
        }
    }

    /// Answered 2xx.
    pub fn is_2xx(&self) -> bool {
        self.acked_id().is_some()
    }

    /// Answered with `status`.
    pub fn is_status(&self, status: u16) -> bool {
        matches!(self, Outcome::Refused { status: s, .. } if *s == status)
    }

    /// What kind of answer, in a few words: `202`, `503`, `connection refused`…
    pub fn kind(&self) -> String {
        match self {
            Outcome::Accepted { .. } => "202".to_owned(),
            Outcome::Duplicate { .. } => "200 duplicate".to_owned(),
            Outcome::Refused { status, .. } => status.to_string(),
            Outcome::NoAnswer { error } if error.contains("Connection refused") => {
                "connection refused".to_owned()
            }
            Outcome::NoAnswer { error } if error.contains("timed out") => "timeout".to_owned(),
            Outcome::NoAnswer { error } if error.starts_with("sender disconnected") => {
                "sender disconnected".to_owned()
            }
            Outcome::NoAnswer { .. } => "no answer".to_owned(),
        }
    }
}

/// One request of an event.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it was sent.
    pub sent_at: Instant,
    /// When its answer (or failure) came.
    pub answered_at: Instant,
    /// The answer.
    pub outcome: Outcome,
}

/// An event and every request made for it, first one first.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The event.
    pub event: Event,
    /// The routes it matches (what a 202 must name).
    pub routes: Vec<&'static str>,
    /// The requests made for it.
    pub attempts: Vec<Attempt>,
}

impl Entry {
    /// The event id of the first 2xx answer.
    pub fn acked_id(&self) -> Option<&str> {
        self.attempts.iter().find_map(|a| a.outcome.acked_id())
    }
}

/// Every event of a scenario and what each request for it was answered;
/// cheap to clone (shared).
#[derive(Clone)]
pub struct Ledger {
    entries: Arc<Mutex<BTreeMap<String, Entry>>>,
    rejects: bool,
}

impl Ledger {
    /// An empty ledger; `rejects`: the gateway has the `rejects` route, so
    /// one event in ten is of kind [`REJECTED_KIND`].
    pub fn new(rejects: bool) -> Self {
        Self {
            entries: Arc::default(),
            rejects,
        }
    }

    /// Creates and registers event `<prefix>-<n>` with a body of at least
    /// `pad` bytes; from now on the reconciliation accounts for it.
    pub fn new_event(&self, prefix: &str, n: usize, pad: usize) -> Event {
        let delivery = format!("{prefix}-{n}");
        let rejected = self.rejects && n % REJECTED_EVERY == REJECTED_EVERY - 1;
        let kind = if rejected { REJECTED_KIND } else { "push" };
        let body = serde_json::json!({
            "delivery": delivery,
            "n": n,
            "pad": "x".repeat(pad),
        });
        let event = Event {
            delivery,
            kind,
            body: body.to_string().into_bytes(),
        };
        let routes = if rejected {
            vec![MAIN, REJECTS]
        } else {
            vec![MAIN]
        };
        self.lock().insert(
            event.delivery.clone(),
            Entry {
                event: event.clone(),
                routes,
                attempts: Vec::new(),
            },
        );
        event
    }

    /// Records a request made for a registered event.
    pub fn record(&self, delivery: &str, attempt: Attempt) {
        self.lock()
            .get_mut(delivery)
            .expect("events are registered before they are sent")
            .attempts
            .push(attempt);
    }

    /// A copy of every entry.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().values().cloned().collect()
    }

    /// Every request sent at or after `from` and answered by `until`.
    pub fn attempts_within(&self, from: Instant, until: Instant) -> Vec<Attempt> {
        self.lock()
            .values()
            .flat_map(|e| e.attempts.iter())
            .filter(|a| a.sent_at >= from && a.answered_at <= until)
            .cloned()
            .collect()
    }

    /// Requests sent at or after `from` whose answer satisfies `test`.
    pub fn count_since(&self, from: Instant, test: impl Fn(&Outcome) -> bool) -> usize {
        self.lock()
            .values()
            .flat_map(|e| e.attempts.iter())
            .filter(|a| a.sent_at >= from && test(&a.outcome))
            .count()
    }

    /// The sender's side of at-least-once: every event without a 2xx yet is
    /// sent again (same delivery id and body) to `targets`, round after
    /// round, until each is acked or `within` passes.
    pub async fn retry_unacked(&self, targets: &[String], within: Duration) {
        let client = client();
        let deadline = Instant::now() + within;
        let mut round = 0;
        loop {
            let unacked: Vec<Event> = self
                .lock()
                .values()
                .filter(|e| e.acked_id().is_none())
                .map(|e| e.event.clone())
                .collect();
            if unacked.is_empty() || Instant::now() >= deadline {
                return;
            }
            futures_util::stream::iter(unacked.iter().enumerate())
                .for_each_concurrent(RETRY_CONCURRENCY, |(i, event)| {
                    let url = &targets[(i + round) % targets.len()];
                    let client = &client;
                    async move {
                        let attempt = send(client, url, event).await;
                        self.record(&event.delivery, attempt);
                    }
                })
                .await;
            round += 1;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        // A test that panicked while holding the lock is already failing.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The client senders use: bounded by [`SEND_TIMEOUT`].
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .build()
        .expect("http client")
}

/// Posts `event`, signed, to `url`.
pub async fn send(client: &reqwest::Client, url: &str, event: &Event) -> Attempt {
    let sent_at = Instant::now();
    let outcome = match client
        .post(url)
        .header(
            "X-Hub-Signature-256",
            github::signature(SECRET, &event.body),
        )
        .header("X-GitHub-Delivery", &event.delivery)
        .header("X-GitHub-Event", event.kind)
        .header("Content-Type", "application/json")
        .body(event.body.clone())
        .send()
        .await
    {
        Err(err) => Outcome::NoAnswer { error: chain(&err) },
        Ok(response) => {
            let status = response.status().as_u16();
            match response.text().await {
                Err(err) => Outcome::NoAnswer {
                    error: format!("{status} without a whole body: {err}"),
                },
                Ok(body) => classify(status, body),
            }
        }
    };
    Attempt {
        sent_at,
        answered_at: Instant::now(),
        outcome,
    }
}

/// An error and its causes, `: `-separated (reqwest's message alone does
/// not say whether the connection was refused, reset or timed out).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cause = err.source();
    }
    text
}

fn classify(status: u16, body: String) -> Outcome {
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let id = json["id"].as_str().map(str::to_owned);
    match (status, id) {
        (202, Some(id)) => Outcome::Accepted {
            id,
            routes: json["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        },
        (200, Some(id)) if json["duplicate"] == true => Outcome::Duplicate { id },
        _ => Outcome::Refused { status, body },
    }
}

/// A steady load: one new event every `1 / rate` seconds, sent without
/// waiting for earlier answers, to the targets in turn; every request and
/// its answer go into the ledger. Aborted on drop.
pub struct Load {
    stop: CancellationToken,
    targets: Arc<Mutex<Vec<String>>>,
    task: Option<tokio::task::JoinHandle<usize>>,
}

impl Load {
    /// Starts sending events `<prefix>-0`, `<prefix>-1`, … with bodies of at
    /// least `pad` bytes.
    pub fn start(
        ledger: &Ledger,
        prefix: &str,
        rate: u32,
        pad: usize,
        targets: Vec<String>,
    ) -> Self {
        assert!(!targets.is_empty(), "a load needs a target");
        let stop = CancellationToken::new();
        let targets = Arc::new(Mutex::new(targets));
        let task = tokio::spawn(generate(
            ledger.clone(),
            prefix.to_owned(),
            Duration::from_secs(1) / rate,
            pad,
            targets.clone(),
            stop.clone(),
        ));
        Self {
            stop,
            targets,
            task: Some(task),
        }
    }

    /// Sends to `targets` from now on (as a load balancer that noticed a
    /// backend die would).
    pub fn retarget(&self, targets: Vec<String>) {
        assert!(!targets.is_empty(), "a load needs a target");
        *self.targets.lock().unwrap_or_else(|e| e.into_inner()) = targets;
    }

    /// Stops sending, waits for the answers of requests in flight, and
    /// returns how many events were sent.
    pub async fn stop(mut self) -> usize {
        self.stop.cancel();
        let task = self.task.take().expect("running");
        task.await.expect("load task did not panic")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn generate(
    ledger: Ledger,
    prefix: String,
    every: Duration,
    pad: usize,
    targets: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
) -> usize {
    let client = client();
    let slots = Arc::new(Semaphore::new(LOAD_IN_FLIGHT));
    let mut tick = tokio::time::interval(every);
    // After a stall (a blocked worker thread), go on at the rate; no burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sends = JoinSet::new();
    let mut sent = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let slot = tokio::select! {
            () = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
        };
        let url = {
            let targets = targets.lock().unwrap_or_else(|e| e.into_inner());
            targets[sent % targets.len()].clone()
        };
        let event = ledger.new_event(&prefix, sent, pad);
        let (client, ledger) = (client.clone(), ledger.clone());
        sends.spawn(async move {
            let attempt = send(&client, &url, &event).await;
            ledger.record(&event.delivery, attempt);
            drop(slot);
        });
        sent += 1;
        while sends.try_join_next().is_some() {}
    }
    while sends.join_next().await.is_some() {}
    sent
}

/// A dead letter, traced back to its request.
struct DeadLetter {
    delivery: String,
    route: String,
    event_id: String,
    reason: String,
}

async fn dead_letters(queue: &mut QueueKeys) -> redis::RedisResult<Vec<DeadLetter>> {
    let mut all = Vec::new();
    for tag in queue.tags.clone() {
        all.extend(dead_letters_in(&mut queue.conn, &format!("{{{tag}}}:dead")).await?);
    }
    Ok(all)
}

/// The dead letters indexed by `dead` (one partition's index).
async fn dead_letters_in(
    conn: &mut TestConnection,
    dead: &str,
) -> redis::RedisResult<Vec<DeadLetter>> {
    let ids: Vec<String> = conn.zrange(dead, 0, -1).await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("HMGET")
            .arg(format!("{dead}:{id}"))
            .arg("event_id")
            .arg("route")
            .arg("reason")
            .arg("job");
    }
    type Row = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<Vec<u8>>,
    );
    let rows: Vec<Row> = pipe.query_async(conn).await?;
    Ok(rows
        .into_iter()
        .map(|(event_id, route, reason, job)| {
            let delivery = job
                .and_then(|bytes| switchyard::queue::Job::decode(&bytes).ok())
                .and_then(|job| serde_json::from_slice::<Value>(&job.body).ok())
                .and_then(|body| body["delivery"].as_str().map(str::to_owned))
                .unwrap_or_default();
            DeadLetter {
                delivery,
                route: route.unwrap_or_default(),
                event_id: event_id.unwrap_or_default(),
                reason: reason.unwrap_or_default(),
            }
        })
        .collect())
}

/// The ledger held against what the destinations took and what Redis holds.
/// Counts are of jobs (one per event and matched route) unless named events.
#[derive(Debug, Clone)]
pub struct Reconciliation {
    /// Events sent.
    pub events: usize,
    /// Events whose first request was answered 2xx.
    pub acked_at_once: usize,
    /// Events whose first request was not answered 2xx (refused, or no answer).
    pub non_2xx: usize,
    /// Events accepted (202) on a sender's retry: the first request had not queued them.
    pub retry_accepted: usize,
    /// Events answered `duplicate` on a sender's retry after no answer: queued, answer lost.
    pub queued_unanswered: usize,
    /// Events answered `duplicate` on a sender's retry after a non-2xx
    /// answer: the refused request had queued them after all.
    pub queued_refused: Vec<String>,
    /// Events never acked (the sender gave up).
    pub never_acked: Vec<String>,
    /// Jobs of acked events.
    pub acked: usize,
    /// Acked jobs the destination took (answered 2xx) at least once.
    pub delivered: usize,
    /// Acked jobs dead-lettered and not delivered.
    pub dead_lettered: usize,
    /// Acked jobs neither delivered nor dead-lettered.
    pub lost: Vec<JobKey>,
    /// 2xx deliveries beyond the first of each job.
    pub duplicates: usize,
    /// Things that must not be: a delivery or dead letter no acked event
    /// explains, an event id that is not the acked one, a job on a route
    /// its event does not match, a dead letter on the main route.
    pub problems: Vec<String>,
    /// First answers that were not 2xx, by kind (see [`Outcome::kind`]).
    pub non_2xx_kinds: BTreeMap<String, usize>,
    /// What Redis still holds.
    pub work: Work,
}

/// Holds the ledger against the deliveries `receivers` took (2xx) and the
/// dead letters and queue state in Redis.
pub async fn reconcile(
    ledger: &Ledger,
    receivers: &[&Receiver],
    queue: &mut QueueKeys,
) -> redis::RedisResult<Reconciliation> {
    let work = queue.work().await?;
    let dead = dead_letters(queue).await?;
    let entries = ledger.entries();
    let by_delivery: HashMap<&str, &Entry> = entries
        .iter()
        .map(|e| (e.event.delivery.as_str(), e))
        .collect();
    let mut problems = Vec::new();

    // Every job the destinations took, with the event id they were told.
    let mut taken: HashMap<JobKey, usize> = HashMap::new();
    for request in receivers.iter().flat_map(|r| r.accepted()) {
        let (delivery, route) = (
            request.header("x-github-delivery"),
            request.header("x-switchyard-route"),
        );
        let event_id = request.header("x-switchyard-event-id");
        check_job(
            &by_delivery,
            &delivery,
            &route,
            &event_id,
            "delivery",
            &mut problems,
        );
        *taken.entry((delivery, route)).or_insert(0) += 1;
    }
    let mut dead_jobs: HashSet<JobKey> = HashSet::new();
    for letter in &dead {
        check_job(
            &by_delivery,
            &letter.delivery,
            &letter.route,
            &letter.event_id,
            "dead letter",
            &mut problems,
        );
        if letter.route != REJECTS || letter.reason != "rejected" {
            problems.push(format!(
                "dead letter of {} on route {:?}, reason {:?}: only the rejects route dead-letters",
                letter.delivery, letter.route, letter.reason
            ));
        }
        dead_jobs.insert((letter.delivery.clone(), letter.route.clone()));
    }

    let mut r = Reconciliation {
        events: entries.len(),
        acked_at_once: 0,
        non_2xx: 0,
        retry_accepted: 0,
        queued_unanswered: 0,
        queued_refused: Vec::new(),
        never_acked: Vec::new(),
        acked: 0,
        delivered: 0,
        dead_lettered: 0,
        lost: Vec::new(),
        duplicates: taken.values().map(|n| n - 1).sum(),
        problems,
        non_2xx_kinds: BTreeMap::new(),
        work,
    };
    for entry in &entries {
        let delivery = &entry.event.delivery;
        let first = entry.attempts.first().map(|a| &a.outcome);
        if first.is_some_and(Outcome::is_2xx) {
            r.acked_at_once += 1;
        } else {
            r.non_2xx += 1;
            let kind = first.map_or_else(|| "never sent".to_owned(), Outcome::kind);
            *r.non_2xx_kinds.entry(kind).or_insert(0) += 1;
            match entry.attempts.iter().find(|a| a.outcome.is_2xx()) {
                Some(Attempt {
                    outcome: Outcome::Accepted { .. },
                    ..
                }) => r.retry_accepted += 1,
                Some(_) if matches!(first, Some(Outcome::NoAnswer { .. })) => {
                    r.queued_unanswered += 1;
                }
                Some(_) => r.queued_refused.push(delivery.clone()),
                None => r.never_acked.push(delivery.clone()),
            }
        }
        // Every 2xx names the same event, a 202 names the event's routes, and
        // no request of a valid signed event is refused as a client error.
        let acked_ids: HashSet<&str> = entry
            .attempts
            .iter()
            .filter_map(|a| a.outcome.acked_id())
            .collect();
        if acked_ids.len() > 1 {
            r.problems.push(format!(
                "{delivery} acked as {} events: {acked_ids:?}",
                acked_ids.len()
            ));
        }
        for attempt in &entry.attempts {
            if let Outcome::Refused { status, body } = &attempt.outcome
                && (400..500).contains(status)
            {
                r.problems
                    .push(format!("{delivery} refused with {status}: {body}"));
            }
            if let Outcome::Accepted { routes, .. } = &attempt.outcome {
                let mut routes: Vec<&str> = routes.iter().map(String::as_str).collect();
                routes.sort_unstable();
                let mut expected = entry.routes.clone();
                expected.sort_unstable();
                if routes != expected {
                    r.problems.push(format!(
                        "{delivery} accepted for routes {routes:?}, expected {expected:?}"
                    ));
                }
            }
        }
        if entry.acked_id().is_none() {
            continue;
        }
        for route in &entry.routes {
            let job = (delivery.clone(), (*route).to_owned());
            r.acked += 1;
            if taken.contains_key(&job) {
                r.delivered += 1;
            } else if dead_jobs.contains(&job) {
                r.dead_lettered += 1;
            } else {
                r.lost.push(job);
            }
        }
    }
    Ok(r)
}

/// Checks one delivered or dead-lettered job against the ledger: its event
/// was acked, as `event_id`, and matches `route`.
fn check_job(
    by_delivery: &HashMap<&str, &Entry>,
    delivery: &str,
    route: &str,
    event_id: &str,
    what: &str,
    problems: &mut Vec<String>,
) {
    let Some(entry) = by_delivery.get(delivery) else {
        problems.push(format!(
            "{what} of an event never sent: {delivery:?} on {route:?}"
        ));
        return;
    };
    if !entry.routes.contains(&route) {
        problems.push(format!(
            "{what} of {delivery} on route {route:?}, which it does not match"
        ));
    }
    match entry.acked_id() {
        Some(acked) if acked == event_id => {}
        // Never acked: the sender gave up; reported as never_acked.
        None => {}
        Some(acked) => problems.push(format!(
            "{what} of {delivery} as event {event_id}, but it was acked as {acked}: \
             queued twice under two ids"
        )),
    }
}

/// Polls [`reconcile`] until no acked job is missing and no work is left in
/// Redis, or `within` passes; returns the last reconciliation.
pub async fn settle(
    ledger: &Ledger,
    receivers: &[&Receiver],
    queue: &mut QueueKeys,
    within: Duration,
) -> Reconciliation {
    let deadline = Instant::now() + within;
    loop {
        let now = reconcile(ledger, receivers, queue).await;
        match now {
            Ok(r) if (r.lost.is_empty() && r.work.idle()) || Instant::now() >= deadline => {
                return r;
            }
            Err(err) if Instant::now() >= deadline => {
                panic!("cannot read Redis to reconcile: {err}")
            }
            _ => tokio::time::sleep(SETTLE_POLL).await,
        }
    }
}

impl Reconciliation {
    /// The invariants every scenario proves: every event ends acked (the
    /// sender retries), every acked job is delivered or dead-lettered (lost
    /// 0), Redis holds no work, and nothing was delivered or dead-lettered
    /// that the ledger does not explain. `log` is shown on failure.
    pub fn assert_sound(&self, scenario: &str, log: &str) {
        let context = || {
            format!(
                "{}; Redis holds {:?}\n--- gateway log tail ---\n{}",
                self.summary(scenario, ""),
                self.work,
                tail(log, 40)
            )
        };
        assert!(
            self.never_acked.is_empty(),
            "chaos {scenario}: {} events never acked even on the sender's retries \
             (e.g. {:?}); {}",
            self.never_acked.len(),
            &self.never_acked[..self.never_acked.len().min(5)],
            context()
        );
        assert!(
            self.lost.is_empty(),
            "chaos {scenario}: LOST {} acked jobs (e.g. {:?}); {}",
            self.lost.len(),
            &self.lost[..self.lost.len().min(5)],
            context()
        );
        assert!(
            self.work.idle(),
            "chaos {scenario}: work left in Redis after settling: {:?}; {}",
            self.work,
            context()
        );
        assert!(
            self.problems.is_empty(),
            "chaos {scenario}: {} unexplained deliveries or dead letters: {:#?}; {}",
            self.problems.len(),
            &self.problems[..self.problems.len().min(10)],
            context()
        );
        assert_eq!(
            self.delivered + self.dead_lettered,
            self.acked,
            "chaos {scenario}: every acked job delivered or dead-lettered"
        );
    }

    /// The line the lead copies into RELIABILITY.md, with `details` after it.
    pub fn summary(&self, scenario: &str, details: &str) -> String {
        format!(
            "chaos {scenario}: acked {}, delivered {}, dead-lettered {}, lost {}, \
             duplicates {}, non-2xx {} [jobs, one per event and matched route; {} events: \
             {} acked at once, {} not ({:?}; on the sender's retry {} accepted, {} answered \
             duplicate after no answer, {} answered duplicate after a refusal); {}]",
            self.acked,
            self.delivered,
            self.dead_lettered,
            self.lost.len(),
            self.duplicates,
            self.non_2xx,
            self.events,
            self.acked_at_once,
            self.non_2xx,
            self.non_2xx_kinds,
            self.retry_accepted,
            self.queued_unanswered,
            self.queued_refused.len(),
            details
        )
    }
}

/// Jobs a gateway's JSON log says it took over from dead workers.
pub fn reclaimed_in_log(log: &str) -> u64 {
    log.lines()
        .filter(|line| line.contains("took over jobs left pending"))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok()?["count"].as_u64())
        .sum()
}
