//! Mutual TLS between peers (rustls through tonic): every node presents a certificate of the
//! cluster's CA when it serves its peer endpoint and when it dials another node, and accepts
//! only certificates of that CA in return. Raft RPCs, blob transfer and forwarded writes all use
//! the peer endpoint, so configuring this covers everything nodes say to each other.
//!
//! `deploy/certs.sh` makes a CA and node certificates with openssl.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0} holds no PEM {1}")]
    NotPem(PathBuf, &'static str),
}

/// This node's certificate and key, and the CA that peers' certificates must chain to.
#[derive(Clone)]
pub struct PeerTls {
    identity: Identity,
    ca: Certificate,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

impl PeerTls {
    /// Loads PEM files: the node's certificate (chain), its private key, the cluster CA.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<PeerTls, TlsError> {
        let read = |path: &Path, what: &'static str| -> Result<Vec<u8>, TlsError> {
            let bytes = std::fs::read(path).map_err(|e| TlsError::Read(path.to_path_buf(), e))?;
            if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
                return Err(TlsError::NotPem(path.to_path_buf(), what));
            }
            Ok(bytes)
        };
        Ok(PeerTls {
            identity: Identity::from_pem(read(cert, "certificate")?, read(key, "private key")?),
            ca: Certificate::from_pem(read(ca, "CA certificate")?),
        })
    }

    /// The peer endpoint's side: present our certificate, require one of the CA from clients.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// The dialing side: trust only the CA (the peer's certificate must name the host we dial),
    /// and present our certificate.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
    }
}
