//! The JSON body every generated request carries, and its parsing on the
//! receiving side: `{"id":"evt_<run>-<seq>","lt_id":"<run>-<seq>","lt_sent_ns":<unix ns>,"pad":"…"}`,
//! with `"lt_key":"k<n>"` after `lt_id` when the run spreads its events
//! over ordering keys (`/lt_key` is then the source's `ordering_key`).
//! `id` is where Stripe puts its event id (the gateway's dedupe key for
//! Stripe), so every request is a fresh event for every scheme.

use serde::Deserialize;

/// The id of request `seq` of run `run` (a per-process hex tag, so the sink
/// can tell this run's deliveries from leftovers of an earlier one).
pub fn request_id(run: &str, seq: u64) -> String {
    format!("{run}-{seq}")
}

/// The ordering key of request `seq` when a run spreads its events over
/// `keys` keys: round robin, so each key's events are sent in seq order.
pub fn key_of(seq: u64, keys: u64) -> String {
    format!("k{}", seq % keys.max(1))
}

/// A body of exactly `size` bytes when `size` is at least the bare JSON
/// (about 60 bytes); never shorter than that.
pub fn build(id: &str, key: Option<&str>, sent_ns: u64, size: usize) -> Vec<u8> {
    use std::io::Write as _;
    let tail = b"\"}";
    // Written in place: one allocation per body.
    let mut body = Vec::with_capacity(size.max(2 * id.len() + 100));
    write!(body, r#"{{"id":"evt_{id}","lt_id":"{id}","#).expect("writing to a Vec cannot fail");
    if let Some(key) = key {
        write!(body, r#""lt_key":"{key}","#).expect("writing to a Vec cannot fail");
    }
    write!(body, r#""lt_sent_ns":{sent_ns},"pad":""#).expect("writing to a Vec cannot fail");
    let padded = size.saturating_sub(tail.len()).max(body.len());
    body.resize(padded, b'x');
    body.extend_from_slice(tail);
    body
}

/// What the sink reads back from a delivered body.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub run: &'a str,
    pub seq: u64,
    pub key: Option<&'a str>,
    pub sent_ns: u64,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    lt_id: &'a str,
    #[serde(borrow)]
    lt_key: Option<&'a str>,
    lt_sent_ns: u64,
}

/// `None` for a body that is not one of ours.
pub fn parse(body: &[u8]) -> Option<Parsed<'_>> {
    let wire: Wire<'_> = serde_json::from_slice(body).ok()?;
    let (run, seq) = wire.lt_id.rsplit_once('-')?;
    Some(Parsed {
        run,
        seq: seq.parse().ok()?,
        key: wire.lt_key,
        sent_ns: wire.lt_sent_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_body_has_the_requested_size_and_parses_back() {
        for key in [None, Some("k42")] {
            for size in [0, 10, 100, 1024, 65536] {
                let id = request_id("a1b2c3", 42);
                let body = build(&id, key, 1_700_000_000_123_456_789, size);
                if size >= 120 {
                    assert_eq!(body.len(), size);
                }
                let parsed = parse(&body).expect("parses");
                assert_eq!(
                    parsed,
                    Parsed {
                        run: "a1b2c3",
                        seq: 42,
                        key,
                        sent_ns: 1_700_000_000_123_456_789
                    }
                );
            }
        }
        assert_eq!(key_of(1042, 1000), "k42");
        assert_eq!(key_of(7, 1), "k0");
    }

    #[test]
    fn foreign_bodies_are_not_ours() {
        assert_eq!(parse(b"{\"action\":\"opened\"}"), None);
        assert_eq!(parse(b"not json"), None);
        assert_eq!(parse(br#"{"lt_id":"noseq","lt_sent_ns":1}"#), None);
        assert_eq!(parse(br#"{"lt_id":"r-x","lt_sent_ns":1}"#), None);
        // Other fields, in any order, are fine.
        assert_eq!(
            parse(br#"{"z":[1,2],"lt_sent_ns":7,"lt_id":"run-tag-3"}"#),
            Some(Parsed {
                run: "run-tag",
                seq: 3,
                key: None,
                sent_ns: 7
            })
        );
    }
}
