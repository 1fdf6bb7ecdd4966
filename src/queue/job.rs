//! A delivery job: one event for one route, with its attempt history. Jobs
//! are stored as MessagePack with field names, so a job written by one
//! version of the gateway is read by the next (new fields get defaults).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One (event, route) delivery and everything needed to perform, retry or
/// dead-letter it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Unique id of this job; a dead letter keeps it.
    pub id: String,
    /// The event's id (shared by the event's jobs).
    pub event_id: String,
    /// Route name.
    pub route: String,
    /// Source name.
    pub source: String,
    /// When the request arrived, Unix ms.
    pub received_ms: u64,
    /// Number of the next attempt, from 1.
    pub attempt: u32,
    /// The request headers exactly (see [`super::encode_headers`]); shared,
    /// not copied, by the jobs of one event.
    pub headers: Bytes,
    /// The request body exactly; shared, not copied, by the jobs of one event.
    pub body: Bytes,
    /// Every attempt so far, oldest first (across replays).
    #[serde(default)]
    pub history: Vec<AttemptRecord>,
    /// The send time (Unix ms) its destination's rate limiter reserved for
    /// this job's next attempt, while it waits for it; cleared by the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_slot_ms: Option<u64>,
    /// Its event's ordering key, on an ordered route: the job is its key's
    /// head (see [`super::order`]) and moves the key's line on when it
    /// leaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
}

/// What one delivery attempt did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Attempt number (restarts at 1 after a replay).
    pub attempt: u32,
    /// When it started, Unix ms.
    pub at_ms: u64,
    /// The destination's status, when it answered.
    pub status: Option<u16>,
    /// What went wrong without a status (`timeout`, `connect`, …) and detail.
    pub error: Option<String>,
    /// How long it took, ms.
    pub latency_ms: u64,
}

/// Room for a job's field names, ids and history besides headers and body.
const ENCODING_OVERHEAD: usize = 512;

/// A job could not be decoded (written by an incompatible version, or corrupted).
#[derive(Debug, thiserror::Error)]
#[error("undecodable job")]
pub struct JobDecodeError(#[source] rmp_serde::decode::Error);

impl Job {
    /// The first life of `event`'s job for `route`: a fresh id, attempt 1,
    /// no history. Headers and body are shared with the event's other jobs.
    pub fn first(event: &super::NewEvent<'_>, route: &str) -> Self {
        Self {
            id: ulid::Ulid::generate().to_string(),
            event_id: event.id.to_owned(),
            route: route.to_owned(),
            source: event.source.to_owned(),
            received_ms: event.received_ms,
            attempt: 1,
            headers: event.headers.clone(),
            body: event.body.clone(),
            history: Vec::new(),
            rate_slot_ms: None,
            ordering_key: None,
        }
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        // Sized up front: growing a body-sized buffer by doubling showed up
        // as realloc and memmove in ingest profiles.
        let mut out = Vec::with_capacity(ENCODING_OVERHEAD + self.headers.len() + self.body.len());
        rmp_serde::encode::write_named(&mut out, self)
            .expect("a Job is strings, numbers and bytes, which always serialize");
        out
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<Self, JobDecodeError> {
        rmp_serde::from_slice(bytes).map_err(JobDecodeError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn jobs_survive_encoding(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            headers in proptest::collection::vec(any::<u8>(), 0..100),
            attempt in 1u32..20,
            status in proptest::option::of(100u16..600),
            rate_slot_ms in proptest::option::of(any::<u64>()),
            ordering_key in proptest::option::of(".{0,40}"),
        ) {
            let job = Job {
                id: "01J".into(),
                event_id: "01E".into(),
                route: "r".into(),
                source: "s".into(),
                received_ms: 1,
                attempt,
                headers: headers.into(),
                body: body.into(),
                history: vec![AttemptRecord { attempt: 1, at_ms: 2, status, error: None, latency_ms: 3 }],
                rate_slot_ms,
                ordering_key,
            };
            prop_assert_eq!(Job::decode(&job.encode()).expect("decodes"), job);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Job::decode(b"\xc1 not msgpack").is_err());
    }
}
