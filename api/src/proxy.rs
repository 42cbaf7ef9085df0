//! Forwards a request to another node's API, streaming both ways. Upload sessions live on the
//! node that opened them; a load balancer may land the session's next PATCH or PUT anywhere, and
//! this is how it reaches its owner. Large blob GETs that land on a node without a copy are
//! relayed the same way to a holder, which serves them from a memory map.
//!
//! Connections are plain TCP by default; [`Proxy::with_tls`] makes them HTTPS (a node whose API
//! serves TLS relays only over TLS, so a client's bytes and credentials never cross the network
//! in the clear), and [`Proxy::with_dialer`] makes them through a [`Dialer`] instead (the
//! simulation's network), with everything above the socket unchanged. The caller's
//! `Authorization` travels with the relayed request, so the receiving node checks the same
//! identity again.

use http::{HeaderMap, Request, Response, Uri};
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
    Tcp(Client<HttpConnector, Body>),
    Tls(Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>),
    Dialed(Client<DialerConnector, Body>),
}

fn tcp_connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    // As for peer channels: an unreachable node must fail fast, so the caller tries another.
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(2)));
    connector
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy {
            client: ProxyClient::Tcp(Client::builder(TokioExecutor::new()).build(tcp_connector())),
        }
    }
}

impl Proxy {
    /// A proxy that reaches other nodes' APIs over TLS only, trusting what `tls` trusts.
    pub fn with_tls(tls: rustls::ClientConfig) -> Proxy {
        let mut http = tcp_connector();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            // Relays are long uploads and blob bodies: one HTTP/1.1 connection each, pooled.
            .enable_http1()
            .wrap_connector(http);
        Proxy {
            client: ProxyClient::Tls(Client::builder(TokioExecutor::new()).build(connector)),
        }
    }

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
    pub async fn forward(&self, api_addr: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        if is_forwarded(req.headers()) {
            return Err(unavailable("upload owner mismatch after forwarding".into()));
        }
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
        let req = req.map(|b| b.map_err(std::io::Error::other).boxed());
        let response = self.send(api_addr, &path, req).await?;
        Ok(response.map(|b| b.map_err(std::io::Error::other).boxed()))
    }

    /// Sends a bodiless GET for `path` with `headers` to the node whose API listens on
    /// `api_addr`, marked as forwarded, and returns its answer as it arrives.
    pub async fn get(&self, api_addr: &str, path: &str, headers: HeaderMap) -> Result<Response<Incoming>, ApiError> {
        let mut req = Request::new(crate::body::empty());
        *req.headers_mut() = headers;
        self.send(api_addr, path, req).await
    }

    async fn send(&self, api_addr: &str, path: &str, mut req: Request<Body>) -> Result<Response<Incoming>, ApiError> {
        let scheme = match self.client {
            ProxyClient::Tls(_) => "https",
            _ => "http",
        };
        let uri: Uri = format!("{scheme}://{api_addr}{path}")
            .parse()
            .map_err(|_| unavailable(format!("bad node address {api_addr}")))?;
        *req.uri_mut() = uri;
        req.headers_mut()
            .insert(FORWARDED_HEADER, http::HeaderValue::from_static("1"));
        if !req.headers().contains_key(keelson_raft::request_id::HEADER) {
            if let Some(id) = keelson_raft::request_id::current().and_then(|id| http::HeaderValue::from_str(&id).ok()) {
                req.headers_mut().insert(keelson_raft::request_id::HEADER, id);
            }
        }
        match &self.client {
            ProxyClient::Tcp(client) => client.request(req).await,
            ProxyClient::Tls(client) => client.request(req).await,
            ProxyClient::Dialed(client) => client.request(req).await,
        }
        .map_err(|e| unavailable(format!("node {api_addr} unreachable: {e}")))
    }
}

/// Whether a request was already forwarded once by another node.
pub fn is_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED_HEADER)
}

fn unavailable(why: String) -> ApiError {
    ApiError::new(ErrorCode::Unavailable, why).with_header("Retry-After", "1".into())
}
