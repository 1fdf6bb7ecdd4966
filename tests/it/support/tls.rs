//! `https` destinations: one no public root vouches for (a self-signed
//! certificate for `localhost`), counting the connections it accepts and the
//! bytes it reads after a handshake (none, when the client refuses it); and
//! one whose certificate a test authority issued, serving HTTP/2.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::AsyncReadExt;
use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer, pki_types::PrivatePkcs8KeyDer};

/// The self-signed destination's listener task; stopped on drop.
pub struct UntrustedTls {
    port: u16,
    connections: Arc<AtomicUsize>,
    bytes_read: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl UntrustedTls {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let issued =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.signing_key.serialize_der()));
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![issued.cert.der().clone()], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let bytes_read = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (connections, bytes_read) = (connections.clone(), bytes_read.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut tls) = acceptor.accept(stream).await {
                        let mut buf = vec![0; 4096];
                        let n = tls.read(&mut buf).await.unwrap_or(0);
                        bytes_read.fetch_add(n, Ordering::SeqCst);
                    }
                }
            }
        });
        Self {
            port,
            connections,
            bytes_read,
            task,
        }
    }

    /// `https://localhost:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// `localhost:<port>`, as a `CONNECT` names it.
    pub fn authority(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Bytes read after completed handshakes.
    pub fn bytes_read(&self) -> usize {
        self.bytes_read.load(Ordering::SeqCst)
    }
}

impl Drop for UntrustedTls {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An `https` destination holding a certificate for `localhost` issued by
/// a test certificate authority, for the gateway to trust through
/// `delivery.tls_ca_file`. It speaks HTTP/2 or HTTP/1.1, as ALPN settles,
/// answers 200 and records each request's HTTP version and body.
pub struct TrustedTls {
    port: u16,
    ca_pem: String,
    received: Arc<Mutex<Vec<(http::Version, Bytes)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TrustedTls {
    /// Issues the certificates and listens on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Switchyard test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let mut tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .expect("server config");
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let received = received.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (acceptor, received) = (acceptor.clone(), received.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                        let service = service_fn(move |request: Request<Incoming>| {
                            let received = received.clone();
                            async move {
                                let version = request.version();
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                received.lock().expect("received").push((version, body));
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                            }
                        });
                        let io = TokioIo::new(tls);
                        let _ = if h2 {
                            http2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, service)
                                .await
                        } else {
                            http1::Builder::new().serve_connection(io, service).await
                        };
                    });
                }
            }
        });
        Self {
            port,
            ca_pem: ca.pem(),
            received,
            task,
        }
    }

    /// `https://localhost:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// The issuing authority's certificate, PEM-encoded.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Each request so far: its HTTP version and body.
    pub fn received(&self) -> Vec<(http::Version, Bytes)> {
        self.received.lock().expect("received").clone()
    }
}

impl Drop for TrustedTls {
    fn drop(&mut self) {
        self.task.abort();
    }
}
