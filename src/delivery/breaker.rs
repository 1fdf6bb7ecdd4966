//! Isolation between destinations: a per-destination in-flight limit and a
//! circuit breaker (closed → open after N consecutive retryable failures →
//! one probe after the cool-down → closed on success, open again on failure).
//! State is per process; each gateway learns about a destination by itself.

use std::collections::HashMap;
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
}

/// One destination's limits.
pub struct DestinationGate {
    in_flight: Arc<Semaphore>,
    /// The process-wide budget of jobs waiting for a slot (see [`Gates::new`]).
    waiting: Arc<Semaphore>,
    breaker: Mutex<Breaker>,
}

impl DestinationGate {
    /// A slot for one request: at once, or after waiting up to `within` for
    /// one to free up if not too many wait already.
    pub async fn slot_within(&self, within: Duration) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = self.in_flight.clone().try_acquire_owned() {
            return Some(slot);
        }
        let _waiting = self.waiting.try_acquire().ok()?;
        tokio::time::timeout(within, self.in_flight.clone().acquire_owned())
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

    /// Tells the breaker; returns the new state when it changed.
    pub fn record(&self, healthy: bool, now: Instant) -> Option<BreakerState> {
        let mut breaker = self.lock();
        let before = breaker.state();
        breaker.record(healthy, now);
        changed(before, breaker.state())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // The breaker holds plain counters; a panic elsewhere leaves them usable.
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
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
    waiting: Arc<Semaphore>,
    gates: Mutex<HashMap<String, Arc<DestinationGate>>>,
}

impl Gates {
    /// No destinations yet. At most `max_waiting` jobs, across all
    /// destinations, wait for a busy destination's slot, each holding one of
    /// the process's delivery slots meanwhile: slow destinations together
    /// hold no more than their slots plus these.
    pub fn new(policy: BreakerPolicy, max_waiting: usize) -> Self {
        Self {
            policy,
            waiting: Arc::new(Semaphore::new(max_waiting)),
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// The gate of `key`, created with `max_in_flight` slots on first use.
    pub fn gate(&self, key: &str, max_in_flight: usize) -> Arc<DestinationGate> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates
            .entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(DestinationGate {
                    in_flight: Arc::new(Semaphore::new(max_in_flight)),
                    waiting: self.waiting.clone(),
                    breaker: Mutex::new(Breaker::new(self.policy)),
                })
            })
            .clone()
    }
}

/// A short, jittered wait for a destination with no free slot.
pub fn saturated_wait(jitter_ms: u64) -> Duration {
    Duration::from_millis(250 + jitter_ms % 500)
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

    #[tokio::test]
    async fn gates_limit_in_flight_per_destination() {
        let gates = Gates::new(
            BreakerPolicy {
                failure_threshold: 3,
                cooldown: Duration::from_secs(1),
            },
            2,
        );
        let wait = Duration::from_millis(10);
        let slow = gates.gate("http://slow:80", 2);
        let a = slow.slot_within(wait).await.expect("first slot");
        let b = slow.slot_within(wait).await.expect("second slot");
        assert!(slow.slot_within(wait).await.is_none(), "full");
        assert!(
            gates
                .gate("http://other:80", 2)
                .slot_within(wait)
                .await
                .is_some(),
            "others unaffected"
        );
        // A waiter gets the slot freed while it waits; no more than
        // `max_waiting` may wait, whichever destination they wait for.
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let slow = gates.gate("http://slow:80", 2);
                tokio::spawn(
                    async move { slow.slot_within(Duration::from_secs(30)).await.is_some() },
                )
            })
            .collect();
        tokio::time::sleep(wait).await;
        assert!(
            slow.slot_within(Duration::from_secs(30)).await.is_none(),
            "a third waiter is turned away at once"
        );
        let busy = gates.gate("http://busy:80", 1);
        let _held = busy.slot_within(wait).await.expect("busy's one slot");
        assert!(
            busy.slot_within(Duration::from_secs(30)).await.is_none(),
            "the waiting budget is shared across destinations"
        );
        drop((a, b));
        for waiter in waiters {
            assert!(
                waiter.await.expect("waiter"),
                "freed slots go to the waiters"
            );
        }
    }
}
