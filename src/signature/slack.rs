//! Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256("v0:<ts>:<body>")>` with
//! `X-Slack-Request-Timestamp`. Slack sends no delivery id; the timestamp and
//! signature together identify a request (a retry repeats both).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName};

use super::mac::{Sha256Keys, decode_lower_hex};
use super::{Rejection, SignedRequest, Verifier, check_timestamp, header, headers_present};
use crate::config::Secret;

static SIGNATURE: HeaderName = HeaderName::from_static("x-slack-signature");
static TIMESTAMP: HeaderName = HeaderName::from_static("x-slack-request-timestamp");

pub struct Slack {
    keys: Sha256Keys,
    tolerance: Duration,
}

impl Slack {
    pub fn new(secrets: &[Secret], tolerance: Duration) -> Self {
        Self {
            keys: Sha256Keys::new(secrets),
            tolerance,
        }
    }
}

impl Verifier for Slack {
    fn check_head(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        headers_present(headers, &[&SIGNATURE, &TIMESTAMP])
    }

    fn verify(&self, request: &SignedRequest<'_>, now: SystemTime) -> Result<(), Rejection> {
        let value = header(request.headers, &SIGNATURE)?;
        let timestamp = header(request.headers, &TIMESTAMP)?;
        let hex = value
            .strip_prefix("v0=")
            .ok_or(Rejection::MalformedSignature {
                header: SIGNATURE.as_str(),
                reason: "expected v0=<hex>",
            })?;
        let signature = decode_lower_hex::<32>(hex).ok_or(Rejection::MalformedSignature {
            header: SIGNATURE.as_str(),
            reason: "expected 64 lowercase hex digits",
        })?;
        if !self.keys.any_matches(
            &[b"v0:", timestamp.as_bytes(), b":", request.body],
            &[signature],
        ) {
            return Err(Rejection::InvalidSignature);
        }
        check_timestamp(TIMESTAMP.as_str(), timestamp, now, self.tolerance)?;
        Ok(())
    }

    /// Slack has no delivery id; a retry repeats timestamp and signature.
    fn delivery_id(&self, request: &SignedRequest<'_>) -> Option<String> {
        let timestamp = header(request.headers, &TIMESTAMP).ok()?;
        let signature = header(request.headers, &SIGNATURE).ok()?;
        Some(format!("{timestamp}:{signature}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::tests::{request, run, secrets, unix};

    // Slack's documented example ("Verifying requests from Slack").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE_VALUE: &str =
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn slack(keys: &[&str]) -> Slack {
        Slack::new(&secrets(keys), Duration::from_secs(300))
    }

    /// Slack's example request, signed as `signature` at `timestamp`.
    fn signed(signature: &str, timestamp: &str) -> crate::signature::tests::TestRequest {
        request(
            &[
                (SIGNATURE.as_str(), signature),
                (TIMESTAMP.as_str(), timestamp),
            ],
            BODY,
        )
    }

    #[test]
    fn accepts_slacks_published_example() {
        let req = signed(SIGNATURE_VALUE, TS);
        let id = run(
            &slack(&["rotated-out", SECRET]),
            &req.as_signed(),
            unix(1_531_420_618 + 60),
        );
        assert_eq!(id, Ok(Some(format!("{TS}:{SIGNATURE_VALUE}"))));
    }

    #[test]
    fn refuses_replays_tampering_and_missing_parts() {
        let req = signed(SIGNATURE_VALUE, TS);
        let late = run(
            &slack(&[SECRET]),
            &req.as_signed(),
            unix(1_531_420_618 + 301),
        );
        assert_eq!(
            late.map_err(|r| r.code().as_str()),
            Err("timestamp_out_of_tolerance")
        );

        let tampered = signed(SIGNATURE_VALUE, "1531420619");
        assert_eq!(
            run(
                &slack(&[SECRET]),
                &tampered.as_signed(),
                unix(1_531_420_619)
            ),
            Err(Rejection::InvalidSignature)
        );

        let upper = format!("v0={}", SIGNATURE_VALUE["v0=".len()..].to_ascii_uppercase());
        let uppercase = signed(&upper, TS);
        assert_eq!(
            run(
                &slack(&[SECRET]),
                &uppercase.as_signed(),
                unix(1_531_420_618)
            )
            .map_err(|r| r.code().as_str()),
            Err("malformed_signature"),
            "Slack's SDK compares the lowercase hex string exactly"
        );

        let no_ts = request(&[(SIGNATURE.as_str(), SIGNATURE_VALUE)], BODY);
        assert_eq!(
            run(&slack(&[SECRET]), &no_ts.as_signed(), unix(1_531_420_618)),
            Err(Rejection::MissingSignature {
                header: TIMESTAMP.as_str()
            })
        );
    }
}
