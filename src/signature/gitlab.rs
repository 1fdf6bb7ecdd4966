//! GitLab: `X-Gitlab-Token` carries the secret itself; the delivery id is
//! `X-Gitlab-Event-UUID`. Both sides are hashed before the constant-time
//! comparison so that not even the secret's length leaks through timing.

use std::time::SystemTime;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use http::{HeaderMap, HeaderName};

use super::{Rejection, SignedRequest, Verifier, header, headers_present, optional_header};
use crate::config::Secret;

static TOKEN: HeaderName = HeaderName::from_static("x-gitlab-token");
static DELIVERY: HeaderName = HeaderName::from_static("x-gitlab-event-uuid");

pub struct Gitlab {
    digests: Vec<[u8; 32]>,
}

impl Gitlab {
    pub fn new(secrets: &[Secret]) -> Self {
        Self {
            digests: secrets
                .iter()
                .map(|s| Sha256::digest(s.expose()).into())
                .collect(),
        }
    }
}

impl Verifier for Gitlab {
    fn check_head(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        headers_present(headers, &[&TOKEN])
    }

    fn verify(&self, request: &SignedRequest<'_>, _: SystemTime) -> Result<(), Rejection> {
        let token = request
            .headers
            .get(&TOKEN)
            .ok_or(Rejection::MissingSignature {
                header: TOKEN.as_str(),
            })?;
        // Text check only for a clear error; the bytes are what is compared.
        header(request.headers, &TOKEN)?;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let matched = self
            .digests
            .iter()
            .fold(Choice::from(0), |acc, d| acc | d.ct_eq(&presented));
        if !bool::from(matched) {
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
    use crate::signature::tests::{request, run, secrets, unix};

    #[test]
    fn accepts_any_configured_token_and_nothing_else() {
        let gitlab = Gitlab::new(&secrets(&["old-token", "new-token"]));
        for token in ["old-token", "new-token"] {
            let req = request(
                &[(TOKEN.as_str(), token), (DELIVERY.as_str(), "uuid-1")],
                "{}",
            );
            assert_eq!(
                run(&gitlab, &req.as_signed(), unix(0)),
                Ok(Some("uuid-1".to_owned()))
            );
        }
        for token in ["new-toke", "new-token ", ""] {
            let req = request(&[(TOKEN.as_str(), token)], "{}");
            assert_eq!(
                run(&gitlab, &req.as_signed(), unix(0)),
                Err(Rejection::InvalidSignature),
                "{token:?}"
            );
        }
        assert_eq!(
            run(&gitlab, &request(&[], "{}").as_signed(), unix(0)),
            Err(Rejection::MissingSignature {
                header: TOKEN.as_str()
            })
        );
    }
}
