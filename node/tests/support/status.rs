//! A node's management status (`GET /api/v1/cluster/status`) read over a raw loopback HTTP/1.1
//! request, so cluster tests can poll it from any thread without an async runtime.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// A tiny blocking HTTP/1.1 GET (Connection: close) of the management status of one node (or of
/// anything that forwards it, like `keelson lb`).
pub fn status_of(addr: SocketAddr) -> Result<Value, String> {
    status_as(addr, None)
}

/// [`status_of`] with Basic credentials `(user, auth token)`, for nodes that enforce auth.
pub fn status_as(addr: SocketAddr, credentials: Option<(&str, &str)>) -> Result<Value, String> {
    use base64::Engine;
    let authorization = credentials.map_or(String::new(), |(user, token)| {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
        format!("Authorization: Basic {basic}\r\n")
    });
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let req =
        format!("GET /api/v1/cluster/status HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| format!("{addr}: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{addr}: {head} {body}"));
    }
    serde_json::from_str(body).map_err(|e| format!("{addr}: {e}: {body}"))
}
