//! Isolation between destinations: a per-destination in-flight limit, a
//! waiting line in front of it for destinations that are busy but quick,
//! and a circuit breaker (closed → open after N consecutive retryable
//! failures → one probe after the cool-down → closed on success, open again
//! on failure). State is per process; each gateway learns about a
//! destination by itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::BreakerPolicy;

/// Where a destination stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests wait until `until`.
    Open {
        /// When a probe may go.
        until: Instant,
    },
    /// One probe is in flight; others wait.
    HalfOpen,
}

/// The breaker's decision for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Go,
    /// Do not send before this instant.
    WaitUntil(Instant),
}

/// The circuit breaker of one destination.
#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    failures: u32,
    state: BreakerState,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            failures: 0,
            state: BreakerState::Closed,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// May an attempt go at `now`? After the cool-down exactly one probe goes.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            BreakerState::Closed => Admission::Go,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                Admission::Go
            }
            BreakerState::Open { until } => Admission::WaitUntil(until),
            // Others wait a fraction of the cool-down for the probe's verdict.
            BreakerState::HalfOpen => Admission::WaitUntil(now + self.policy.cooldown / 4),
        }
    }

    /// Records an attempt's result: `healthy` is any answer that is not a
    /// retryable failure (a 4xx rejection is the caller's problem, not an outage).
    pub fn record(&mut self, healthy: bool, now: Instant) {
        if healthy {
            self.failures = 0;
            self.state = BreakerState::Closed;
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let probe_failed = self.state == BreakerState::HalfOpen;
        if probe_failed || self.failures >= self.policy.failure_threshold {
            self.state = BreakerState::Open {
                until: now + self.policy.cooldown,
            };
        }
    }

    /// An admitted attempt that was never made (the job was deferred): no
    /// verdict. Were it the probe, the breaker would wait for its result
    /// forever; the next job probes instead.
    pub fn no_verdict(&mut self, now: Instant) {
        if self.state == BreakerState::HalfOpen {
            self.state = BreakerState::Open { until: now };
        }
    }
}

/// The longest a job waits in memory for a slot of its destination; past
/// it the job is parked (held in Redis until the drain puts it back), which
/// costs two script calls, so a short wait in memory is cheaper.
pub const MAX_SLOT_WAIT: Duration = Duration::from_millis(250);

/// One destination's limits.
pub struct DestinationGate {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    /// Jobs waiting in line for a slot now.
    waiters: AtomicUsize,
    pace: Mutex<Pace>,
    breaker: Mutex<Breaker>,
}

/// How fast a destination gets through its requests: what tells a busy but
/// quick destination (worth waiting for) from a slow or hanging one (defer).
#[derive(Debug)]
struct Pace {
    /// Smoothed attempt latency; `None` before the first attempt ends.
    latency: Option<Duration>,
    /// When a request last ended or found a slot free at once. While none
    /// does, the destination looks slower by the moment, so a destination
    /// that stops answering stops collecting waiters well before its
    /// requests time out.
    last_progress: Instant,
}

impl Pace {
    /// How long one slot takes to free up, as far as is known at `now`.
    fn per_request(&self, now: Instant, unknown: Duration) -> Duration {
        self.latency
            .unwrap_or(unknown)
            .max(now.saturating_duration_since(self.last_progress))
    }

    /// Folds one attempt's latency in (weight 1/5) and notes the progress.
    fn record(&mut self, latency: Duration, now: Instant) {
        self.latency = Some(match self.latency {
            None => latency,
            Some(before) => (before.saturating_mul(4).saturating_add(latency)) / 5,
        });
        self.last_progress = now;
    }
}

/// Counts a job in the waiting line while it is there.
struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl DestinationGate {
    /// A slot for one request: at once; or, when the destination is full,
    /// after waiting in line if the expected wait (the jobs ahead, one slot's
    /// time each, over `max_in_flight` slots) is within [`MAX_SLOT_WAIT`];
    /// `None` means park. Until an attempt has ended the time of a slot is
    /// taken to be `unknown` (the destination's timeout): a destination
    /// never heard from gets few waiters.
    pub async fn slot(&self, unknown: Duration) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = self.in_flight.clone().try_acquire_owned() {
            self.lock_pace().last_progress = Instant::now();
            return Some(slot);
        }
        let ahead = self.waiters.fetch_add(1, Ordering::Relaxed);
        let _in_line = InLine(&self.waiters);
        let per_request = self.lock_pace().per_request(Instant::now(), unknown);
        let position = u32::try_from(ahead + 1).unwrap_or(u32::MAX);
        let slots = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX).max(1);
        if per_request.saturating_mul(position) / slots > MAX_SLOT_WAIT {
            return None;
        }
        tokio::time::timeout(MAX_SLOT_WAIT, self.in_flight.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// Asks the breaker; also returns the new state when asking changed it
    /// (open → half-open).
    pub fn admit(&self, now: Instant) -> (Admission, Option<BreakerState>) {
        let mut breaker = self.lock();
        let before = breaker.state();
        let admission = breaker.admit(now);
        (admission, changed(before, breaker.state()))
    }

    /// Tells the breaker and the pace about an attempt that took `latency`;
    /// returns the breaker's new state when it changed.
    pub fn record(&self, healthy: bool, latency: Duration, now: Instant) -> Option<BreakerState> {
        self.lock_pace().record(latency, now);
        let mut breaker = self.lock();
        let before = breaker.state();
        breaker.record(healthy, now);
        changed(before, breaker.state())
    }

    /// Tells the breaker an admitted attempt was not made (see
    /// [`Breaker::no_verdict`]).
    pub fn not_attempted(&self, now: Instant) {
        self.lock().no_verdict(now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // The breaker holds plain counters; a panic elsewhere leaves them usable.
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_pace(&self) -> std::sync::MutexGuard<'_, Pace> {
        self.pace.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `Some(after)` when the breaker moved to another kind of state (a new
/// open-until instant is not a change).
fn changed(before: BreakerState, after: BreakerState) -> Option<BreakerState> {
    (std::mem::discriminant(&before) != std::mem::discriminant(&after)).then_some(after)
}

impl BreakerState {
    /// As a gauge: 1 open, 0.5 half-open, 0 closed.
    pub fn openness(&self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open { .. } => 1.0,
            BreakerState::HalfOpen => 0.5,
        }
    }

    /// `closed`, `open` or `half_open`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Gates by destination URL: routes to the same URL share one gate (and the
/// `max_in_flight` of the first of them); other URLs, even on the same
/// host, have their own.
pub struct Gates {
    policy: BreakerPolicy,
    gates: Mutex<HashMap<String, Arc<DestinationGate>>>,
}

impl Gates {
    /// No destinations yet.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// The gate of `key`, created with `max_in_flight` slots on first use.
    pub fn gate(&self, key: &str, max_in_flight: usize) -> Arc<DestinationGate> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gate) = gates.get(key) {
            return gate.clone();
        }
        gates
            .entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(DestinationGate {
                    in_flight: Arc::new(Semaphore::new(max_in_flight)),
                    max_in_flight,
                    waiters: AtomicUsize::new(0),
                    pace: Mutex::new(Pace {
                        latency: None,
                        last_progress: Instant::now(),
                    }),
                    breaker: Mutex::new(Breaker::new(self.policy)),
                })
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerPolicy {
            failure_threshold: 3,
            cooldown: Duration::from_secs(10),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut b = breaker();
        b.record(false, t0);
        b.record(false, t0);
        b.record(true, t0);
        b.record(false, t0);
        b.record(false, t0);
        assert_eq!(b.admit(t0), Admission::Go, "a success reset the count");
        b.record(false, t0);
        assert_eq!(
            b.admit(t0),
            Admission::WaitUntil(t0 + Duration::from_secs(10))
        );
    }

    #[test]
    fn one_probe_after_the_cooldown_then_closed_or_open_again() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(false, t0);
        }
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.admit(later), Admission::Go, "the probe");
        assert!(
            matches!(b.admit(later), Admission::WaitUntil(_)),
            "only one probe"
        );
        b.record(false, later);
        assert_eq!(
            b.admit(later),
            Admission::WaitUntil(later + Duration::from_secs(10))
        );

        let again = later + Duration::from_secs(10);
        assert_eq!(b.admit(again), Admission::Go);
        b.record(true, again);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(again), Admission::Go);
    }

    #[test]
    fn a_probe_that_was_never_sent_lets_the_next_job_probe() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(false, t0);
        }
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.admit(later), Admission::Go, "the probe");
        b.no_verdict(later);
        assert_eq!(b.admit(later), Admission::Go, "the next job probes");
        assert!(matches!(b.admit(later), Admission::WaitUntil(_)));
        // Outside a probe it changes nothing.
        let mut closed = breaker();
        closed.no_verdict(t0);
        assert_eq!(closed.state(), BreakerState::Closed);
    }

    fn gates() -> Gates {
        Gates::new(BreakerPolicy {
            failure_threshold: 3,
            cooldown: Duration::from_secs(1),
        })
    }

    /// A gate with `slots` slots whose attempts have taken `latency`, all
    /// slots taken (the permits returned).
    async fn full_gate(
        gates: &Gates,
        slots: usize,
        latency: Duration,
    ) -> (Arc<DestinationGate>, Vec<OwnedSemaphorePermit>) {
        let gate = gates.gate("http://busy:80", slots);
        gate.record(true, latency, Instant::now());
        let mut held = Vec::new();
        for _ in 0..slots {
            held.push(gate.slot(UNKNOWN).await.expect("a free slot at once"));
        }
        (gate, held)
    }

    const UNKNOWN: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_quick_busy_destination_gets_a_waiting_line_served_as_slots_free() {
        let gates = gates();
        // 5 ms a request over 2 slots: the 8th in line expects 20 ms, with
        // room for scheduling stalls on a busy machine.
        let (gate, held) = full_gate(&gates, 2, Duration::from_millis(5)).await;
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let gate = gate.clone();
                tokio::spawn(async move {
                    let slot = gate.slot(UNKNOWN).await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    slot.is_some()
                })
            })
            .collect();
        assert!(
            gates
                .gate("http://other:80", 2)
                .slot(UNKNOWN)
                .await
                .is_some(),
            "other destinations are unaffected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(held);
        for waiter in waiters {
            assert!(waiter.await.expect("waiter"), "every waiter got a slot");
        }
    }

    #[tokio::test]
    async fn a_slow_destination_gets_a_short_line_and_the_rest_defer_at_once() {
        let gates = gates();
        // 200 ms a request over 2 slots: 2 in line wait ≤ 200 ms, a 3rd would wait 300.
        let (gate, held) = full_gate(&gates, 2, Duration::from_millis(200)).await;
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let gate = gate.clone();
                tokio::spawn(async move { gate.slot(UNKNOWN).await.is_some() })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let asked = Instant::now();
        assert!(
            gate.slot(UNKNOWN).await.is_none(),
            "a third is told to defer"
        );
        assert!(
            asked.elapsed() < MAX_SLOT_WAIT / 2,
            "at once, not after waiting"
        );
        drop(held);
        for waiter in waiters {
            assert!(waiter.await.expect("waiter"), "the two in line got slots");
        }
    }

    #[tokio::test]
    async fn a_destination_never_heard_from_gets_few_waiters() {
        let gates = gates();
        let gate = gates.gate("http://new:80", 4);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(gate.slot(UNKNOWN).await.expect("a free slot at once"));
        }
        // Unknown latency counts as 1 s: the first in line expects 250 ms.
        let first = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.slot(Duration::from_secs(1)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            gate.slot(Duration::from_secs(1)).await.is_none(),
            "a second in line would expect 500 ms"
        );
        assert!(
            first.await.expect("waiter").is_none(),
            "the first gave up after MAX_SLOT_WAIT with no slot freed"
        );

        // Had the destination been expected quick, both would have waited
        // and taken freed slots.
        let quick_unknown = Duration::from_millis(10);
        let quick = gates.gate("http://new-quick:80", 1);
        let held = quick
            .slot(quick_unknown)
            .await
            .expect("a free slot at once");
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let quick = quick.clone();
                tokio::spawn(async move {
                    let slot = quick.slot(quick_unknown).await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    slot.is_some()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        for waiter in waiters {
            assert!(waiter.await.expect("waiter"), "waited and got a slot");
        }
    }

    #[tokio::test]
    async fn a_destination_that_stops_answering_stops_collecting_waiters() {
        let gates = gates();
        let (gate, _held) = full_gate(&gates, 1, Duration::from_millis(1)).await;
        assert!(
            gate.slot(UNKNOWN).await.is_none(),
            "nothing freed the slot within MAX_SLOT_WAIT"
        );
        // No request has ended for over MAX_SLOT_WAIT: one more would expect longer.
        let asked = Instant::now();
        assert!(gate.slot(UNKNOWN).await.is_none());
        assert!(asked.elapsed() < MAX_SLOT_WAIT / 2, "deferred at once");
    }
}
