//! `keelson lb`: a tiny round-robin TCP load balancer for local clusters and tests. Each client
//! connection goes to the next ready backend that accepts it; a dead backend is skipped. A
//! prober asks every backend's `/readyz` each `--probe-ms` (over TLS with `--probe-ca` when the
//! nodes serve TLS: the balancer itself passes TLS through untouched), and a backend that is not
//! ready gets no new connections while another one is. The relaying ([`balance`]) takes its
//! network from the caller, so the simulation runs this same balancer on turmoil's network.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// Which backends answered their last readiness probe with 200 (all, until probed).
pub struct Readiness {
    ready: Vec<AtomicBool>,
}

impl Readiness {
    pub fn all_ready(backends: usize) -> Readiness {
        Readiness {
            ready: (0..backends).map(|_| AtomicBool::new(true)).collect(),
        }
    }

    fn is_ready(&self, i: usize) -> bool {
        self.ready.get(i).is_some_and(|r| r.load(Ordering::Relaxed))
    }

    fn set(&self, i: usize, ready: bool) {
        if let Some(r) = self.ready.get(i) {
            if r.swap(ready, Ordering::Relaxed) != ready {
                tracing::info!(backend = i, ready, "backend readiness changed");
            }
        }
    }
}

/// How the balancer probes its backends.
pub struct Probe {
    /// `https` or `http`: how the backends serve their API.
    pub tls: bool,
    /// CA to trust for `https` probes (`None`: the system's trust store).
    pub ca: Option<std::path::PathBuf>,
    pub every: Duration,
}

/// Serves forever, spreading connections over `backends`.
pub async fn run(listen: &str, backends: Vec<String>, probe: Probe) -> io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, ?backends, "load balancer listening");
    let readiness = Arc::new(Readiness::all_ready(backends.len()));
    tokio::spawn(probe_forever(backends.clone(), probe, readiness.clone()));
    let listener = &listener;
    let accept = move || async move {
        let (client, _) = listener.accept().await?;
        let _ = client.set_nodelay(true);
        Ok(client)
    };
    let connect = |addr: String| async move {
        let server = TcpStream::connect(addr).await?;
        let _ = server.set_nodelay(true);
        Ok(server)
    };
    balance(accept, backends, readiness, connect).await
}

/// Asks each backend's `/readyz` every `probe.every`; an answer other than 200, or none within
/// the interval, marks it not ready.
async fn probe_forever(backends: Vec<String>, probe: Probe, readiness: Arc<Readiness>) {
    let scheme = if probe.tls { "https" } else { "http" };
    let targets: Vec<crate::http_client::Target> = backends
        .iter()
        .map(|b| crate::http_client::Target {
            node: format!("{scheme}://{b}"),
            credentials: None,
            ca: probe.ca.clone(),
        })
        .collect();
    loop {
        for (i, target) in targets.iter().enumerate() {
            let answer =
                tokio::time::timeout(probe.every.max(Duration::from_millis(200)), target.status_of("/readyz")).await;
            readiness.set(i, matches!(answer, Ok(Ok(200))));
        }
        tokio::time::sleep(probe.every).await;
    }
}

/// Relays every connection `accept` yields to the next of `backends` that `connect` reaches,
/// until `accept` fails.
pub async fn balance<A, AF, S, C, CF, T>(
    mut accept: A,
    backends: Vec<String>,
    readiness: Arc<Readiness>,
    connect: C,
) -> io::Result<()>
where
    A: FnMut() -> AF,
    AF: Future<Output = io::Result<S>>,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C: Fn(String) -> CF + Send + Sync + 'static,
    CF: Future<Output = io::Result<T>> + Send,
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let backends = Arc::new(backends);
    let connect = Arc::new(connect);
    loop {
        let mut client = accept().await?;
        let (next, backends, connect) = (next.clone(), backends.clone(), connect.clone());
        let readiness = readiness.clone();
        tokio::spawn(async move {
            // Ready backends first; when none is ready (or none of them accepts), any that
            // accepts, so a cluster without a leader still answers its clients with errors.
            let start = next.fetch_add(1, Ordering::Relaxed);
            for only_ready in [true, false] {
                for k in 0..backends.len() {
                    let i = start.wrapping_add(k) % backends.len();
                    if only_ready && !readiness.is_ready(i) {
                        continue;
                    }
                    if let Ok(mut server) = connect(backends[i].clone()).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                }
            }
        });
    }
}
