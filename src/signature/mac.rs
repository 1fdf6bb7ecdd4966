//! Keyed MACs prepared once per secret, and constant-time matching of the
//! signatures a request carries against every secret (rotation).

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::{Choice, ConstantTimeEq};

use crate::config::Secret;

/// HMAC-SHA256 keyed with each secret.
pub type Sha256Keys = Keys<Hmac<Sha256>>;
/// HMAC-SHA1 keyed with each secret.
pub type Sha1Keys = Keys<Hmac<Sha1>>;
/// HMAC-SHA512 keyed with each secret.
pub type Sha512Keys = Keys<Hmac<Sha512>>;

/// One keyed MAC per secret. Keying once at start saves the key schedule on
/// every request; a clone of a keyed MAC is cheap.
pub struct Keys<M> {
    keyed: Vec<M>,
}

impl<M: Mac + KeyInit + Clone> Keys<M> {
    /// Keys the MAC with every secret.
    pub fn new(secrets: &[Secret]) -> Self {
        let keyed = secrets
            .iter()
            // HMAC takes keys of any length, so this never drops a secret.
            .filter_map(|s| <M as KeyInit>::new_from_slice(s.expose()).ok())
            .collect();
        Self { keyed }
    }

    /// True when any candidate equals the MAC of the concatenated `message`
    /// parts under any secret. Every pair is compared, in constant time.
    pub fn any_matches<C: AsRef<[u8]>>(&self, message: &[&[u8]], candidates: &[C]) -> bool {
        let mut matched = Choice::from(0);
        for keyed in &self.keyed {
            let mut mac = keyed.clone();
            for part in message {
                mac.update(part);
            }
            let tag = mac.finalize().into_bytes();
            for candidate in candidates {
                matched |= tag.as_slice().ct_eq(candidate.as_ref());
            }
        }
        matched.into()
    }
}

/// Decodes lowercase hex of exactly `N` bytes. GitHub's, Stripe's and
/// Slack's own verifiers compare the lowercase hex string exactly, so a
/// signature in uppercase is one none of them accepts, and neither do we.
pub fn decode_lower_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Decodes standard padded base64 of exactly `len` bytes.
pub fn decode_base64(text: &str, len: usize) -> Option<Vec<u8>> {
    use base64::Engine as _;
    // Signatures are tens of bytes; refuse to decode anything much larger.
    if text.len() > 4 * len.div_ceil(3) {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .filter(|bytes| bytes.len() == len)
}
