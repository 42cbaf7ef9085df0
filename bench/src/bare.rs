//! `keelson-bench bare-server`: a hyper server that answers every request with one fixed
//! body. Measured with the same GET workload as the registries, it shows the ceiling
//! that this machine, this client and hyper put on small GETs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::RngCore;
use tokio::net::TcpListener;

/// Why the bare server could not run.
#[derive(Debug, thiserror::Error)]
pub enum BareError {
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    AddrFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("accepting connections: {0}")]
    Accept(std::io::Error),
}

/// Serves `size` random bytes to every request until interrupted (SIGINT or SIGTERM).
pub async fn serve(listen: SocketAddr, size: usize, addr_file: Option<PathBuf>) -> Result<(), BareError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| BareError::Bind { addr: listen, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| BareError::Bind { addr: listen, source })?;
    if let Some(path) = addr_file {
        std::fs::write(&path, format!("{local}\n")).map_err(|source| BareError::AddrFile { path, source })?;
    }
    println!("bare-server listening on {local}, {size}-byte body");
    let mut data = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut data);
    let body = Bytes::from(data);

    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(BareError::Accept)?;
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => r.map_err(BareError::Accept)?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req: Request<Incoming>| {
                let mut resp = Response::new(Full::new(body.clone()));
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
                async move { Ok::<_, Infallible>(resp) }
            });
            // A client closing its connection is not an error worth reporting.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
