//! Forwards a request to another node's API, streaming both ways. Upload sessions live on the
//! node that opened them; a load balancer may land the session's next PATCH or PUT anywhere, and
//! this is how it reaches its owner.
//!
//! Connections are plain TCP by default; [`Proxy::with_dialer`] makes them through a
//! [`Dialer`] instead (the simulation's network), with everything above the socket unchanged.

use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keelson_raft::network::{Dialer, DialerConnector};

use crate::body::Body;
use crate::error::{ApiError, ErrorCode};

/// An HTTP client for node-to-node forwarding (keep-alive pooled).
#[derive(Clone)]
pub struct Proxy {
    client: ProxyClient,
}

#[derive(Clone)]
enum ProxyClient {
    Tcp(Client<HttpConnector, Incoming>),
    Dialed(Client<DialerConnector, Incoming>),
}

impl Default for Proxy {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Proxy {
            client: ProxyClient::Tcp(Client::builder(TokioExecutor::new()).build(connector)),
        }
    }
}

impl Proxy {
    /// A proxy whose connections are opened by `dialer`.
    pub fn with_dialer(dialer: Dialer) -> Proxy {
        Proxy {
            client: ProxyClient::Dialed(Client::builder(TokioExecutor::new()).build(dialer.connector())),
        }
    }
}

/// Marks a request already forwarded once, so a misrouted request can never loop.
pub const FORWARDED_HEADER: &str = "keelson-forwarded";

impl Proxy {
    /// Sends `req` to the node whose API listens on `api_addr` and relays its answer.
    pub async fn forward(&self, api_addr: &str, mut req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let unavailable =
            |why: String| ApiError::new(ErrorCode::Unavailable, why).with_header("Retry-After", "1".into());
        if req.headers().contains_key(FORWARDED_HEADER) {
            return Err(unavailable("upload owner mismatch after forwarding".into()));
        }
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
        let uri: Uri = format!("http://{api_addr}{path}")
            .parse()
            .map_err(|_| unavailable(format!("bad node address {api_addr}")))?;
        *req.uri_mut() = uri;
        req.headers_mut()
            .insert(FORWARDED_HEADER, http::HeaderValue::from_static("1"));
        let response = match &self.client {
            ProxyClient::Tcp(client) => client.request(req).await,
            ProxyClient::Dialed(client) => client.request(req).await,
        }
        .map_err(|e| unavailable(format!("upload owner unreachable: {e}")))?;
        Ok(response.map(|b| b.map_err(std::io::Error::other).boxed()))
    }
}
