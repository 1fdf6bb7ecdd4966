//! Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(body)>`; the
//! delivery id is `X-Shopify-Webhook-Id`.

use std::time::SystemTime;

use http::{HeaderMap, HeaderName};

use super::mac::{Sha256Keys, decode_base64};
use super::{Rejection, SignedRequest, Verifier, header, headers_present, optional_header};
use crate::config::Secret;

static SIGNATURE: HeaderName = HeaderName::from_static("x-shopify-hmac-sha256");
static DELIVERY: HeaderName = HeaderName::from_static("x-shopify-webhook-id");

pub struct Shopify {
    keys: Sha256Keys,
}

impl Shopify {
    pub fn new(secrets: &[Secret]) -> Self {
        Self {
            keys: Sha256Keys::new(secrets),
        }
    }
}

impl Verifier for Shopify {
    fn check_head(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        headers_present(headers, &[&SIGNATURE])
    }

    fn verify(&self, request: &SignedRequest<'_>, _: SystemTime) -> Result<(), Rejection> {
        let value = header(request.headers, &SIGNATURE)?;
        let signature = decode_base64(value, 32).ok_or(Rejection::MalformedSignature {
            header: SIGNATURE.as_str(),
            reason: "expected base64 of 32 bytes",
        })?;
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
    use crate::signature::tests::{hmac_sha256_base64, request, run, secrets, unix};

    #[test]
    fn verifies_base64_signatures_and_reads_the_webhook_id() {
        let body = r#"{"id":820982911946154508,"email":"jon@example.com"}"#;
        let signature = hmac_sha256_base64("shpss_secret", body);
        let shopify = Shopify::new(&secrets(&["shpss_secret"]));
        let req = request(
            &[
                (SIGNATURE.as_str(), &signature),
                (DELIVERY.as_str(), "b54557e4"),
            ],
            body,
        );
        assert_eq!(
            run(&shopify, &req.as_signed(), unix(0)),
            Ok(Some("b54557e4".to_owned()))
        );

        let tampered = request(
            &[(SIGNATURE.as_str(), &signature)],
            &body.replace("jon", "eve"),
        );
        assert_eq!(
            run(&shopify, &tampered.as_signed(), unix(0)),
            Err(Rejection::InvalidSignature)
        );
        let garbled = request(&[(SIGNATURE.as_str(), "not base64!")], body);
        assert_eq!(
            run(&shopify, &garbled.as_signed(), unix(0)).map_err(|r| r.code().as_str()),
            Err("malformed_signature")
        );
    }
}
