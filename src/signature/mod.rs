//! Signature verification: one [`Verifier`] per scheme, run by
//! [`VerifyLayer`] in front of a source's handler.
//!
//! A verifier sees the request head and the whole body (read once) and either
//! proves the request came from the sender, returning the sender's delivery
//! id for deduplication, or names why not. Comparisons are constant-time and
//! no rejection reveals an expected value. This module knows nothing of Redis.

mod github;
mod gitlab;
mod hmac_generic;
mod layer;
mod mac;
mod shopify;
mod slack;
mod standard_webhooks;
mod stripe;
mod twilio;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};

use crate::api_error::{ApiError, ErrorCode};
use crate::config::{Scheme, Source};

pub use layer::{Verified, Verify, VerifyLayer};

/// What a verifier looks at.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Request URI as received (path and query).
    pub uri: &'a Uri,
    /// The whole body.
    pub body: &'a [u8],
}

/// Proves (or refutes) that a request came from its sender.
pub trait Verifier: Send + Sync + 'static {
    /// Checks, from the head alone, that the headers the scheme cannot do
    /// without are there (once each, as text). Run before the body is read
    /// of a client that asked for `Expect: 100-continue`, so that one is
    /// refused before hyper invites it to send its body.
    /// [`Verifier::verify`] checks them again with the rest.
    fn check_head(&self, headers: &HeaderMap) -> Result<(), Rejection>;

    /// Checks that `request` was signed by the sender, at time `now`.
    fn verify(&self, request: &SignedRequest<'_>, now: SystemTime) -> Result<(), Rejection>;

    /// The sender's delivery id of a verified request, when the scheme has
    /// one; the gateway deduplicates on it.
    fn delivery_id(&self, request: &SignedRequest<'_>) -> Option<String>;
}

/// Why a request was refused. Messages never contain secrets or expected
/// signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A header the scheme needs is absent.
    #[error("missing {header} header")]
    MissingSignature {
        /// The header.
        header: &'static str,
    },
    /// A header is present but cannot be parsed.
    #[error("malformed {header} header: {reason}")]
    MalformedSignature {
        /// The header.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Well-formed, but no signature matches any configured secret.
    #[error("signature does not match")]
    InvalidSignature,
    /// The signed timestamp is too far from now (a replay or a skewed clock).
    #[error("timestamp is {skew_secs}s away from now; at most {tolerance_secs}s is accepted")]
    TimestampOutOfTolerance {
        /// How far the timestamp is from now, in seconds.
        skew_secs: u64,
        /// The source's tolerance, in seconds.
        tolerance_secs: u64,
    },
}

impl Rejection {
    /// The stable error code answered to the sender and used as metric label.
    pub fn code(&self) -> ErrorCode {
        match self {
            Rejection::MissingSignature { .. } => ErrorCode::MissingSignature,
            Rejection::MalformedSignature { .. } => ErrorCode::MalformedSignature,
            Rejection::InvalidSignature => ErrorCode::InvalidSignature,
            Rejection::TimestampOutOfTolerance { .. } => ErrorCode::TimestampOutOfTolerance,
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            rejection.code(),
            rejection.to_string(),
        )
    }
}

/// Accepts everything (`scheme = "none"`, which must be explicit).
struct Unsigned;

impl Verifier for Unsigned {
    fn check_head(&self, _: &HeaderMap) -> Result<(), Rejection> {
        Ok(())
    }

    fn verify(&self, _: &SignedRequest<'_>, _: SystemTime) -> Result<(), Rejection> {
        Ok(())
    }

    fn delivery_id(&self, _: &SignedRequest<'_>) -> Option<String> {
        None
    }
}

/// Builds the verifier for `source`.
pub fn verifier_for(source: &Source) -> Arc<dyn Verifier> {
    let secrets = &source.secrets;
    let tolerance = source.tolerance;
    match &source.scheme {
        Scheme::Github => Arc::new(github::Github::new(secrets)),
        Scheme::Stripe => Arc::new(stripe::Stripe::new(secrets, tolerance)),
        Scheme::Slack => Arc::new(slack::Slack::new(secrets, tolerance)),
        Scheme::Shopify => Arc::new(shopify::Shopify::new(secrets)),
        Scheme::StandardWebhooks => {
            Arc::new(standard_webhooks::StandardWebhooks::new(secrets, tolerance))
        }
        Scheme::Gitlab => Arc::new(gitlab::Gitlab::new(secrets)),
        Scheme::Twilio { public_url } => Arc::new(twilio::Twilio::new(secrets, public_url)),
        Scheme::Hmac(settings) => Arc::new(hmac_generic::GenericHmac::new(secrets, settings)),
        Scheme::None => Arc::new(Unsigned),
    }
}

/// A header as text, or the right rejection. Names are prepared
/// `HeaderName`s: looking up by `&str` would parse the name on every request.
fn header<'a>(headers: &'a HeaderMap, name: &'static HeaderName) -> Result<&'a str, Rejection> {
    labelled_header(headers, name, name.as_str())
}

/// [`header`] for a header whose name is configured: rejections call it
/// `label`, since they name headers statically.
fn labelled_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    label: &'static str,
) -> Result<&'a str, Rejection> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    // Two values of one signature header are ambiguous (which one was
    // checked?); refuse rather than pick.
    if values.next().is_some() {
        return Err(Rejection::MalformedSignature {
            header: label,
            reason: "sent more than once",
        });
    }
    text_of(label, first)
}

/// [`header`] for each of `names`: present once each, as text.
fn headers_present(headers: &HeaderMap, names: &[&'static HeaderName]) -> Result<(), Rejection> {
    names
        .iter()
        .try_for_each(|name| header(headers, name).map(drop))
}

/// The text of header `name`'s value, or the right rejection.
fn header_text<'a>(
    name: &'static HeaderName,
    value: Option<&'a HeaderValue>,
) -> Result<&'a str, Rejection> {
    text_of(name.as_str(), value)
}

/// The text of the header rejections call `label`.
fn text_of<'a>(label: &'static str, value: Option<&'a HeaderValue>) -> Result<&'a str, Rejection> {
    let value = value.ok_or(Rejection::MissingSignature { header: label })?;
    value.to_str().map_err(|_| Rejection::MalformedSignature {
        header: label,
        reason: "not visible ASCII",
    })
}

/// An optional header as text (delivery ids); non-text values are ignored.
fn optional_header(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Parses a Unix timestamp in seconds and checks it against `tolerance` in
/// both directions (a future timestamp is as suspicious as an old one).
fn check_timestamp(
    header: &'static str,
    text: &str,
    now: SystemTime,
    tolerance: Duration,
) -> Result<i64, Rejection> {
    let malformed = |reason| Rejection::MalformedSignature { header, reason };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("timestamp is not a number of seconds"));
    }
    let timestamp: i64 = text
        .parse()
        .map_err(|_| malformed("timestamp is out of range"))?;
    let now_secs = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    };
    let skew = now_secs.abs_diff(timestamp);
    if skew > tolerance.as_secs() {
        return Err(Rejection::TimestampOutOfTolerance {
            skew_secs: skew,
            tolerance_secs: tolerance.as_secs(),
        });
    }
    Ok(timestamp)
}

#[cfg(test)]
pub(crate) mod tests {
    //! Helpers for the per-scheme tests, and property tests over every
    //! scheme's header parsing.

    use std::time::{Duration, SystemTime};

    use base64::Engine as _;
    use bytes::Bytes;
    use hmac::{Hmac, KeyInit, Mac};
    use http::{HeaderMap, HeaderName, HeaderValue, Uri};
    use proptest::prelude::*;

    use super::*;
    use crate::config::{HmacAlgorithm, HmacScheme, Secret, SignatureEncoding};

    /// An owned request for tests.
    pub struct TestRequest {
        headers: HeaderMap,
        uri: Uri,
        body: Bytes,
    }

    impl TestRequest {
        pub fn as_signed(&self) -> SignedRequest<'_> {
            SignedRequest {
                headers: &self.headers,
                uri: &self.uri,
                body: &self.body,
            }
        }
    }

    pub fn request_to(path: &str, headers: &[(&str, &str)], body: &str) -> TestRequest {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
                HeaderValue::from_str(value).expect("test header value"),
            );
        }
        TestRequest {
            headers: map,
            uri: path.parse().expect("test uri"),
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    pub fn request(headers: &[(&str, &str)], body: &str) -> TestRequest {
        request_to("/hooks/test", headers, body)
    }

    pub fn verify_with(
        verifier: &dyn Verifier,
        req: &TestRequest,
    ) -> Result<Option<String>, Rejection> {
        run(verifier, &req.as_signed(), SystemTime::now())
    }

    /// Verifies, then reads the delivery id, as the layer does.
    pub fn run<V: Verifier + ?Sized>(
        verifier: &V,
        request: &SignedRequest<'_>,
        now: SystemTime,
    ) -> Result<Option<String>, Rejection> {
        verifier.verify(request, now)?;
        Ok(verifier.delivery_id(request))
    }

    pub fn secrets(values: &[&str]) -> Vec<Secret> {
        values
            .iter()
            .map(|v| Secret::new(v.as_bytes().to_vec()))
            .collect()
    }

    pub fn unix(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn mac<M: Mac + KeyInit>(key: &str, message: &str) -> Vec<u8> {
        let mut mac = <M as KeyInit>::new_from_slice(key.as_bytes()).expect("hmac key");
        mac.update(message.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    pub fn hmac_sha256_hex(key: &str, message: &str) -> String {
        hex::encode(mac::<Hmac<sha2::Sha256>>(key, message))
    }

    pub fn hmac_sha256_base64(key: &str, message: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(mac::<Hmac<sha2::Sha256>>(key, message))
    }

    pub fn hmac_sha1_base64(key: &str, message: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(mac::<Hmac<sha1::Sha1>>(key, message))
    }

    /// Every signed scheme, each with the signature headers it reads.
    fn signed_schemes() -> Vec<(Arc<dyn Verifier>, &'static [&'static str])> {
        let keys = secrets(&["proptest-secret"]);
        let tolerance = Duration::from_secs(300);
        let url = url::Url::parse("https://example.com/hooks/t").expect("url");
        let generic = HmacScheme {
            header: HeaderName::from_static("x-signature"),
            algorithm: HmacAlgorithm::Sha256,
            encoding: SignatureEncoding::Hex,
            prefix: Some("sha256=".to_owned()),
            dedupe_header: None,
        };
        vec![
            (
                Arc::new(github::Github::new(&keys)),
                &["x-hub-signature-256"],
            ),
            (
                Arc::new(stripe::Stripe::new(&keys, tolerance)),
                &["stripe-signature"],
            ),
            (
                Arc::new(slack::Slack::new(&keys, tolerance)),
                &["x-slack-signature", "x-slack-request-timestamp"],
            ),
            (
                Arc::new(shopify::Shopify::new(&keys)),
                &["x-shopify-hmac-sha256"],
            ),
            (
                Arc::new(standard_webhooks::StandardWebhooks::new(&keys, tolerance)),
                &["webhook-id", "webhook-timestamp", "webhook-signature"],
            ),
            (Arc::new(gitlab::Gitlab::new(&keys)), &["x-gitlab-token"]),
            (
                Arc::new(twilio::Twilio::new(&keys, &url)),
                &["x-twilio-signature"],
            ),
            (
                Arc::new(hmac_generic::GenericHmac::new(&keys, &generic)),
                &["x-signature"],
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Arbitrary header bytes and bodies never panic and never verify.
        #[test]
        fn arbitrary_headers_never_verify(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 3),
            body in proptest::collection::vec(any::<u8>(), 0..300),
            now in any::<u32>(),
        ) {
            for (verifier, names) in signed_schemes() {
                let mut headers = HeaderMap::new();
                for (name, value) in names.iter().zip(&values) {
                    if let Ok(value) = HeaderValue::from_bytes(value) {
                        headers.insert(*name, value);
                    }
                }
                let uri: Uri = "/hooks/t?bodySHA256=00".parse().expect("uri");
                let request = SignedRequest { headers: &headers, uri: &uri, body: &body };
                prop_assert!(verifier.verify(&request, unix(u64::from(now))).is_err());
            }
        }

        /// The head check refuses only what verification refuses, for the
        /// same reason: it never turns away a request verify would accept,
        /// nor changes the answer (any header may be absent, or anything).
        #[test]
        fn the_head_check_refuses_only_what_verify_refuses_and_alike(
            values in proptest::collection::vec(
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)), 3),
            body in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            for (verifier, names) in signed_schemes() {
                let mut headers = HeaderMap::new();
                for (name, value) in names.iter().zip(&values) {
                    if let Some(Ok(value)) = value.as_deref().map(HeaderValue::from_bytes) {
                        headers.insert(*name, value);
                    }
                }
                let uri: Uri = "/hooks/t".parse().expect("uri");
                let request = SignedRequest { headers: &headers, uri: &uri, body: &body };
                if let Err(refused) = verifier.check_head(&headers) {
                    prop_assert_eq!(verifier.verify(&request, unix(0)), Err(refused));
                }
            }
        }

        /// Text shaped like real headers (prefixes, separators, digits) never verifies either.
        #[test]
        fn header_shaped_text_never_verifies(
            value in "(sha256=|v0=|v1,|t=[0-9]{1,12},v1=)?[0-9a-fA-F+/=, ]{0,140}",
            ts in "[0-9]{0,20}",
        ) {
            for (verifier, names) in signed_schemes() {
                let mut pairs: Vec<(&str, &str)> = Vec::new();
                for name in names {
                    pairs.push((name, if name.contains("timestamp") { &ts } else { &value }));
                }
                let req = request(&pairs, "{}");
                prop_assert!(verify_with(verifier.as_ref(), &req).is_err());
            }
        }
    }

    #[test]
    fn the_head_check_refuses_each_missing_signature_header() {
        for (verifier, names) in signed_schemes() {
            for missing in names.iter() {
                let present: Vec<(&str, &str)> = names
                    .iter()
                    .filter(|name| *name != missing)
                    .map(|name| (*name, "1700000000"))
                    .collect();
                let req = request(&present, "{}");
                assert!(
                    matches!(
                        verifier.check_head(&req.headers),
                        Err(Rejection::MissingSignature { .. })
                    ),
                    "without {missing}"
                );
            }
            let all: Vec<(&str, &str)> = names.iter().map(|name| (*name, "1700000000")).collect();
            let req = request(&all, "{}");
            assert_eq!(verifier.check_head(&req.headers), Ok(()), "{names:?}");
        }
    }

    #[test]
    fn timestamps_that_overflow_or_are_negative_are_malformed() {
        for text in ["-5", "99999999999999999999999", "1e9", " 1", ""] {
            assert_eq!(
                check_timestamp("t", text, unix(0), Duration::from_secs(300))
                    .map_err(|r| r.code().as_str()),
                Err("malformed_signature"),
                "{text:?}"
            );
        }
        assert!(check_timestamp("t", "100", unix(399), Duration::from_secs(300)).is_ok());
    }
}
