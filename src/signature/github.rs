//! GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(body)>`; the
//! delivery id is `X-GitHub-Delivery`.

use std::time::SystemTime;

use http::{HeaderMap, HeaderName};

use super::mac::{Sha256Keys, decode_lower_hex};
use super::{Rejection, SignedRequest, Verifier, header, headers_present, optional_header};
use crate::config::Secret;

static SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature-256");
static DELIVERY: HeaderName = HeaderName::from_static("x-github-delivery");

pub struct Github {
    keys: Sha256Keys,
}

impl Github {
    pub fn new(secrets: &[Secret]) -> Self {
        Self {
            keys: Sha256Keys::new(secrets),
        }
    }
}

impl Verifier for Github {
    fn check_head(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        headers_present(headers, &[&SIGNATURE])
    }

    fn verify(&self, request: &SignedRequest<'_>, _: SystemTime) -> Result<(), Rejection> {
        let value = header(request.headers, &SIGNATURE)?;
        let malformed = |reason| Rejection::MalformedSignature {
            header: SIGNATURE.as_str(),
            reason,
        };
        let hex = value
            .strip_prefix("sha256=")
            .ok_or(malformed("expected sha256=<hex>"))?;
        let signature =
            decode_lower_hex::<32>(hex).ok_or(malformed("expected 64 lowercase hex digits"))?;
        if !self.keys.any_matches(&[request.body], &[signature]) {
            return Err(Rejection::InvalidSignature);
        }
        Ok(())
    }

    fn delivery_id(&self, request: &SignedRequest<'_>) -> Option<String> {
        optional_header(request.headers, &DELIVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::tests::{request, verify_with};

    // GitHub's documented example ("Validating webhook deliveries").
    const SECRET: &str = "It's a Secret to Everybody";
    const PAYLOAD: &str = "Hello, World!";
    const SIGNATURE_VALUE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn github(secrets: &[&str]) -> Github {
        Github::new(&crate::signature::tests::secrets(secrets))
    }

    #[test]
    fn accepts_githubs_published_example() {
        let req = request(
            &[
                (SIGNATURE.as_str(), SIGNATURE_VALUE),
                (DELIVERY.as_str(), "d-1"),
            ],
            PAYLOAD,
        );
        assert_eq!(
            verify_with(&github(&[SECRET]), &req),
            Ok(Some("d-1".to_owned()))
        );
    }

    #[test]
    fn any_rotated_secret_verifies() {
        let req = request(&[(SIGNATURE.as_str(), SIGNATURE_VALUE)], PAYLOAD);
        assert_eq!(verify_with(&github(&["old", SECRET]), &req), Ok(None));
    }

    #[test]
    fn rejects_tampering_and_garbage() {
        let tampered = request(&[(SIGNATURE.as_str(), SIGNATURE_VALUE)], "Hello, World?");
        assert_eq!(
            verify_with(&github(&[SECRET]), &tampered),
            Err(Rejection::InvalidSignature)
        );
        let other_secret = request(&[(SIGNATURE.as_str(), SIGNATURE_VALUE)], PAYLOAD);
        assert_eq!(
            verify_with(&github(&["nope"]), &other_secret),
            Err(Rejection::InvalidSignature)
        );
        let missing = request(&[], PAYLOAD);
        assert_eq!(
            verify_with(&github(&[SECRET]), &missing).map_err(|r| r.code().as_str()),
            Err("missing_signature")
        );
        for garbled in [
            "sha1=757107ea",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=zz",
            "sha256=",
        ] {
            let req = request(&[(SIGNATURE.as_str(), garbled)], PAYLOAD);
            assert_eq!(
                verify_with(&github(&[SECRET]), &req).map_err(|r| r.code().as_str()),
                Err("malformed_signature"),
                "{garbled}"
            );
        }
    }

    #[test]
    fn the_right_signature_in_uppercase_hex_is_refused_as_githubs_library_does() {
        let upper = format!(
            "sha256={}",
            SIGNATURE_VALUE["sha256=".len()..].to_ascii_uppercase()
        );
        let req = request(&[(SIGNATURE.as_str(), &upper)], PAYLOAD);
        assert_eq!(
            verify_with(&github(&[SECRET]), &req),
            Err(Rejection::MalformedSignature {
                header: SIGNATURE.as_str(),
                reason: "expected 64 lowercase hex digits"
            })
        );
    }
}
