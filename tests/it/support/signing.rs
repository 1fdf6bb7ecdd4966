//! Signatures of every inbound scheme the gateway verifies, and of signed
//! deliveries, computed as each provider does: the one copy tests sign with.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};

/// A hash the generic `hmac` scheme (and the providers) sign with.
#[derive(Debug, Clone, Copy)]
pub enum Algorithm {
    /// HMAC-SHA1 (Twilio).
    Sha1,
    /// HMAC-SHA256 (most providers).
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// HMAC of the concatenation of `parts` under `key`.
pub fn hmac(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn mac_of(mut mac: impl Mac, parts: &[&[u8]]) -> Vec<u8> {
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
    const ANY: &str = "any key length";
    match algorithm {
        Algorithm::Sha1 => mac_of(Hmac::<Sha1>::new_from_slice(key).expect(ANY), parts),
        Algorithm::Sha256 => mac_of(Hmac::<Sha256>::new_from_slice(key).expect(ANY), parts),
        Algorithm::Sha512 => mac_of(Hmac::<Sha512>::new_from_slice(key).expect(ANY), parts),
    }
}

/// Lowercase hex of the HMAC of `body`.
pub fn hmac_hex(algorithm: Algorithm, key: &[u8], body: &[u8]) -> String {
    hex::encode(hmac(algorithm, key, &[body]))
}

/// Standard base64 of the HMAC of `body`.
pub fn hmac_base64(algorithm: Algorithm, key: &[u8], body: &[u8]) -> String {
    B64.encode(hmac(algorithm, key, &[body]))
}

/// Seconds since the Unix epoch, as providers stamp their signatures.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// `X-Hub-Signature-256`: `sha256=<hex HMAC-SHA256(body)>`.
pub fn github(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hmac_hex(Algorithm::Sha256, secret.as_bytes(), body)
    )
}

/// `Stripe-Signature`: `t=<ts>,v1=<hex HMAC-SHA256("<ts>.<body>")>`.
pub fn stripe(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let v1 = hex::encode(hmac(
        Algorithm::Sha256,
        secret.as_bytes(),
        &[t.as_bytes(), b".", body],
    ));
    format!("t={t},v1={v1}")
}

/// `X-Slack-Signature`: `v0=<hex HMAC-SHA256("v0:<ts>:<body>")>`.
pub fn slack(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let sig = hex::encode(hmac(
        Algorithm::Sha256,
        secret.as_bytes(),
        &[b"v0:", ts.as_bytes(), b":", body],
    ));
    format!("v0={sig}")
}

/// `X-Shopify-Hmac-Sha256`: base64 HMAC-SHA256 of the body.
pub fn shopify(secret: &str, body: &[u8]) -> String {
    hmac_base64(Algorithm::Sha256, secret.as_bytes(), body)
}

/// A Standard Webhooks secret: `whsec_<base64 key>`.
pub fn whsec(key: &[u8]) -> String {
    format!("whsec_{}", B64.encode(key))
}

/// The key of a `whsec_` secret, `None` if it is not one.
pub fn whsec_key(secret: &str) -> Option<Vec<u8>> {
    B64.decode(secret.strip_prefix("whsec_")?).ok()
}

/// `webhook-signature` (Standard Webhooks, Svix):
/// `v1,<base64 HMAC-SHA256("<id>.<ts>.<body>")>`.
pub fn standard_webhooks(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let sig = B64.encode(hmac(
        Algorithm::Sha256,
        key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    ));
    format!("v1,{sig}")
}

/// `X-Gitlab-Token`: GitLab sends its secret token as is.
pub fn gitlab(token: &str) -> String {
    token.to_owned()
}

/// `X-Twilio-Signature`: base64 HMAC-SHA1 of the public URL followed by
/// every form parameter's name and value (sorted by name, as Twilio does).
pub fn twilio(secret: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut signed = url.to_owned();
    for (name, value) in sorted {
        signed.push_str(name);
        signed.push_str(value);
    }
    B64.encode(hmac(
        Algorithm::Sha1,
        secret.as_bytes(),
        &[signed.as_bytes()],
    ))
}
