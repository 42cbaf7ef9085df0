//! The Keelson node: configuration, wiring of catalog, storage and API, and the accept loop.
//!
//! The binary (`main.rs`) only parses the command line and calls [`start`]; the simulation can
//! call the same function with its own listener.

pub mod config;

use std::net::SocketAddr;
use std::sync::Arc;

use keelson_api::{Limits, Registry, SystemClock};
use keelson_raft::{Catalog, CatalogConfig, NodeInfo};
use keelson_storage::{BlobStore, Uploads};
use tokio::net::TcpListener;

pub use config::ServeConfig;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot prepare data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error(transparent)]
    Catalog(#[from] keelson_raft::CatalogError),
}

/// A started node.
pub struct RunningNode {
    pub api_addr: SocketAddr,
    pub registry: Arc<Registry>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl RunningNode {
    /// Serves until the accept loop ends (it only ends on shutdown).
    pub async fn wait(self) {
        let _ = self.accept_task.await;
    }

    pub async fn shutdown(self) {
        self.accept_task.abort();
        self.registry.catalog.shutdown().await;
    }
}

/// Opens the stores, starts Raft (bootstrapping a single voter on first start) and serves the API.
pub async fn start(config: ServeConfig) -> Result<RunningNode, StartError> {
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| StartError::DataDir(data_dir.display().to_string(), e))?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| StartError::Listen(config.listen.clone(), e))?;
    let api_addr = listener
        .local_addr()
        .map_err(|e| StartError::Listen(config.listen.clone(), e))?;

    let catalog = Catalog::open(CatalogConfig {
        node_id: config.node_id,
        node: NodeInfo {
            api_addr: api_addr.to_string(),
            peer_addr: String::new(),
            fault_domain: config.fault_domain.clone(),
        },
        dir: data_dir.join("raft"),
        bootstrap_single: true,
    })
    .await?;
    catalog
        .wait_for_leader(std::time::Duration::from_secs(30))
        .await?;

    let data_err = |e| StartError::DataDir(data_dir.display().to_string(), e);
    let store = BlobStore::open(data_dir.join("blobs")).map_err(data_err)?;
    let uploads = Uploads::open(
        data_dir.join("uploads"),
        store.clone(),
        format!("n{}", config.node_id),
    )
    .map_err(data_err)?;
    let registry = Arc::new(Registry {
        catalog,
        store,
        uploads,
        clock: Arc::new(SystemClock),
        limits: Limits::default(),
    });

    // Tell whoever started us where we listen (tests and scripts wait for this file).
    let addr_file = data_dir.join("keelson.addr");
    let tmp = data_dir.join("keelson.addr.tmp");
    std::fs::write(&tmp, api_addr.to_string())
        .and_then(|_| std::fs::rename(&tmp, &addr_file))
        .map_err(data_err)?;
    tracing::info!(%api_addr, data_dir = %data_dir.display(), "keelson serving the registry API");

    let accept_registry = registry.clone();
    let accept_task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((socket, _)) => {
                    let _ = socket.set_nodelay(true);
                    tokio::spawn(keelson_api::serve(socket, accept_registry.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(RunningNode {
        api_addr,
        registry,
        accept_task,
    })
}
