//! Twilio: `X-Twilio-Signature: <base64 HMAC-SHA1(url + params)>`, where url
//! is the URL Twilio requested (the configured `public_url` plus the query
//! string) and params are the form parameters sorted by name, each name
//! followed by its value. JSON bodies are signed differently: the URL
//! carries `bodySHA256=<hex SHA-256(body)>` and only the URL is signed.
//! The delivery id is `I-Twilio-Idempotency-Token`.

use std::time::SystemTime;

use sha2::{Digest, Sha256};
use url::Url;

use http::{HeaderMap, HeaderName};

use super::mac::{Sha1Keys, decode_base64};
use super::{Rejection, SignedRequest, Verifier, header, headers_present, optional_header};
use crate::config::Secret;

static SIGNATURE: HeaderName = HeaderName::from_static("x-twilio-signature");
static DELIVERY: HeaderName = HeaderName::from_static("i-twilio-idempotency-token");

pub struct Twilio {
    keys: Sha1Keys,
    /// The forms of `public_url` Twilio may have signed.
    urls: Vec<SignedUrl>,
}

/// One form of the public URL.
struct SignedUrl {
    /// As configured: signed as is when the request has no query.
    full: String,
    /// Without its query: the request's query is appended to it.
    base: String,
}

impl SignedUrl {
    fn new(full: String) -> Self {
        let base = full.split(['?', '#']).next().unwrap_or_default().to_owned();
        Self { full, base }
    }

    fn with_query(&self, query: Option<&str>) -> String {
        match query {
            Some(query) if !query.is_empty() => format!("{}?{query}", self.base),
            _ => self.full.clone(),
        }
    }
}

impl Twilio {
    pub fn new(secrets: &[Secret], public_url: &Url) -> Self {
        let mut forms = vec![public_url.to_string()];
        // Twilio's backend signs the URL sometimes with its port written out
        // and sometimes without, so its own validators (twilio-python's
        // `RequestValidator.validate`) accept two forms: the URL with its
        // port removed, whatever the port, and the URL with its port (the
        // scheme's default added when it has none).
        if let (Some(host), Some(port)) =
            (public_url.host_str(), public_url.port_or_known_default())
        {
            let scheme = public_url.scheme();
            let rest = &public_url[url::Position::BeforePath..];
            forms.push(format!("{scheme}://{host}{rest}"));
            forms.push(format!("{scheme}://{host}:{port}{rest}"));
        }
        forms.sort();
        forms.dedup();
        Self {
            keys: Sha1Keys::new(secrets),
            urls: forms.into_iter().map(SignedUrl::new).collect(),
        }
    }
}

impl Verifier for Twilio {
    fn check_head(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        headers_present(headers, &[&SIGNATURE])
    }

    fn verify(&self, request: &SignedRequest<'_>, _: SystemTime) -> Result<(), Rejection> {
        let value = header(request.headers, &SIGNATURE)?;
        let signature = decode_base64(value, 20).ok_or(Rejection::MalformedSignature {
            header: SIGNATURE.as_str(),
            reason: "expected base64 of 20 bytes",
        })?;
        let query = request.uri.query();
        let body_hash = query.and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(name, _)| name == "bodySHA256")
                .map(|(_, value)| value.into_owned())
        });
        let matched = match body_hash {
            Some(expected) => {
                let actual = hex::encode(Sha256::digest(request.body));
                let url_matches = self.urls.iter().any(|url| {
                    let url = url.with_query(query);
                    self.keys.any_matches(&[url.as_bytes()], &[&signature])
                });
                // Checked after the MAC so a forged hash learns nothing first;
                // exactly, as twilio-python's validate() compares it.
                url_matches && expected == actual
            }
            None => {
                let mut params: Vec<(String, String)> = form_urlencoded::parse(request.body)
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                params.sort();
                params.dedup();
                let mut signed_params = Vec::with_capacity(request.body.len());
                for (name, value) in &params {
                    signed_params.extend_from_slice(name.as_bytes());
                    signed_params.extend_from_slice(value.as_bytes());
                }
                self.urls.iter().any(|url| {
                    let url = url.with_query(query);
                    self.keys
                        .any_matches(&[url.as_bytes(), &signed_params], &[&signature])
                })
            }
        };
        if !matched {
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
    use crate::signature::tests::{request_to, run, secrets, unix};

    // Twilio's documented example ("Webhooks security").
    const TOKEN: &str = "12345";
    const PUBLIC_URL: &str = "https://mycompany.com/myapp.php";
    const BODY: &str = "CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212";
    const SIGNATURE_VALUE: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";

    fn twilio(url: &str) -> Twilio {
        Twilio::new(&secrets(&[TOKEN]), &Url::parse(url).expect("test url"))
    }

    /// Twilio's example signature, for a request to `path` with `body`.
    fn example(path: &str, body: &str) -> Result<Option<String>, Rejection> {
        let req = request_to(path, &[(SIGNATURE.as_str(), SIGNATURE_VALUE)], body);
        run(&twilio(PUBLIC_URL), &req.as_signed(), unix(0))
    }

    #[test]
    fn accepts_twilios_published_example() {
        assert_eq!(example("/myapp.php?foo=1&bar=2", BODY), Ok(None));
    }

    #[test]
    fn parameter_order_in_the_body_does_not_matter_but_values_do() {
        let reordered = "To=%2B18005551212&Digits=1234&CallSid=CA1234567890ABCDE&From=%2B12349013030&Caller=%2B12349013030";
        assert!(example("/myapp.php?foo=1&bar=2", reordered).is_ok());
        let changed = BODY.replace("Digits=1234", "Digits=1235");
        assert_eq!(
            example("/myapp.php?foo=1&bar=2", &changed),
            Err(Rejection::InvalidSignature)
        );
        assert_eq!(
            example("/myapp.php?foo=2&bar=2", BODY),
            Err(Rejection::InvalidSignature)
        );
    }

    /// Whether `twilio(public_url)` accepts the example signed over `signed_url`.
    fn accepts_signed_over(public_url: &str, signed_url: &str) -> bool {
        use crate::signature::tests::hmac_sha1_base64;
        let params =
            "CallSidCA1234567890ABCDECaller+12349013030Digits1234From+12349013030To+18005551212";
        let signature = hmac_sha1_base64(TOKEN, &format!("{signed_url}?foo=1&bar=2{params}"));
        let req = request_to(
            "/myapp.php?foo=1&bar=2",
            &[(SIGNATURE.as_str(), &signature)],
            BODY,
        );
        run(&twilio(public_url), &req.as_signed(), unix(0)).is_ok()
    }

    #[test]
    fn the_url_may_be_signed_without_its_port_or_with_it_as_twilios_validator_accepts() {
        // A URL without a port: as is, or with the scheme's default port.
        assert!(accepts_signed_over(
            PUBLIC_URL,
            "https://mycompany.com/myapp.php"
        ));
        assert!(accepts_signed_over(
            PUBLIC_URL,
            "https://mycompany.com:443/myapp.php"
        ));
        assert!(!accepts_signed_over(
            PUBLIC_URL,
            "https://mycompany.com:8443/myapp.php"
        ));
        // A non-default port: with it, or with the port removed (as Twilio
        // signs it at times), never with another one.
        let on_8443 = "https://mycompany.com:8443/myapp.php";
        assert!(accepts_signed_over(on_8443, on_8443));
        assert!(accepts_signed_over(
            on_8443,
            "https://mycompany.com/myapp.php"
        ));
        assert!(!accepts_signed_over(
            on_8443,
            "https://mycompany.com:443/myapp.php"
        ));
        assert!(!accepts_signed_over(
            on_8443,
            "https://mycompany.com:8444/myapp.php"
        ));
    }

    #[test]
    fn json_bodies_are_checked_through_body_sha256() {
        use crate::signature::tests::hmac_sha1_base64;
        let body = r#"{"event":"x"}"#;
        let hash = hex::encode(Sha256::digest(body.as_bytes()));
        let url = format!("{PUBLIC_URL}?bodySHA256={hash}");
        let signature = hmac_sha1_base64(TOKEN, &url);
        let path = format!("/myapp.php?bodySHA256={hash}");
        let req = request_to(&path, &[(SIGNATURE.as_str(), &signature)], body);
        assert!(run(&twilio(PUBLIC_URL), &req.as_signed(), unix(0)).is_ok());
        let req = request_to(
            &path,
            &[(SIGNATURE.as_str(), &signature)],
            r#"{"event":"y"}"#,
        );
        assert_eq!(
            run(&twilio(PUBLIC_URL), &req.as_signed(), unix(0)),
            Err(Rejection::InvalidSignature)
        );
        // The hash in uppercase, the URL signed over it: twilio-python's
        // validate() compares the hash exactly, and so do we.
        let upper = hash.to_ascii_uppercase();
        let url = format!("{PUBLIC_URL}?bodySHA256={upper}");
        let signature = hmac_sha1_base64(TOKEN, &url);
        let path = format!("/myapp.php?bodySHA256={upper}");
        let req = request_to(&path, &[(SIGNATURE.as_str(), &signature)], body);
        assert_eq!(
            run(&twilio(PUBLIC_URL), &req.as_signed(), unix(0)),
            Err(Rejection::InvalidSignature)
        );
    }
}
