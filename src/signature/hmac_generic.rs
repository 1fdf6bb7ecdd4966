//! The generic `hmac` scheme: a configured header carries
//! `<prefix><hex or base64 HMAC(body)>` with SHA-1, SHA-256 or SHA-512; an
//! optional configured header carries the delivery id.

use std::time::SystemTime;

use http::{HeaderMap, HeaderName};

use super::mac::{Keys, Sha1Keys, Sha256Keys, Sha512Keys, decode_base64};
use super::{Rejection, SignedRequest, Verifier, labelled_header, optional_header};
use crate::config::{HmacAlgorithm, HmacScheme, Secret, SignatureEncoding};

/// The keyed MAC of the configured algorithm.
enum AnyKeys {
    Sha1(Sha1Keys),
    Sha256(Sha256Keys),
    Sha512(Sha512Keys),
}

pub struct GenericHmac {
    keys: AnyKeys,
    header: HeaderName,
    encoding: SignatureEncoding,
    prefix: String,
    dedupe_header: Option<HeaderName>,
}

impl GenericHmac {
    pub fn new(secrets: &[Secret], settings: &HmacScheme) -> Self {
        let keys = match settings.algorithm {
            HmacAlgorithm::Sha1 => AnyKeys::Sha1(Keys::new(secrets)),
            HmacAlgorithm::Sha256 => AnyKeys::Sha256(Keys::new(secrets)),
            HmacAlgorithm::Sha512 => AnyKeys::Sha512(Keys::new(secrets)),
        };
        Self {
            keys,
            header: settings.header.clone(),
            encoding: settings.encoding,
            prefix: settings.prefix.clone().unwrap_or_default(),
            dedupe_header: settings.dedupe_header.clone(),
        }
    }

    fn digest_len(&self) -> usize {
        match self.keys {
            AnyKeys::Sha1(_) => 20,
            AnyKeys::Sha256(_) => 32,
            AnyKeys::Sha512(_) => 64,
        }
    }
}

/// How rejections name the signature header: its name is configured, so
/// they cannot name it statically.
const HEADER: &str = "signature";

impl Verifier for GenericHmac {
    fn check_head(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        labelled_header(headers, &self.header, HEADER).map(drop)
    }

    fn verify(&self, request: &SignedRequest<'_>, _: SystemTime) -> Result<(), Rejection> {
        let value = labelled_header(request.headers, &self.header, HEADER)?;
        let encoded =
            value
                .strip_prefix(self.prefix.as_str())
                .ok_or(Rejection::MalformedSignature {
                    header: HEADER,
                    reason: "does not start with the configured prefix",
                })?;
        let len = self.digest_len();
        let signature = match self.encoding {
            SignatureEncoding::Hex => {
                // Into a fixed buffer: collecting hex into a Vec costs more than the MAC of 1 KiB.
                let mut buf = [0u8; 64];
                hex::decode_to_slice(encoded, &mut buf[..len])
                    .ok()
                    .map(|()| buf[..len].to_vec())
            }
            SignatureEncoding::Base64 => decode_base64(encoded, len),
        }
        .ok_or(Rejection::MalformedSignature {
            header: HEADER,
            reason: "not an encoded digest of the configured algorithm",
        })?;
        let message = [request.body];
        let matched = match &self.keys {
            AnyKeys::Sha1(keys) => keys.any_matches(&message, &[&signature]),
            AnyKeys::Sha256(keys) => keys.any_matches(&message, &[&signature]),
            AnyKeys::Sha512(keys) => keys.any_matches(&message, &[&signature]),
        };
        if !matched {
            return Err(Rejection::InvalidSignature);
        }
        Ok(())
    }

    fn delivery_id(&self, request: &SignedRequest<'_>) -> Option<String> {
        self.dedupe_header
            .as_ref()
            .and_then(|name| optional_header(request.headers, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::tests::{request, run, secrets, unix};

    fn generic(
        algorithm: HmacAlgorithm,
        encoding: SignatureEncoding,
        prefix: Option<&str>,
    ) -> GenericHmac {
        GenericHmac::new(
            &secrets(&["key"]),
            &HmacScheme {
                header: HeaderName::from_static("x-signature"),
                algorithm,
                encoding,
                prefix: prefix.map(str::to_owned),
                dedupe_header: Some(HeaderName::from_static("x-delivery")),
            },
        )
    }

    // The widely published HMAC examples for key "key" and the pangram
    // (also what `openssl dgst -hmac key` prints).
    const BODY: &str = "The quick brown fox jumps over the lazy dog";
    const SHA1_HEX: &str = "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9";
    const SHA256_HEX: &str = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
    const SHA512_HEX: &str = "b42af09057bac1e2d41708e48a902e09b5ff7f12ab428a4fe86653c73dd248fb82f948a549f7b791a5b41915ee4d1ec3935357e4e2317250d0372afa2ebeeb3a";

    #[test]
    fn verifies_each_algorithm_and_encoding() {
        use base64::Engine as _;
        for (algorithm, hex_sig) in [
            (HmacAlgorithm::Sha1, SHA1_HEX),
            (HmacAlgorithm::Sha256, SHA256_HEX),
            (HmacAlgorithm::Sha512, SHA512_HEX),
        ] {
            let hex_req = request(
                &[
                    ("x-signature", &format!("sha=${hex_sig}")),
                    ("x-delivery", "d1"),
                ],
                BODY,
            );
            assert_eq!(
                run(
                    &generic(algorithm, SignatureEncoding::Hex, Some("sha=$")),
                    &hex_req.as_signed(),
                    unix(0)
                ),
                Ok(Some("d1".to_owned())),
                "{algorithm:?} hex"
            );
            let raw = hex::decode(hex_sig).expect("test vector");
            let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
            let b64_req = request(&[("x-signature", &b64)], BODY);
            assert_eq!(
                run(
                    &generic(algorithm, SignatureEncoding::Base64, None),
                    &b64_req.as_signed(),
                    unix(0)
                ),
                Ok(None),
                "{algorithm:?} base64"
            );
        }
    }

    #[test]
    fn refuses_wrong_prefix_wrong_length_and_tampering() {
        let verifier = generic(HmacAlgorithm::Sha256, SignatureEncoding::Hex, Some("v1="));
        let code = |value: &str, body: &str| {
            run(
                &verifier,
                &request(&[("x-signature", value)], body).as_signed(),
                unix(0),
            )
            .map_err(|r| r.code().as_str())
        };
        assert_eq!(
            code(&format!("v2={SHA256_HEX}"), BODY),
            Err("malformed_signature")
        );
        assert_eq!(
            code(&format!("v1={SHA1_HEX}"), BODY),
            Err("malformed_signature")
        );
        assert_eq!(
            code(&format!("v1={SHA256_HEX}"), "the quick brown fox"),
            Err("invalid_signature")
        );
        assert_eq!(
            run(&verifier, &request(&[], BODY).as_signed(), unix(0)).map_err(|r| r.code().as_str()),
            Err("missing_signature")
        );
        // Twice, even with the right value once: which one counted is ambiguous.
        let good = format!("v1={SHA256_HEX}");
        assert!(code(&good, BODY).is_ok());
        let twice = request(&[("x-signature", "v1=00"), ("x-signature", &good)], BODY);
        assert_eq!(
            run(&verifier, &twice.as_signed(), unix(0)),
            Err(Rejection::MalformedSignature {
                header: "signature",
                reason: "sent more than once"
            })
        );
    }
}
