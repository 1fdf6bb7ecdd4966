//! Stripe: `Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256("<ts>.<body>")>`,
//! any `v1` may match (Stripe sends several while a secret is rolled); the
//! delivery id is the event's `id` in the JSON body.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use http::{HeaderMap, HeaderName};

use super::mac::{Sha256Keys, decode_lower_hex};
use super::{Rejection, SignedRequest, Verifier, check_timestamp, header, headers_present};
use crate::config::Secret;

static SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");
/// More `v1` entries than any sender uses; bounds the work per request.
const MAX_SIGNATURES: usize = 8;

pub struct Stripe {
    keys: Sha256Keys,
    tolerance: Duration,
}

impl Stripe {
    pub fn new(secrets: &[Secret], tolerance: Duration) -> Self {
        Self {
            keys: Sha256Keys::new(secrets),
            tolerance,
        }
    }
}

#[derive(Deserialize)]
struct EventId<'a> {
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
}

impl Verifier for Stripe {
    fn check_head(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        headers_present(headers, &[&SIGNATURE])
    }

    fn verify(&self, request: &SignedRequest<'_>, now: SystemTime) -> Result<(), Rejection> {
        let value = header(request.headers, &SIGNATURE)?;
        let malformed = |reason| Rejection::MalformedSignature {
            header: SIGNATURE.as_str(),
            reason,
        };
        let mut timestamp = None;
        // A fixed array: an allocation here costs as much as the parsing.
        let mut signatures = [[0u8; 32]; MAX_SIGNATURES];
        let mut count = 0;
        for item in value.split(',') {
            let Some((key, val)) = item.trim().split_once('=') else {
                return Err(malformed("expected t=<ts>,v1=<hex>"));
            };
            match key {
                "t" if timestamp.is_none() => timestamp = Some(val),
                "t" => return Err(malformed("more than one t=")),
                // A v1 that is not 64 lowercase hex digits cannot match; others may.
                "v1" => {
                    if let Some(signature) = decode_lower_hex::<32>(val) {
                        let slot = signatures
                            .get_mut(count)
                            .ok_or(malformed("too many v1= signatures"))?;
                        *slot = signature;
                        count += 1;
                    }
                }
                // v0 (test mode legacy) and future schemes are ignored.
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(malformed("no t= timestamp"))?;
        if count == 0 {
            return Err(malformed("no v1= signature of 64 lowercase hex digits"));
        }
        if !self.keys.any_matches(
            &[timestamp.as_bytes(), b".", request.body],
            &signatures[..count],
        ) {
            return Err(Rejection::InvalidSignature);
        }
        check_timestamp(SIGNATURE.as_str(), timestamp, now, self.tolerance)?;
        Ok(())
    }

    /// The event's `id` from the JSON body.
    fn delivery_id(&self, request: &SignedRequest<'_>) -> Option<String> {
        serde_json::from_slice::<EventId<'_>>(request.body)
            .ok()
            .and_then(|event| event.id)
            .map(|id| id.into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::tests::{hmac_sha256_hex, request, run, secrets, unix};

    const SECRET: &str = "whsec_test_secret";
    const BODY: &str = r#"{"id":"evt_123","type":"invoice.paid"}"#;

    fn stripe(keys: &[&str]) -> Stripe {
        Stripe::new(&secrets(keys), Duration::from_secs(300))
    }

    fn header_for(secret: &str, t: u64, body: &str) -> String {
        format!(
            "t={t},v1={}",
            hmac_sha256_hex(secret, &format!("{t}.{body}"))
        )
    }

    #[test]
    fn accepts_a_signed_event_and_returns_its_id() {
        let req = request(
            &[(SIGNATURE.as_str(), &header_for(SECRET, 1_700_000_000, BODY))],
            BODY,
        );
        assert_eq!(
            run(&stripe(&[SECRET]), &req.as_signed(), unix(1_700_000_100)),
            Ok(Some("evt_123".to_owned()))
        );
    }

    #[test]
    fn any_v1_of_several_may_match() {
        let good = header_for(SECRET, 1_700_000_000, BODY);
        let value = format!("t=1700000000,v1={},{},v0=abc", "00".repeat(32), &good[13..]);
        let req = request(&[(SIGNATURE.as_str(), &value)], BODY);
        assert!(run(&stripe(&[SECRET]), &req.as_signed(), unix(1_700_000_000)).is_ok());
    }

    #[test]
    fn the_right_signature_in_uppercase_hex_is_refused_as_stripes_library_does() {
        let good = header_for(SECRET, 1_700_000_000, BODY);
        let (t, v1) = good.split_once(",v1=").expect("t=…,v1=…");
        let upper = format!("{t},v1={}", v1.to_ascii_uppercase());
        let req = request(&[(SIGNATURE.as_str(), &upper)], BODY);
        assert_eq!(
            run(&stripe(&[SECRET]), &req.as_signed(), unix(1_700_000_000))
                .map_err(|r| r.code().as_str()),
            Err("malformed_signature")
        );
        // Beside a lowercase one that matches, it is skipped, not an error.
        let both = format!("{upper},v1={v1}");
        let req = request(&[(SIGNATURE.as_str(), &both)], BODY);
        assert!(run(&stripe(&[SECRET]), &req.as_signed(), unix(1_700_000_000)).is_ok());
    }

    #[test]
    fn timestamps_outside_tolerance_are_refused_both_ways() {
        let req = request(
            &[(SIGNATURE.as_str(), &header_for(SECRET, 1_700_000_000, BODY))],
            BODY,
        );
        for now in [1_700_000_000 + 301, 1_700_000_000 - 301] {
            assert_eq!(
                run(&stripe(&[SECRET]), &req.as_signed(), unix(now)).map_err(|r| r.code().as_str()),
                Err("timestamp_out_of_tolerance")
            );
        }
    }

    #[test]
    fn garbled_headers_are_malformed() {
        for value in [
            "",
            "t=1",
            "v1=ab",
            "t=1,t=2,v1=ab",
            "garbage",
            "t=abc,v1=".repeat(2).as_str(),
        ] {
            let req = request(&[(SIGNATURE.as_str(), value)], BODY);
            assert_eq!(
                run(&stripe(&[SECRET]), &req.as_signed(), unix(1)).map_err(|r| r.code().as_str()),
                Err("malformed_signature"),
                "{value:?}"
            );
        }
    }
}
