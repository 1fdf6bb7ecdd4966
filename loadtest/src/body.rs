//! The JSON body every generated request carries, and its parsing on the
//! receiving side: `{"id":"evt_<run>-<seq>","lt_id":"<run>-<seq>","lt_sent_ns":<unix ns>,"pad":"…"}`.
//! `id` is where Stripe puts its event id (the gateway's dedupe key for
//! Stripe), so every request is a fresh event for every scheme.

use serde::Deserialize;

/// The id of request `seq` of run `run` (a per-process hex tag, so the sink
/// can tell this run's deliveries from leftovers of an earlier one).
pub fn request_id(run: &str, seq: u64) -> String {
    format!("{run}-{seq}")
}

/// A body of exactly `size` bytes when `size` is at least the bare JSON
/// (about 60 bytes); never shorter than that.
pub fn build(id: &str, sent_ns: u64, size: usize) -> Vec<u8> {
    use std::io::Write as _;
    let tail = b"\"}";
    // Written in place: one allocation per body.
    let mut body = Vec::with_capacity(size.max(2 * id.len() + 80));
    write!(
        body,
        r#"{{"id":"evt_{id}","lt_id":"{id}","lt_sent_ns":{sent_ns},"pad":""#
    )
    .expect("writing to a Vec cannot fail");
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
    pub sent_ns: u64,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    lt_id: &'a str,
    lt_sent_ns: u64,
}

/// `None` for a body that is not one of ours.
pub fn parse(body: &[u8]) -> Option<Parsed<'_>> {
    let wire: Wire<'_> = serde_json::from_slice(body).ok()?;
    let (run, seq) = wire.lt_id.rsplit_once('-')?;
    Some(Parsed {
        run,
        seq: seq.parse().ok()?,
        sent_ns: wire.lt_sent_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_body_has_the_requested_size_and_parses_back() {
        for size in [0, 10, 100, 1024, 65536] {
            let id = request_id("a1b2c3", 42);
            let body = build(&id, 1_700_000_000_123_456_789, size);
            if size >= 100 {
                assert_eq!(body.len(), size);
            }
            let parsed = parse(&body).expect("parses");
            assert_eq!(
                parsed,
                Parsed {
                    run: "a1b2c3",
                    seq: 42,
                    sent_ns: 1_700_000_000_123_456_789
                }
            );
        }
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
                sent_ns: 7
            })
        );
    }
}
