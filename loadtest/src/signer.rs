//! Signing requests the way a real sender does. One variant per scheme; the
//! gateway verifies them exactly as it would the real sender's.

use hmac::{Hmac, KeyInit, Mac};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

/// The signature scheme the generator speaks (`--scheme`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(body)>`, fresh `X-GitHub-Delivery`.
    Github,
    /// `Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256("<ts>.<body>")>`; the
    /// body's `id` is fresh.
    Stripe,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64
    /// HMAC-SHA256("<id>.<ts>.<body>")>`; the secret is `whsec_<base64 key>`.
    StandardWebhooks,
}

/// A signer keyed once with the source's secret.
#[derive(Clone)]
pub struct Signer {
    scheme: Scheme,
    key: Hmac<Sha256>,
}

static GITHUB_SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature-256");
static GITHUB_DELIVERY: HeaderName = HeaderName::from_static("x-github-delivery");
static GITHUB_EVENT: HeaderName = HeaderName::from_static("x-github-event");
static STRIPE_SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");
static WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
static WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
static WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

impl Signer {
    /// A signer for `scheme`; fails for a Standard Webhooks secret that is
    /// not `whsec_` + base64.
    pub fn new(scheme: Scheme, secret: &[u8]) -> anyhow::Result<Self> {
        let key_bytes = match scheme {
            Scheme::StandardWebhooks => {
                use base64::Engine as _;
                let encoded = secret.strip_prefix(b"whsec_").unwrap_or(secret);
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| {
                        anyhow::anyhow!("a standard-webhooks secret is whsec_<base64>: {e}")
                    })?
            }
            Scheme::Github | Scheme::Stripe => secret.to_vec(),
        };
        Ok(Self {
            scheme,
            // HMAC accepts keys of any length.
            key: <Hmac<Sha256> as KeyInit>::new_from_slice(&key_bytes).expect("any key length"),
        })
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.key.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Adds the headers that sign `body` to `headers`, for delivery id `id`
    /// sent at unix second `unix_secs` (used by the timestamped schemes).
    pub fn sign(&self, headers: &mut HeaderMap, id: &str, unix_secs: u64, body: &[u8]) {
        match self.scheme {
            Scheme::Github => {
                // "sha256=" and 64 hex digits, on the stack: no String per request.
                let mut sig = [0u8; GITHUB_PREFIX.len() + 64];
                sig[..GITHUB_PREFIX.len()].copy_from_slice(GITHUB_PREFIX);
                hex::encode_to_slice(self.mac(&[body]), &mut sig[GITHUB_PREFIX.len()..])
                    .expect("64 hex digits fit");
                headers.insert(GITHUB_SIGNATURE.clone(), value(&sig));
                headers.insert(GITHUB_DELIVERY.clone(), value(id.as_bytes()));
                headers.insert(GITHUB_EVENT.clone(), HeaderValue::from_static("push"));
            }
            Scheme::Stripe => {
                let ts = unix_secs.to_string();
                let sig = hex::encode(self.mac(&[ts.as_bytes(), b".", body]));
                let header = format!("t={ts},v1={sig}");
                headers.insert(STRIPE_SIGNATURE.clone(), value(header.as_bytes()));
            }
            Scheme::StandardWebhooks => {
                use base64::Engine as _;
                let ts = unix_secs.to_string();
                let mac = self.mac(&[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
                let sig = base64::engine::general_purpose::STANDARD.encode(mac);
                headers.insert(WEBHOOK_ID.clone(), value(id.as_bytes()));
                headers.insert(WEBHOOK_TIMESTAMP.clone(), value(ts.as_bytes()));
                let header = format!("v1,{sig}");
                headers.insert(WEBHOOK_SIGNATURE.clone(), value(header.as_bytes()));
            }
        }
    }

    /// Whether `header`, an `X-Hub-Signature-256` value (`sha256=<hex>`),
    /// signs `body` with this signer's key; the comparison is constant time.
    /// Meaningful for a [`Scheme::Github`] signer, whose key is the secret.
    pub fn github_signature_matches(&self, header: &[u8], body: &[u8]) -> bool {
        let Some(hex_sig) = header.strip_prefix(GITHUB_PREFIX) else {
            return false;
        };
        let mut sig = [0u8; 32];
        if hex::decode_to_slice(hex_sig, &mut sig).is_err() {
            return false;
        }
        let mut mac = self.key.clone();
        mac.update(body);
        mac.verify_slice(&sig).is_ok()
    }
}

/// What GitHub puts before the hex digest in `X-Hub-Signature-256`.
const GITHUB_PREFIX: &[u8] = b"sha256=";

fn value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).expect("hex, base64 and id characters are valid header values")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(signer: &Signer, id: &str, unix_secs: u64, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        signer.sign(&mut headers, id, unix_secs, body);
        headers
    }

    fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> &'a HeaderValue {
        headers.get(name).expect("header present")
    }

    #[test]
    fn github_signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let signer = Signer::new(Scheme::Github, b"Jefe").expect("signer");
        let headers = signed(&signer, "d-1", 0, b"what do ya want for nothing?");
        assert_eq!(
            header(&headers, &GITHUB_SIGNATURE),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(header(&headers, &GITHUB_DELIVERY), "d-1");
    }

    #[test]
    fn standard_webhooks_matches_the_reference_vector() {
        let signer = Signer::new(
            Scheme::StandardWebhooks,
            b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .expect("signer");
        let headers = signed(
            &signer,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            header(&headers, &WEBHOOK_SIGNATURE),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn stripe_signs_timestamp_dot_body() {
        // RFC 4231 test case 2's key and data, with "1." in front of the data.
        let signer = Signer::new(Scheme::Stripe, b"Jefe").expect("signer");
        let headers = signed(&signer, "x", 1, b"what do ya want for nothing?");
        let sig = header(&headers, &STRIPE_SIGNATURE);
        let sig = sig.to_str().expect("text");
        assert!(sig.starts_with("t=1,v1="), "{sig}");
        assert_eq!(sig.len(), "t=1,v1=".len() + 64);
    }

    #[test]
    fn github_signatures_verify_and_forgeries_do_not() {
        let signer = Signer::new(Scheme::Github, b"Jefe").expect("signer");
        let body = b"what do ya want for nothing?";
        let headers = signed(&signer, "d-1", 0, body);
        let sig = header(&headers, &GITHUB_SIGNATURE).as_bytes();
        assert!(signer.github_signature_matches(sig, body));
        assert!(!signer.github_signature_matches(sig, b"what do ya want for nothing!"));
        let other = Signer::new(Scheme::Github, b"not Jefe").expect("signer");
        assert!(!other.github_signature_matches(sig, body));
        // Not hex, too short, no prefix, SHA-1's prefix.
        assert!(!signer.github_signature_matches(b"sha256=zz", body));
        assert!(!signer.github_signature_matches(&sig[..sig.len() - 2], body));
        assert!(!signer.github_signature_matches(&sig[7..], body));
        let mut sha1 = b"sha1=".to_vec();
        sha1.extend_from_slice(&sig[7..]);
        assert!(!signer.github_signature_matches(&sha1, body));
    }
}
