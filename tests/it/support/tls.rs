//! An `https` destination no public root vouches for: a self-signed
//! certificate for `localhost`. It counts the connections it accepts and the
//! bytes it reads after a handshake (none, when the client refuses it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncReadExt;
use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer, pki_types::PrivatePkcs8KeyDer};

/// The listener task; stopped on drop.
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
