//! A minimal HTTP/1.1 client on the simulated network: one fresh connection per request (so a
//! connection broken by a fault never outlives the request), hyper 1 on a turmoil stream, every
//! request bounded by a deadline in simulated time.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use turmoil::net::TcpStream;

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Build(#[from] http::Error),
    #[error("timed out")]
    Timeout,
}

impl HttpError {
    /// A short, stable label for traces and counters.
    pub fn label(&self) -> &'static str {
        match self {
            HttpError::Connect(_) => "connect-failed",
            HttpError::ConnectTimeout => "connect-timeout",
            HttpError::Http(_) => "http-error",
            HttpError::Build(_) => "bad-request",
            HttpError::Timeout => "timeout",
        }
    }
}

/// Aborts the connection task when the request is over, whatever way it ended.
struct ConnTask(tokio::task::JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a connection attempt may take (a crashed host never answers a SYN).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends one request to `addr` (`host:port`) and reads the whole answer.
pub async fn request(
    addr: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> Result<Reply, HttpError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr.to_string())).await {
        Err(_) => return Err(HttpError::ConnectTimeout),
        Ok(Err(e)) => return Err(HttpError::Connect(e)),
        Ok(Ok(s)) => s,
    };
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let _task = ConnTask(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let mut builder = Request::builder().method(method).uri(path).header("host", addr);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let req = builder.body(Full::new(body))?;
        let response = sender.send_request(req).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err(HttpError::Timeout),
        Ok(result) => result,
    }
}

/// `GET`.
pub async fn get(addr: &str, path: &str, timeout: Duration) -> Result<Reply, HttpError> {
    request(addr, Method::GET, path, &[], Bytes::new(), timeout).await
}
