//! TLS towards clients (rustls): the registry API's server side, whose certificate is reloaded
//! from its files when they change, and the client side that nodes use to relay requests to each
//! other's APIs and that the CLI uses to reach a node.
//!
//! Renewals (cert-manager rewriting a Secret, an ACME client replacing files) must take effect
//! without a restart and without dropping connections: the acceptor asks [`ReloadingCert`] for
//! the certificate at every handshake, and a reload only swaps what later handshakes get, so
//! connections already established keep theirs. A pair of files that does not load (a key
//! written before its certificate, a half-written file) leaves the old certificate in place; the
//! next check tries again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};

/// Longest wait for a client to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0} holds no usable PEM {1}")]
    NotPem(PathBuf, &'static str),
    #[error("{0}: {1}")]
    Rejected(PathBuf, rustls::Error),
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// The API's TLS: a handshake acceptor over a certificate that follows its files.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    cert: Arc<ReloadingCert>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerTls({})", self.cert.cert_path.display())
    }
}

impl ServerTls {
    /// Loads the certificate chain and private key (PEM): TLS 1.3 and 1.2 only, HTTP/2 and
    /// HTTP/1.1 offered through ALPN.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let cert = Arc::new(ReloadingCert::load(cert, key)?);
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            cert,
        })
    }

    /// Completes the handshake of an accepted connection (bounded in time).
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(io)).await {
            Ok(done) => done,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }

    /// Reloads the certificate when its files changed since the last look; `Ok(true)` when a
    /// new certificate now answers handshakes.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        self.cert.reload_if_changed()
    }

    /// The certificate file being served (for logs).
    pub fn cert_path(&self) -> &Path {
        &self.cert.cert_path
    }
}

/// What the files looked like when last loaded: a change in either means "load again".
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp(Vec<(Option<SystemTime>, u64)>);

impl FileStamp {
    fn of(paths: &[&Path]) -> FileStamp {
        FileStamp(
            paths
                .iter()
                .map(|p| match std::fs::metadata(p) {
                    Ok(m) => (m.modified().ok(), m.len()),
                    Err(_) => (None, 0),
                })
                .collect(),
        )
    }
}

/// The certificate handed to every handshake, swapped when its files change.
struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: Mutex<FileStamp>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReloadingCert({})", self.cert_path.display())
    }
}

impl ReloadingCert {
    fn load(cert: &Path, key: &Path) -> Result<ReloadingCert, TlsError> {
        let stamp = FileStamp::of(&[cert, key]);
        Ok(ReloadingCert {
            current: RwLock::new(Arc::new(certified_key(cert, key)?)),
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            stamp: Mutex::new(stamp),
        })
    }

    fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = FileStamp::of(&[&self.cert_path, &self.key_path]);
        let mut stamp = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if *stamp == now {
            return Ok(false);
        }
        let loaded = certified_key(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        *stamp = now;
        Ok(true)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// A certificate chain and the private key that matches its first certificate.
fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert, "certificate")?;
    let bytes = std::fs::read(key).map_err(|e| TlsError::Read(key.to_path_buf(), e))?;
    let der = PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::NotPem(key.to_path_buf(), "private key"))?;
    let signing = provider::default_provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::Rejected(key.to_path_buf(), e))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError::Rejected(key.to_path_buf(), e))?;
    Ok(certified)
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::Read(path.to_path_buf(), e))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NotPem(path.to_path_buf(), what))?;
    if certs.is_empty() {
        return Err(TlsError::NotPem(path.to_path_buf(), what));
    }
    Ok(certs)
}

/// The client side: trusts the CA certificates in `ca` (the cluster's own CA, or whoever issued
/// the nodes' API certificates), or the system's trust store when `ca` is `None`. The HTTP
/// versions (ALPN) are left to the connector that uses it.
pub fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    match ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(path, "CA certificate")? {
                roots.add(cert).map_err(|e| TlsError::Rejected(path.to_path_buf(), e))?;
            }
            client_with_roots(roots)
        }
        None => client_config_pem(None),
    }
}

/// [`client_config`] with the CA given as PEM text (what the catalog keeps for a peer region).
pub fn client_config_pem(ca_pem: Option<&str>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            let source = PathBuf::from("the peer's CA certificate");
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|_| TlsError::NotPem(source.clone(), "CA certificate"))?;
            if certs.is_empty() {
                return Err(TlsError::NotPem(source, "CA certificate"));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| TlsError::Rejected(source.clone(), e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system bundle may hold certificates rustls cannot parse; skip those.
                let _ = roots.add(cert);
            }
        }
    }
    client_with_roots(roots)
}

fn client_with_roots(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, TlsError> {
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}
