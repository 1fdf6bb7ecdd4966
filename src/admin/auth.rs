//! Bearer-token authentication of `/admin/*`. Tokens are compared as SHA-256
//! digests in constant time, so neither a token's content nor its length
//! shows in response timing; the matching token's name goes to the audit log.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
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

/// The token of the one `Authorization: Bearer <token>` header. The scheme
/// is case-insensitive (RFC 9110, 11.1); two `Authorization` headers are
/// refused rather than one picked, as are two signature headers on ingest.
fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.as_bytes().split_at_checked(b"Bearer ".len())?;
    // `1*SP` separates scheme and token (RFC 9110, 11.4).
    let token = token.trim_ascii_start();
    (scheme.eq_ignore_ascii_case(b"Bearer ") && !token.is_empty()).then_some(token)
}

/// Refuses requests without a valid `Authorization: Bearer <token>`.
pub async fn require_token(
    State(tokens): State<Arc<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    match bearer_token(request.headers()).and_then(|token| tokens.name_of(token)) {
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

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_static(value),
            );
        }
        headers
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer tok", "bearer tok", "BEARER tok", "bEaReR  tok"] {
            assert_eq!(
                bearer_token(&headers(&[value])),
                Some(&b"tok"[..]),
                "{value}"
            );
        }
    }

    #[test]
    fn anything_but_one_bearer_header_has_no_token() {
        for values in [
            &[][..],
            &["Bearer tok", "Bearer tok"][..],
            &["Bearer tok", "Bearer other"][..],
            &["Basic dG9rOg=="][..],
            &["Bearertok"][..],
            &["Bearer"][..],
            &["Bearer "][..],
            &["tok"][..],
        ] {
            assert_eq!(bearer_token(&headers(values)), None, "{values:?}");
        }
    }
}
