//! One delivery attempt: the outbound request (original body and headers,
//! Switchyard's headers, optional Standard Webhooks signature) and the
//! classification of what came back.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use sha2::Sha256;

use super::backoff::parse_retry_after;
use super::proxy::{Proxies, ProxyConnector};
use crate::config::{Destination, Secret};
use crate::queue::{Job, decode_headers};
use crate::telemetry::error_chain;

/// Bytes of a failed answer's body kept in the attempt record for ops.
const ERROR_BODY_SNIPPET: usize = 256;
/// Most of an answer's body read; past it the connection is dropped instead
/// of drained for reuse.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Idle time before TCP keepalive probes (and HTTP/2 pings) start, and the
/// time between them.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
/// Unanswered keepalive probes before a connection is dropped.
const TCP_KEEPALIVE_RETRIES: u32 = 3;
/// Longest time written data may go unacknowledged before the connection
/// is dropped.
#[cfg(target_os = "linux")]
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle pooled connection to a destination is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Headers an outbound request is sized for: a typical webhook's and ours.
const OUTBOUND_HEADERS_CAPACITY: usize = 24;
/// Sent on every delivery.
const USER_AGENT: &str = concat!("switchyard/", env!("CARGO_PKG_VERSION"));

/// Headers that describe one hop, not the event: never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Delivered {
        /// The status.
        status: u16,
    },
    /// Worth retrying: 407, 408, 425, 429, 5xx, `retry_on`, timeouts,
    /// connection errors.
    Retryable {
        /// The status, when there was an answer.
        status: Option<u16>,
        /// What went wrong, for the attempt record.
        error: Option<String>,
        /// The destination's `Retry-After` (429 and 503 only).
        retry_after: Option<Duration>,
    },
    /// Any other status (3xx included: redirects are not followed).
    Rejected {
        /// The status.
        status: u16,
        /// The start of the answer's body.
        error: Option<String>,
    },
}

impl Outcome {
    /// Metric label of [`Outcome::Delivered`].
    pub const DELIVERED: &'static str = "delivered";
    /// Metric label of [`Outcome::Retryable`].
    pub const RETRYABLE: &'static str = "retryable";
    /// Metric label of [`Outcome::Rejected`].
    pub const REJECTED: &'static str = "rejected";

    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => Self::DELIVERED,
            Outcome::Retryable { .. } => Self::RETRYABLE,
            Outcome::Rejected { .. } => Self::REJECTED,
        }
    }

    /// The status, when the destination answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Delivered { status } | Outcome::Rejected { status, .. } => Some(*status),
            Outcome::Retryable { status, .. } => *status,
        }
    }
}

/// An attempt that could not be made for want of this process's own
/// resources (file descriptors, local ports): no fault of the destination's,
/// so it spends no attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAttempted {
    /// What ran out, e.g. `connect: … Too many open files`.
    pub error: String,
}

/// The pooled outbound client: HTTP/1.1, and HTTP/2 where TLS negotiates
/// it; rustls; through the environment's proxy (see [`super::proxy`]).
/// hyper-util's client, not reqwest: per delivery reqwest re-parsed the URL,
/// boxed the body and response and kept its own timers, more than half of
/// an attempt's instructions, for features (redirects, cookies, decoding) a
/// delivery does not use.
#[derive(Clone)]
pub struct Outbound {
    client: Client<HttpsConnector<ProxyConnector>, Full<Bytes>>,
    proxies: Proxies,
}

impl Outbound {
    /// A client that keeps idle connections for a minute, notices dead
    /// ones, and never follows redirects (hyper's client does not). TLS
    /// trusts Mozilla's roots and `ca_certificates` (already checked when
    /// the config was read; one that is not usable is left out).
    pub fn new(ca_certificates: &[CertificateDer<'static>]) -> Self {
        let mut http = HttpConnector::new();
        // `https_or_http` below decides by scheme; the inner connector must
        // let https URLs through to it.
        http.enforce_http(false);
        http.set_nodelay(true);
        // A pooled connection whose peer vanished (no FIN, no RST) is found
        // by keepalive probes and unacknowledged writes, not kept for the
        // kernel's quarter of an hour.
        http.set_keepalive(Some(TCP_KEEPALIVE));
        http.set_keepalive_interval(Some(TCP_KEEPALIVE));
        http.set_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES));
        #[cfg(target_os = "linux")]
        http.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
        let proxies = Proxies::from_env();
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        roots.add_parsable_certificates(ca_certificates.iter().cloned());
        // ring, named rather than the process default: with two providers
        // compiled in (one more dependency is enough), the default panics.
        let tls =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the safe default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(ProxyConnector::new(http, proxies.clone()));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            // One HTTP/2 connection carries every delivery to its
            // destination: pings find it dead instead of every attempt
            // timing out on it.
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(Some(TCP_KEEPALIVE))
            .http2_keep_alive_timeout(TCP_KEEPALIVE)
            .build(https);
        Self { client, proxies }
    }

    /// Sends `job` to `destination` once; returns the outcome and latency.
    /// `destination.timeout` bounds the answer's head; what is read of its
    /// body must come by the same deadline, but a late body does not change
    /// the outcome the status gave.
    pub async fn attempt(
        &self,
        destination: &Destination,
        job: &Job,
    ) -> Result<(Outcome, Duration), NotAttempted> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + destination.timeout);
        let mut request = Request::new(Full::new(job.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = destination.uri.clone();
        *request.headers_mut() = outbound_headers(destination, job);
        if let Some(authorization) = self.proxies.authorization(&destination.uri) {
            request
                .headers_mut()
                .insert(http::header::PROXY_AUTHORIZATION, authorization);
        }
        let outcome = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Ok(Ok(response)) => classify(destination, response, deadline).await,
            Ok(Err(err)) if out_of_local_resources(&err) => {
                return Err(NotAttempted {
                    error: transport_error(&err),
                });
            }
            Ok(Err(err)) => Outcome::Retryable {
                status: None,
                error: Some(transport_error(&err)),
                retry_after: None,
            },
            Err(_) => Outcome::Retryable {
                status: None,
                error: Some(format!(
                    "timeout: no answer within {}",
                    humantime::format_duration(destination.timeout)
                )),
                retry_after: None,
            },
        };
        Ok((outcome, started.elapsed()))
    }
}

/// Whether `err` says this process, not the destination, is short of
/// something: file descriptors (EMFILE, ENFILE), local ports
/// (EADDRNOTAVAIL on connect), kernel buffers or memory.
fn out_of_local_resources(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && (io.kind() == std::io::ErrorKind::AddrNotAvailable
                || io.raw_os_error().is_some_and(is_local_shortage))
        {
            return true;
        }
        cause = err.source();
    }
    false
}

#[cfg(unix)]
fn is_local_shortage(errno: i32) -> bool {
    use nix::errno::Errno;
    [Errno::EMFILE, Errno::ENFILE, Errno::ENOBUFS, Errno::ENOMEM]
        .iter()
        .any(|shortage| *shortage as i32 == errno)
}

#[cfg(not(unix))]
fn is_local_shortage(_errno: i32) -> bool {
    false
}

/// The request headers: the original ones (all but hop-by-hop, or the
/// configured list), Switchyard's, and the signature when configured.
fn outbound_headers(destination: &Destination, job: &Job) -> HeaderMap {
    // Room for a typical webhook's headers and ours, so the map does not grow.
    let mut headers = HeaderMap::with_capacity(OUTBOUND_HEADERS_CAPACITY);
    for (name, value) in decode_headers(&job.headers) {
        // The value shares the job's buffer instead of copying it.
        let value = HeaderValue::from_maybe_shared(job.headers.slice_ref(value));
        let (Ok(name), Ok(value)) = (HeaderName::try_from(name), value) else {
            continue;
        };
        let wanted = match &destination.forward_headers {
            Some(list) => {
                list.contains(&name) || name == http::header::CONTENT_TYPE || name == "x-request-id"
            }
            None => !HOP_BY_HOP.contains(&name.as_str()),
        };
        if wanted {
            headers.append(name, value);
        }
    }
    if let Some(authorization) = &destination.authorization
        && let Ok(mut value) = HeaderValue::from_bytes(authorization.expose())
    {
        value.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, value);
    }
    // The sender's own User-Agent is forwarded; ours stands in for none.
    headers
        .entry(http::header::USER_AGENT)
        .or_insert(HeaderValue::from_static(USER_AGENT));
    headers.insert(
        HeaderName::from_static("x-switchyard-attempt"),
        HeaderValue::from(job.attempt),
    );
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("x-switchyard-event-id", &job.event_id);
    set("x-switchyard-route", &job.route);
    if let Some(secret) = &destination.signing_secret {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        set("webhook-id", &job.id);
        set("webhook-timestamp", &timestamp);
        set(
            "webhook-signature",
            &sign(secret, &job.id, &timestamp, &job.body),
        );
    }
    headers
}

/// Standard Webhooks: `v1,<base64 HMAC-SHA256("<id>.<ts>.<body>")>`.
fn sign(secret: &Secret, id: &str, timestamp: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose()) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

async fn classify(
    destination: &Destination,
    response: Response<Incoming>,
    deadline: tokio::time::Instant,
) -> Outcome {
    let status = response.status().as_u16();
    let retry_after = matches!(status, 429 | 503)
        .then(|| response.headers().get(http::header::RETRY_AFTER))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let body = body_start(response.into_body(), deadline).await;
    if (200..300).contains(&status) {
        return Outcome::Delivered { status };
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_SNIPPET)]);
    let text = text.trim();
    let snippet = (!text.is_empty()).then(|| text.to_owned());
    let retryable =
        // 407 comes from an egress proxy refusing our credentials: the fix
        // is on our side, so it is retried like a tunnel the proxy refused,
        // not dead-lettered at once.
        matches!(status, 407 | 408 | 425 | 429 | 500..=599) || destination.retry_on.contains(&status);
    if retryable {
        Outcome::Retryable {
            status: Some(status),
            error: snippet,
            retry_after,
        }
    } else {
        Outcome::Rejected {
            status,
            error: snippet,
        }
    }
}

/// The answer's body up to [`MAX_ANSWER_BYTES`] or `deadline`: read to its
/// end when it is no longer and comes in time, so the connection goes back
/// to the pool; a longer, late or broken body keeps what came and costs its
/// connection, not the outcome.
async fn body_start(mut body: Incoming, deadline: tokio::time::Instant) -> Bytes {
    let mut start = BytesMut::new();
    while start.len() < MAX_ANSWER_BYTES {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let room = MAX_ANSWER_BYTES - start.len();
                    start.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Ok(Some(Err(_)) | None) | Err(_) => break,
        }
    }
    start.freeze()
}

/// A short kind and message for a failed exchange, e.g. `connect: …`.
fn transport_error(err: &hyper_util::client::legacy::Error) -> String {
    let kind = if err.is_connect() {
        "connect"
    } else {
        "request"
    };
    format!("{kind}: {}", error_chain(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortages_of_our_own_are_told_from_the_destinations_faults() {
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connect")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let wrapped = |err| Wrapper(err);
        for ours in [
            std::io::Error::from_raw_os_error(nix::errno::Errno::EMFILE as i32),
            std::io::Error::from_raw_os_error(nix::errno::Errno::ENFILE as i32),
            std::io::Error::from(std::io::ErrorKind::AddrNotAvailable),
        ] {
            assert!(out_of_local_resources(&wrapped(ours)));
        }
        for theirs in [
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            std::io::Error::from_raw_os_error(nix::errno::Errno::EHOSTUNREACH as i32),
            std::io::Error::from(std::io::ErrorKind::TimedOut),
        ] {
            assert!(!out_of_local_resources(&wrapped(theirs)));
        }
    }

    #[test]
    fn outbound_signature_follows_the_standard_webhooks_reference() {
        use base64::Engine as _;
        // The Standard Webhooks reference example, signed by our sender.
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("reference key");
        assert_eq!(
            sign(
                &Secret::new(key),
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
