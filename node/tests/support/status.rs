//! A node's management status (`GET /api/v1/cluster/status`) read over a raw loopback HTTP/1.1
//! request (TLS when the node serves it), so cluster tests can poll it from any thread without an async runtime.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

use serde_json::Value;

/// A tiny blocking HTTP/1.1 GET (Connection: close) of the management status of one node (or of
/// anything that forwards it, like `keelson lb`).
pub fn status_of(addr: SocketAddr) -> Result<Value, String> {
    status_as(addr, None)
}

/// [`status_of`] with Basic credentials `(user, auth token)`, for nodes that enforce auth.
pub fn status_as(addr: SocketAddr, credentials: Option<(&str, &str)>) -> Result<Value, String> {
    status_over(addr, None, credentials)
}

/// [`status_as`] over TLS when `ca` is given.
pub fn status_over(addr: SocketAddr, ca: Option<&Path>, credentials: Option<(&str, &str)>) -> Result<Value, String> {
    use base64::Engine;
    let authorization = credentials.map_or(String::new(), |(user, token)| {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
        format!("Authorization: Basic {basic}\r\n")
    });
    let (status, body) = super::wire::get(addr, ca, "/api/v1/cluster/status", &authorization)?;
    let body = String::from_utf8_lossy(&body);
    if status != 200 {
        return Err(format!("{addr}: {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{addr}: {e}: {body}"))
}
