//! `keelson lb`: a tiny round-robin TCP load balancer for local clusters and tests. Each client
//! connection goes to the next backend that accepts it; a dead backend is skipped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

/// Serves forever, spreading connections over `backends`.
pub async fn run(listen: &str, backends: Vec<String>) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, ?backends, "load balancer listening");
    let next = Arc::new(AtomicUsize::new(0));
    let backends = Arc::new(backends);
    loop {
        let (mut client, _) = listener.accept().await?;
        let (next, backends) = (next.clone(), backends.clone());
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            for _ in 0..backends.len() {
                let i = next.fetch_add(1, Ordering::Relaxed) % backends.len();
                if let Ok(mut server) = TcpStream::connect(&backends[i]).await {
                    let _ = server.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
            }
        });
    }
}
