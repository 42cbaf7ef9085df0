//! Requests this node makes to other HTTP services (another region, a pull-through upstream, a
//! webhook endpoint): one client per destination over TCP, with TLS for `https://` (trusting a
//! given CA, or the usual roots), or over the node's dialer when the network is simulated. The
//! callers own what they send; this owns how it travels and how long an answer may take.

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keelson_raft::network::{Dialer, DialerConnector};

use crate::body::Body;

/// How requests reach the other side: TCP (with TLS for `https://`), or the node's dialer (the
/// simulation's network).
#[derive(Clone)]
pub enum Transport {
    Tcp(Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>),
    Dialed(Client<DialerConnector, Body>),
}

impl Transport {
    /// A client trusting `ca_pem` (when given) for `https://`, or sending through `dialer`.
    pub fn new(ca_pem: Option<&str>, dialer: Option<&Dialer>) -> Result<Transport, crate::tls::TlsError> {
        if let Some(dialer) = dialer {
            return Ok(Transport::Dialed(
                Client::builder(TokioExecutor::new()).build(dialer.connector()),
            ));
        }
        let tls = crate::tls::client_config_pem(ca_pem)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Transport::Tcp(Client::builder(TokioExecutor::new()).build(connector)))
    }

    /// Sends `request` and waits at most `within` for the answer's head; the error says why
    /// there was none, with its causes.
    pub async fn send(&self, request: Request<Body>, within: Duration) -> Result<Response<Incoming>, String> {
        let sent = match self {
            Transport::Tcp(c) => tokio::time::timeout(within, c.request(request)).await,
            Transport::Dialed(c) => tokio::time::timeout(within, c.request(request)).await,
        };
        match sent {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(error_chain(&e)),
            Err(_) => Err(format!("no answer within {} s", within.as_secs())),
        }
    }
}

/// An error and its causes on one line (hyper's client error alone says only "SendRequest").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
