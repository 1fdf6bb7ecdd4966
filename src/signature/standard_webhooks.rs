//! Standard Webhooks (and Svix, which uses `svix-*` header names):
//! `webhook-signature: v1,<base64 HMAC-SHA256("<id>.<ts>.<body>")>`, a
//! space-separated list of which any entry may match. The secret is
//! `whsec_<base64 key>`; config resolution already decoded it.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::mac::{Sha256Keys, decode_base64};
use super::{
    Rejection, SignedRequest, Verifier, check_timestamp, header, header_text, headers_present,
    optional_header,
};
use crate::config::Secret;

/// (id, timestamp, signature) header names of each dialect.
static STANDARD: [HeaderName; 3] = [
    HeaderName::from_static("webhook-id"),
    HeaderName::from_static("webhook-timestamp"),
    HeaderName::from_static("webhook-signature"),
];
static SVIX: [HeaderName; 3] = [
    HeaderName::from_static("svix-id"),
    HeaderName::from_static("svix-timestamp"),
    HeaderName::from_static("svix-signature"),
];
/// More entries than any sender uses; bounds the work per request.
const MAX_SIGNATURES: usize = 8;

pub struct StandardWebhooks {
    keys: Sha256Keys,
    tolerance: Duration,
}

impl StandardWebhooks {
    pub fn new(secrets: &[Secret], tolerance: Duration) -> Self {
        Self {
            keys: Sha256Keys::new(secrets),
            tolerance,
        }
    }
}

impl StandardWebhooks {
    /// The header names in use and the signature list: `webhook-*` unless
    /// only `svix-*` is present (one lookup in the usual case).
    fn dialect(headers: &HeaderMap) -> (&'static [HeaderName; 3], Option<&HeaderValue>) {
        match headers.get(&STANDARD[2]) {
            Some(value) => (&STANDARD, Some(value)),
            None => match headers.get(&SVIX[2]) {
                Some(value) => (&SVIX, Some(value)),
                None => (&STANDARD, None),
            },
        }
    }
}

impl Verifier for StandardWebhooks {
    fn check_head(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let (names, signatures) = Self::dialect(headers);
        let [id_name, ts_name, sig_name] = names;
        header_text(sig_name, signatures)?;
        headers_present(headers, &[id_name, ts_name])
    }

    fn verify(&self, request: &SignedRequest<'_>, now: SystemTime) -> Result<(), Rejection> {
        let (names, signatures) = Self::dialect(request.headers);
        let [id_name, ts_name, sig_name] = names;
        let signatures = header_text(sig_name, signatures)?;
        let id = header(request.headers, id_name)?;
        let timestamp = header(request.headers, ts_name)?;
        let candidates: Vec<Vec<u8>> = signatures
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|b64| decode_base64(b64, 32))
            .take(MAX_SIGNATURES + 1)
            .collect();
        if candidates.is_empty() {
            return Err(Rejection::MalformedSignature {
                header: sig_name.as_str(),
                reason: "no v1,<base64> signature",
            });
        }
        if candidates.len() > MAX_SIGNATURES {
            return Err(Rejection::MalformedSignature {
                header: sig_name.as_str(),
                reason: "too many signatures",
            });
        }
        let message = [
            id.as_bytes(),
            b".",
            timestamp.as_bytes(),
            b".",
            request.body,
        ];
        if !self.keys.any_matches(&message, &candidates) {
            return Err(Rejection::InvalidSignature);
        }
        check_timestamp(ts_name.as_str(), timestamp, now, self.tolerance)?;
        Ok(())
    }

    fn delivery_id(&self, request: &SignedRequest<'_>) -> Option<String> {
        let ([id, _, _], _) = Self::dialect(request.headers);
        optional_header(request.headers, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::tests::{request, run, unix};

    // The Standard Webhooks specification's reference example.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: &str = "1614265330";
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE_VALUE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn verifier() -> StandardWebhooks {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD
            .decode(&SECRET["whsec_".len()..])
            .expect("reference secret decodes");
        StandardWebhooks::new(&[Secret::new(key)], Duration::from_secs(300))
    }

    #[test]
    fn accepts_the_reference_example_under_both_header_dialects() {
        for [id, ts, sig] in [&STANDARD, &SVIX] {
            let (id, ts, sig) = (id.as_str(), ts.as_str(), sig.as_str());
            let req = request(&[(id, ID), (ts, TS), (sig, SIGNATURE_VALUE)], BODY);
            assert_eq!(
                run(&verifier(), &req.as_signed(), unix(1_614_265_330)),
                Ok(Some(ID.to_owned())),
                "{sig}"
            );
        }
    }

    #[test]
    fn any_entry_of_the_list_may_match() {
        let list = format!("v1a,ignored v1,{} {SIGNATURE_VALUE}", "A".repeat(43) + "=");
        let req = request(
            &[
                ("webhook-id", ID),
                ("webhook-timestamp", TS),
                ("webhook-signature", &list),
            ],
            BODY,
        );
        assert!(run(&verifier(), &req.as_signed(), unix(1_614_265_330)).is_ok());
    }

    #[test]
    fn refuses_tampering_replays_and_garbage() {
        let signed = |id: &str, ts: &str, sig: &str, body: &str| {
            request(
                &[
                    ("webhook-id", id),
                    ("webhook-timestamp", ts),
                    ("webhook-signature", sig),
                ],
                body,
            )
        };
        let at = unix(1_614_265_330);
        let code = |req: &crate::signature::tests::TestRequest, now| {
            run(&verifier(), &req.as_signed(), now).map_err(|r| r.code().as_str())
        };
        assert_eq!(
            code(&signed("msg_other", TS, SIGNATURE_VALUE, BODY), at),
            Err("invalid_signature")
        );
        assert_eq!(
            code(&signed(ID, TS, SIGNATURE_VALUE, "{}"), at),
            Err("invalid_signature")
        );
        assert_eq!(
            code(
                &signed(ID, TS, SIGNATURE_VALUE, BODY),
                unix(1_614_265_330 + 301)
            ),
            Err("timestamp_out_of_tolerance")
        );
        assert_eq!(
            code(&signed(ID, TS, "v2,abc", BODY), at),
            Err("malformed_signature")
        );
        assert_eq!(
            code(
                &request(&[("webhook-signature", SIGNATURE_VALUE)], BODY),
                at
            ),
            Err("missing_signature")
        );
    }
}
