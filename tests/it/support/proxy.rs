//! A forward HTTP proxy standing in for a company's egress proxy: it relays
//! absolute-form requests to their destination and opens `CONNECT` tunnels,
//! recording what it was asked and with which `Proxy-Authorization`; it may
//! demand credentials (407 otherwise).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// One request the proxy was asked to relay or tunnel.
#[derive(Debug, Clone)]
pub struct Asked {
    /// `CONNECT` for a tunnel, the relayed method otherwise.
    pub method: Method,
    /// The request target as it arrived (absolute form, or `host:port`).
    pub target: String,
    /// The `Proxy-Authorization` header, when sent.
    pub authorization: Option<String>,
}

/// The proxy's listener task; stopped on drop.
pub struct ForwardProxy {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<Asked>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ForwardProxy {
    /// Listens on a free port of 127.0.0.1 and serves anyone.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Answers 407 to requests whose `Proxy-Authorization` is not `required`.
    pub async fn requiring(required: &str) -> Self {
        Self::start_with(Some(required.to_owned())).await
    }

    async fn start_with(required: Option<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let asked = asked.clone();
            let required = Arc::new(required);
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (asked, required) = (asked.clone(), required.clone());
                    tokio::spawn(async move {
                        let service = service_fn(move |request| {
                            let (asked, required) = (asked.clone(), required.clone());
                            async move {
                                Ok::<_, Infallible>(
                                    handle(request, &asked, required.as_deref()).await,
                                )
                            }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await;
                    });
                }
            }
        });
        Self { addr, asked, task }
    }

    /// `http://127.0.0.1:<port>`, for `HTTP_PROXY` and its kin.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in order.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().expect("proxy log").clone()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    request: Request<Incoming>,
    asked: &Mutex<Vec<Asked>>,
    required: Option<&str>,
) -> Response<Full<Bytes>> {
    let authorization = request
        .headers()
        .get(http::header::PROXY_AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    asked.lock().expect("proxy log").push(Asked {
        method: request.method().clone(),
        target: request.uri().to_string(),
        authorization: authorization.clone(),
    });
    if required.is_some_and(|required| authorization.as_deref() != Some(required)) {
        let mut refusal = answer(StatusCode::PROXY_AUTHENTICATION_REQUIRED, "");
        refusal.headers_mut().insert(
            http::header::PROXY_AUTHENTICATE,
            http::HeaderValue::from_static("Basic realm=\"egress\""),
        );
        return refusal;
    }
    let Some(authority) = request.uri().authority().map(|a| a.to_string()) else {
        return answer(
            StatusCode::BAD_REQUEST,
            "a proxy wants absolute-form targets",
        );
    };
    if request.method() == Method::CONNECT {
        tokio::spawn(async move {
            let (Ok(upgraded), Ok(mut upstream)) = (
                hyper::upgrade::on(request).await,
                TcpStream::connect(&authority).await,
            ) else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut upstream).await;
        });
        return answer(StatusCode::OK, "");
    }
    match relay(request, &authority).await {
        Ok(response) => response,
        Err(err) => answer(StatusCode::BAD_GATEWAY, &err.to_string()),
    }
}

/// Sends `request` on to `authority` in origin form, without the proxy's
/// own header, and brings the answer back.
async fn relay(
    request: Request<Incoming>,
    authority: &str,
) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(authority).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let (mut parts, body) = request.into_parts();
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()?;
    parts.headers.remove(http::header::PROXY_AUTHORIZATION);
    let body = body.collect().await?.to_bytes();
    let response = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}

fn answer(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(text.as_bytes())));
    *response.status_mut() = status;
    response
}
