//! Signing requests the way a real sender does. One variant per scheme; the
//! gateway verifies them exactly as it would the real sender's.

use hmac::{Hmac, KeyInit, Mac};
use hyper::header::{HeaderName, HeaderValue};
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

    fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = self.key.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// The headers that sign `body`, sent with delivery id `id` at unix
    /// second `unix_secs` (used by the timestamped schemes).
    pub fn headers(&self, id: &str, unix_secs: u64, body: &[u8]) -> Vec<(HeaderName, HeaderValue)> {
        let ts = unix_secs.to_string();
        match self.scheme {
            Scheme::Github => {
                let sig = format!("sha256={}", hex::encode(self.mac(&[body])));
                vec![
                    (GITHUB_SIGNATURE.clone(), value(sig)),
                    (GITHUB_DELIVERY.clone(), value(id.to_owned())),
                    (GITHUB_EVENT.clone(), HeaderValue::from_static("push")),
                ]
            }
            Scheme::Stripe => {
                let sig = hex::encode(self.mac(&[ts.as_bytes(), b".", body]));
                vec![(STRIPE_SIGNATURE.clone(), value(format!("t={ts},v1={sig}")))]
            }
            Scheme::StandardWebhooks => {
                use base64::Engine as _;
                let mac = self.mac(&[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
                let sig = base64::engine::general_purpose::STANDARD.encode(mac);
                vec![
                    (WEBHOOK_ID.clone(), value(id.to_owned())),
                    (WEBHOOK_TIMESTAMP.clone(), value(ts)),
                    (WEBHOOK_SIGNATURE.clone(), value(format!("v1,{sig}"))),
                ]
            }
        }
    }
}

fn value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("hex, base64 and id characters are valid header values")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(headers: &[(HeaderName, HeaderValue)], name: &HeaderName) -> HeaderValue {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .expect("header present")
    }

    #[test]
    fn github_signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let signer = Signer::new(Scheme::Github, b"Jefe").expect("signer");
        let headers = signer.headers("d-1", 0, b"what do ya want for nothing?");
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
        let headers = signer.headers(
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
        let headers = signer.headers("x", 1, b"what do ya want for nothing?");
        let sig = header(&headers, &STRIPE_SIGNATURE);
        let sig = sig.to_str().expect("text");
        assert!(sig.starts_with("t=1,v1="), "{sig}");
        assert_eq!(sig.len(), "t=1,v1=".len() + 64);
    }
}
