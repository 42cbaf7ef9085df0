//! `keelson lb`: a tiny round-robin TCP load balancer for local clusters and tests. Each client
//! connection goes to the next backend that accepts it; a dead backend is skipped. The relaying
//! ([`balance`]) takes its network from the caller, so the simulation runs this same balancer on
//! turmoil's network.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// Serves forever, spreading connections over `backends`.
pub async fn run(listen: &str, backends: Vec<String>) -> io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, ?backends, "load balancer listening");
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
    balance(accept, backends, connect).await
}

/// Relays every connection `accept` yields to the next of `backends` that `connect` reaches,
/// until `accept` fails.
pub async fn balance<A, AF, S, C, CF, T>(mut accept: A, backends: Vec<String>, connect: C) -> io::Result<()>
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
        tokio::spawn(async move {
            for _ in 0..backends.len() {
                let i = next.fetch_add(1, Ordering::Relaxed) % backends.len();
                if let Ok(mut server) = connect(backends[i].clone()).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
            }
        });
    }
}
