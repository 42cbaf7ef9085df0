//! The Keelson node: configuration, wiring of catalog, storage and API, the accept loops of the
//! registry API and the peer endpoint.
//!
//! The binary (`main.rs`) only parses the command line and calls [`start`].

pub mod cluster_cli;
pub mod config;
pub mod lb;

use std::net::SocketAddr;
use std::sync::Arc;

use keelson_api::{Limits, Redundancy, Registry, SystemClock};
use keelson_raft::peer::PeerService;
use keelson_raft::{Catalog, CatalogConfig, NodeInfo};
use keelson_storage::{BlobPeers, BlobService, BlobStore, Uploads};
use tokio::net::TcpListener;

pub use config::{ServeArgs, ServeConfig};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot prepare data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Catalog(#[from] keelson_raft::CatalogError),
}

/// A started node.
pub struct RunningNode {
    pub api_addr: SocketAddr,
    pub peer_addr: Option<SocketAddr>,
    pub registry: Arc<Registry>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.registry.catalog.shutdown().await;
    }
}

/// Opens the stores, starts Raft and serves the API (and the peer endpoint in cluster mode). A
/// node without `peer_listen` bootstraps itself as a one-node cluster on first start.
pub async fn start(config: ServeConfig) -> Result<RunningNode, StartError> {
    let data_dir = &config.data_dir;
    let data_err = |e| StartError::DataDir(data_dir.display().to_string(), e);
    std::fs::create_dir_all(data_dir).map_err(data_err)?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| StartError::Listen(config.listen.clone(), e))?;
    let api_addr = listener
        .local_addr()
        .map_err(|e| StartError::Listen(config.listen.clone(), e))?;
    let peer_listener = match &config.peer_listen {
        None => None,
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| StartError::Listen(addr.clone(), e))?,
        ),
    };
    let peer_addr = peer_listener.as_ref().and_then(|l| l.local_addr().ok());
    let self_node = NodeInfo {
        api_addr: config.advertise.clone().unwrap_or_else(|| api_addr.to_string()),
        peer_addr: peer_addr.map(|a| a.to_string()).unwrap_or_default(),
        fault_domain: config.fault_domain.clone(),
    };

    let single = config.peer_listen.is_none();
    let catalog = Catalog::open(CatalogConfig {
        node_id: config.node_id,
        node: self_node.clone(),
        dir: data_dir.join("raft"),
        bootstrap_single: single,
    })
    .await?;

    let store = BlobStore::open(data_dir.join("blobs")).map_err(data_err)?;
    let uploads = Arc::new(
        Uploads::open(data_dir.join("uploads"), store.clone(), format!("n{}", config.node_id)).map_err(data_err)?,
    );
    let mut tasks = Vec::new();
    if let Some(peer_listener) = peer_listener {
        let raft_service = PeerService::new(catalog.raft().clone()).into_server();
        let blob_service = BlobService::new(store.clone(), uploads.clone()).into_server();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(peer_listener);
        tasks.push(tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(8 << 20)
                .add_service(raft_service)
                .add_service(blob_service)
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "peer endpoint stopped");
            }
        }));
    }
    if single {
        catalog.wait_for_leader(std::time::Duration::from_secs(30)).await?;
    }

    let peers = BlobPeers::new(catalog.channels().clone());
    let registry = Arc::new(Registry {
        self_node,
        catalog,
        store,
        uploads,
        peers,
        proxy: Default::default(),
        clock: Arc::new(SystemClock),
        limits: Limits::default(),
        redundancy: Redundancy {
            replicas: config.replicas,
            ..Default::default()
        },
    });

    let accept_registry = registry.clone();
    tasks.push(tokio::spawn(async move {
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
    }));

    // Tell whoever started us where we listen (tests and scripts wait for this file).
    let addr_file = data_dir.join("keelson.addr");
    let tmp = data_dir.join("keelson.addr.tmp");
    std::fs::write(&tmp, api_addr.to_string())
        .and_then(|_| std::fs::rename(&tmp, &addr_file))
        .map_err(data_err)?;
    if let Some(peer) = peer_addr {
        std::fs::write(data_dir.join("keelson.peer"), peer.to_string()).map_err(data_err)?;
    }
    tracing::info!(%api_addr, ?peer_addr, node_id = config.node_id, region = %config.region, data_dir = %data_dir.display(), "keelson serving");
    Ok(RunningNode {
        api_addr,
        peer_addr,
        registry,
        tasks,
    })
}
