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
}

/// Where to send management calls and as whom.
#[derive(Debug, Clone)]
pub struct Target {
    /// API address of any node (`host:port` or `http://host:port`).
    pub node: String,
    /// `(user, auth token)` for Basic authentication.
    pub credentials: Option<(String, String)>,
}

impl Target {
    /// Sends `method path` with an optional JSON body; returns the JSON answer.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, CliError> {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let base = if self.node.starts_with("http://") {
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

    /// The same target on another node.
    pub fn on(&self, node: &str) -> Target {
        Target {
            node: node.to_string(),
            credentials: self.credentials.clone(),
        }
    }
}

/// Prints a line to stdout; a closed pipe (`keelson … | head`) is not an error worth a panic.
pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}
