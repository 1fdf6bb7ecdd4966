//! Deliveries through the proxy the environment names (`HTTP_PROXY`,
//! `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, upper or lower case; hyper-util's
//! `Matcher` reads them, and the README states its rules).
//! An `http` destination's requests go to the proxy in absolute form; an
//! `https` destination is reached through a `CONNECT` tunnel, so TLS still
//! runs end to end with the destination. Only `http://` proxies are spoken.

use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{HeaderValue, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The proxies of the environment, read once at start.
#[derive(Clone)]
pub struct Proxies {
    matcher: Arc<Matcher>,
}

impl Proxies {
    /// The proxies `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY`
    /// name (none in a CGI process, where `HTTP_PROXY` may come from a
    /// request header).
    pub fn from_env() -> Self {
        let proxies = Self::new(Matcher::from_env());
        proxies.log_effective();
        proxies
    }

    /// Says at start which proxy each kind of destination goes through (or
    /// that none is set), so a proxy that is wrong is seen before deliveries
    /// fail on it. Never the credentials.
    fn log_effective(&self) {
        for scheme in ["http", "https"] {
            // A name that no NO_PROXY rule of a real deployment names.
            let probe = Uri::from_static(if scheme == "http" {
                "http://switchyard-proxy-probe.invalid/"
            } else {
                "https://switchyard-proxy-probe.invalid/"
            });
            match self.matcher.intercept(&probe) {
                Some(proxy) if proxy.uri().scheme() == Some(&http::uri::Scheme::HTTP) => {
                    tracing::info!(
                        destinations = scheme,
                        proxy = %proxy_name(&proxy),
                        "deliveries go through a proxy"
                    );
                }
                Some(proxy) => tracing::warn!(
                    destinations = scheme,
                    proxy = %proxy_name(&proxy),
                    "the environment names a proxy deliveries cannot speak to (only http:// proxies); every such delivery will fail"
                ),
                None => {}
            }
        }
    }

    fn new(matcher: Matcher) -> Self {
        Self {
            matcher: Arc::new(matcher),
        }
    }

    /// The `Proxy-Authorization` an `http` destination's requests carry:
    /// they go to the proxy itself, which takes its credentials from them.
    /// (A tunnel's credentials go in its `CONNECT` instead.)
    pub fn authorization(&self, destination: &Uri) -> Option<HeaderValue> {
        if destination.scheme() != Some(&http::uri::Scheme::HTTP) {
            return None;
        }
        self.matcher
            .intercept(destination)
            .and_then(|proxy| proxy.basic_auth().cloned())
    }
}

/// Opens connections for the delivery client: straight to the destination,
/// or by way of its proxy.
#[derive(Clone)]
pub struct ProxyConnector {
    direct: HttpConnector,
    proxies: Proxies,
}

impl ProxyConnector {
    /// `direct` opens every TCP connection, to destinations and proxies alike.
    pub fn new(direct: HttpConnector, proxies: Proxies) -> Self {
        Self { direct, proxies }
    }
}

impl Service<Uri> for ProxyConnector {
    type Response = ProxiedStream;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<ProxiedStream, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let Some(proxy) = self.proxies.matcher.intercept(&destination) else {
            let connecting = self.direct.call(destination);
            return Box::pin(async move {
                let stream = connecting.await?;
                Ok(ProxiedStream::new(stream, false))
            });
        };
        let name = proxy_name(&proxy);
        if proxy.uri().scheme() != Some(&http::uri::Scheme::HTTP) {
            return Box::pin(async move { Err(ProxyError::Unsupported(name).into()) });
        }
        if destination.scheme() == Some(&http::uri::Scheme::HTTPS) {
            let mut tunnel = Tunnel::new(proxy.uri().clone(), self.direct.clone());
            if let Some(authorization) = proxy.basic_auth() {
                tunnel = tunnel.with_auth(authorization.clone());
            }
            let connecting = tunnel.call(destination);
            Box::pin(async move {
                let stream = connecting.await.map_err(|err| ProxyError::Failed {
                    proxy: name,
                    source: err.into(),
                })?;
                Ok(ProxiedStream::new(stream, false))
            })
        } else {
            let connecting = self.direct.call(proxy.uri().clone());
            Box::pin(async move {
                let stream = connecting.await.map_err(|err| ProxyError::Failed {
                    proxy: name,
                    source: err.into(),
                })?;
                // Tells the client to send absolute-form request targets.
                Ok(ProxiedStream::new(stream, true))
            })
        }
    }
}

/// A connection that tells the client whether it leads to a proxy
/// expecting absolute-form requests (plain `http` through a proxy) or to
/// the destination itself (direct, or through a tunnel).
pub struct ProxiedStream {
    stream: TokioIo<TcpStream>,
    to_proxy: bool,
}

impl ProxiedStream {
    fn new(stream: TokioIo<TcpStream>, to_proxy: bool) -> Self {
        Self { stream, to_proxy }
    }
}

impl Connection for ProxiedStream {
    fn connected(&self) -> Connected {
        self.stream.connected().proxy(self.to_proxy)
    }
}

impl Read for ProxiedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl Write for ProxiedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
}

/// A connection by way of a proxy that could not be made. It names the
/// proxy (never its credentials), so an attempt record says where it broke.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The environment names a proxy of another kind (`https://`, SOCKS).
    #[error("proxy {0} is not supported: deliveries speak only to http:// proxies")]
    Unsupported(String),
    /// Connecting to the proxy, or its tunnel, failed.
    #[error("through proxy {proxy}")]
    Failed {
        /// The proxy's scheme, host and port.
        proxy: String,
        /// What failed.
        #[source]
        source: BoxError,
    },
}

/// The proxy's scheme, host and port.
fn proxy_name(proxy: &Intercept) -> String {
    let uri = proxy.uri();
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::error_chain;

    fn proxies(all: &str, no: &str) -> Proxies {
        Proxies::new(Matcher::builder().all(all).no(no).build())
    }

    #[test]
    fn plain_http_requests_carry_the_proxys_credentials_and_nothing_else_does() {
        let proxies = proxies("http://egress:s3cret@127.0.0.1:3128", "internal.example");
        let expected = HeaderValue::from_static("Basic ZWdyZXNzOnMzY3JldA==");
        let http: Uri = "http://hooks.example/in".parse().expect("uri");
        let https: Uri = "https://hooks.example/in".parse().expect("uri");
        let excluded: Uri = "http://internal.example/in".parse().expect("uri");
        assert_eq!(proxies.authorization(&http), Some(expected));
        assert_eq!(proxies.authorization(&https), None, "sent in the CONNECT");
        assert_eq!(proxies.authorization(&excluded), None, "NO_PROXY");
        assert_eq!(
            Proxies::new(Matcher::builder().build()).authorization(&http),
            None
        );
    }

    #[tokio::test]
    async fn other_kinds_of_proxy_are_refused_by_name_without_credentials() {
        let mut connector = ProxyConnector::new(
            HttpConnector::new(),
            proxies("socks5://egress:s3cret@127.0.0.1:1080", ""),
        );
        let err = match connector
            .call("http://hooks.example/in".parse().expect("uri"))
            .await
        {
            Ok(_) => panic!("a SOCKS proxy was used"),
            Err(err) => error_chain(err.as_ref()),
        };
        assert_eq!(
            err,
            "proxy socks5://127.0.0.1:1080 is not supported: deliveries speak only to http:// proxies"
        );
    }

    #[tokio::test]
    async fn a_proxy_that_cannot_be_reached_is_named_without_credentials() {
        // Bound, then closed: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let proxy = format!("http://egress:s3cret@127.0.0.1:{port}");
        for destination in ["http://hooks.example/in", "https://hooks.example/in"] {
            let mut connector = ProxyConnector::new(HttpConnector::new(), proxies(&proxy, ""));
            let err = match connector.call(destination.parse().expect("uri")).await {
                Ok(_) => panic!("connected to a closed port"),
                Err(err) => error_chain(err.as_ref()),
            };
            assert!(
                err.starts_with(&format!("through proxy http://127.0.0.1:{port}: ")),
                "{destination}: {err}"
            );
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}
