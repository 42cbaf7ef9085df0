//! The small JSON-over-HTTP client behind the `keelson cluster` and `keelson admin` commands.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A failed management call.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach {0}: {1}")]
    Connect(String, String),
    #[error("{0} answered {1}: {2}")]
    Refused(String, u16, String),
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// The call worked; what it found is a failure (an image without a valid signature).
    #[error("{0}")]
    Check(String),
    #[error(transparent)]
    Tls(#[from] keelson_api::tls::TlsError),
}

/// Where to send management calls and as whom.
#[derive(Debug, Clone)]
pub struct Target {
    /// API address of any node (`host:port`, `http://host:port` or `https://host:port`).
    pub node: String,
    /// `(user, auth token)` for Basic authentication.
    pub credentials: Option<(String, String)>,
    /// CA certificate to trust for `https://` nodes (`None`: the system's trust store).
    pub ca: Option<std::path::PathBuf>,
}

impl Target {
    /// Sends `method path` with an optional JSON body; returns the JSON answer.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, CliError> {
        let (url, status, bytes) = self.send(method, path, body).await?;
        if !status.is_success() {
            return Err(CliError::Refused(
                url,
                status.as_u16(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| CliError::Decode(e.to_string()))
    }

    /// The status a GET of `path` answers (a probe: the body is read and dropped).
    pub async fn status_of(&self, path: &str) -> Result<u16, CliError> {
        let (_, status, _) = self.send("GET", path, None).await?;
        Ok(status.as_u16())
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(String, hyper::StatusCode, Bytes), CliError> {
        let tls = keelson_api::tls::client_config(self.ca.as_deref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
        let base = if self.node.starts_with("http://") || self.node.starts_with("https://") {
            self.node.clone()
        } else {
            format!("http://{}", self.node)
        };
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(&url)
            .header("Content-Type", "application/json");
        if let Some((user, token)) = &self.credentials {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
            builder = builder.header("Authorization", format!("Basic {basic}"));
        }
        let req = builder
            .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
            .map_err(|e| CliError::Connect(url.clone(), e.to_string()))?;
        let resp = client
            .request(req)
            .await
            .map_err(|e| CliError::Connect(url.clone(), e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| CliError::Connect(url.clone(), e.to_string()))?
            .to_bytes();
        Ok((url, status, bytes))
    }

    /// The same target on another node.
    /// A bare `host:port` inherits this target's scheme.
    pub fn on(&self, node: &str) -> Target {
        let node = match self.node.starts_with("https://") && !node.contains("://") {
            true => format!("https://{node}"),
            false => node.to_string(),
        };
        Target {
            node,
            credentials: self.credentials.clone(),
            ca: self.ca.clone(),
        }
    }
}

/// Prints a line to stdout; a closed pipe (`keelson … | head`) is not an error worth a panic.
pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}
