//! One raw HTTP/1.1 exchange with a node, in plain TCP or in TLS (rustls, trusting a given CA),
//! for helpers that poll nodes from any thread without an async runtime: readiness, cluster
//! status, and which certificate a node serves.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A TLS client configuration trusting only the CA certificate(s) in `ca`.
pub fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(cert.expect("parse CA")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A connected TLS stream to `addr`, verifying the certificate for its IP address.
pub fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("{addr}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(client_config(ca), name).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    // Drive the handshake now, so a refused certificate is an error here.
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| format!("{addr}: TLS handshake: {e}"))?;
    }
    Ok(stream)
}

/// The DER of the leaf certificate `addr` serves now.
pub fn served_certificate(addr: SocketAddr, ca: &Path) -> Result<Vec<u8>, String> {
    let stream = tls_connect(addr, ca)?;
    stream
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| "no certificate".into())
}

/// Sends `GET path` (with `Connection: close` and the extra header lines `headers`) to `addr`,
/// over TLS when `ca` is given; returns the status and the body.
pub fn get(addr: SocketAddr, ca: Option<&Path>, path: &str, headers: &str) -> Result<(u16, Vec<u8>), String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    let mut buf = Vec::new();
    match ca {
        None => {
            let mut s =
                TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("{addr}: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            s.write_all(req.as_bytes()).map_err(|e| format!("{addr}: {e}"))?;
            s.read_to_end(&mut buf).map_err(|e| format!("{addr}: {e}"))?;
        }
        Some(ca) => {
            let mut s = tls_connect(addr, ca)?;
            s.write_all(req.as_bytes()).map_err(|e| format!("{addr}: {e}"))?;
            // A peer that closes without close_notify still sent a whole Connection: close answer.
            match s.read_to_end(&mut buf) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                Err(e) => return Err(format!("{addr}: {e}")),
            }
        }
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{addr}: no HTTP header end in {:?}", String::from_utf8_lossy(&buf)))?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr}: bad status line {head:?}"))?;
    Ok((status, buf[end + 4..].to_vec()))
}

/// An answer read off a [`Conn`].
pub struct Answer {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A kept-alive HTTP/1.1 connection over any byte stream (TLS in these tests), for exchanges
/// that must happen on one connection, in steps.
pub struct Conn<S: Read + Write> {
    pub stream: S,
    host: String,
    buffered: Vec<u8>,
}

impl<S: Read + Write> Conn<S> {
    pub fn new(stream: S, host: &str) -> Conn<S> {
        Conn {
            stream,
            host: host.to_string(),
            buffered: Vec::new(),
        }
    }

    /// Sends one request (the body with a Content-Length).
    pub fn send(&mut self, method: &str, path: &str, headers: &str, body: &[u8]) -> Result<(), String> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{headers}Content-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        self.stream.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
        self.stream.write_all(body).map_err(|e| e.to_string())?;
        self.stream.flush().map_err(|e| e.to_string())
    }

    /// Reads an answer's head; the body (Content-Length bytes) is then read with [`Conn::body`].
    pub fn head(&mut self) -> Result<(u16, Vec<(String, String)>), String> {
        let end = loop {
            if let Some(end) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buffered[..end]).into_owned();
        self.buffered.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok((status, headers))
    }

    /// Reads up to `len` more body bytes (at least one).
    pub fn body(&mut self, len: usize) -> Result<Vec<u8>, String> {
        if self.buffered.is_empty() && len > 0 {
            self.fill()?;
        }
        let take = len.min(self.buffered.len());
        Ok(self.buffered.drain(..take).collect())
    }

    /// One whole exchange.
    pub fn request(&mut self, method: &str, path: &str, headers: &str, body: &[u8]) -> Result<Answer, String> {
        self.send(method, path, headers, body)?;
        let (status, headers) = self.head()?;
        let len: usize = match method {
            "HEAD" => 0,
            _ => headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0),
        };
        let mut body = Vec::with_capacity(len);
        while body.len() < len {
            let part = self.body(len - body.len())?;
            body.extend_from_slice(&part);
        }
        Ok(Answer { status, headers, body })
    }

    fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        self.buffered.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}
