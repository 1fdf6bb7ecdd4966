//! Bearer-token authentication of `/admin/*`. Tokens are compared as SHA-256
//! digests in constant time, so neither a token's content nor its length
//! shows in response timing; the matching token's name goes to the audit log.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::api_error::{ApiError, ErrorCode};
use crate::config::AdminToken;

/// Request extension: who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The admin token's name.
    pub token: String,
}

/// The configured tokens, digested.
pub struct Tokens {
    digests: Vec<([u8; 32], String)>,
}

impl Tokens {
    /// Digests every configured token.
    pub fn new(tokens: &[AdminToken]) -> Self {
        Self {
            digests: tokens
                .iter()
                .map(|t| (Sha256::digest(t.secret.expose()).into(), t.name.clone()))
                .collect(),
        }
    }

    /// The name of the token `presented` matches, comparing against every
    /// token so the time does not depend on which one (if any) matched.
    /// Public for `benches/admin_auth.rs`, which measures exactly that.
    pub fn name_of(&self, presented: &[u8]) -> Option<String> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        let mut matched = Choice::from(0);
        for (candidate, name) in &self.digests {
            let hit = candidate.ct_eq(&digest);
            if bool::from(hit & !matched) {
                found = Some(name.clone());
            }
            matched |= hit;
        }
        found
    }
}

/// Refuses requests without a valid `Authorization: Bearer <token>`.
pub async fn require_token(
    State(tokens): State<Arc<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented.and_then(|token| tokens.name_of(token)) {
        Some(token) => {
            request.extensions_mut().insert(Caller { token });
            next.run(request).await
        }
        None => {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "admin API: send Authorization: Bearer <token> with a configured admin token",
            )
            .into_response();
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn finds_the_matching_token_by_name_only() {
        let tokens = Tokens::new(&[
            AdminToken {
                name: "ops".into(),
                secret: Secret::new(b"token-a".to_vec()),
            },
            AdminToken {
                name: "ci".into(),
                secret: Secret::new(b"token-b".to_vec()),
            },
        ]);
        assert_eq!(tokens.name_of(b"token-a").as_deref(), Some("ops"));
        assert_eq!(tokens.name_of(b"token-b").as_deref(), Some("ci"));
        assert_eq!(tokens.name_of(b"token-"), None);
        assert_eq!(tokens.name_of(b""), None);
    }
}
