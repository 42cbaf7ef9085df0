//! The Keelson node: configuration, wiring of catalog, storage and API, the accept loops of the
//! registry API and the peer endpoint.
//!
//! The binary (`main.rs`) only parses the command line and calls [`start`].

pub mod admin_cli;
pub mod audit_cli;
pub mod capacity;
pub mod cluster_cli;
pub mod config;
pub mod http_client;
pub mod jobs;
pub mod lb;
pub mod lifecycle;
pub mod lifecycle_cli;
pub mod region_cli;
pub mod vulndb_cli;

use std::net::SocketAddr;
use std::sync::Arc;

use keelson_api::proxy::Proxy;
use keelson_api::tls::ServerTls;
use keelson_api::{AuthMode, Clock, Limits, Redundancy, Registry, SystemClock};
use keelson_raft::network::{Dialer, PeerChannels};
use keelson_raft::peer::PeerService;
use keelson_raft::{Catalog, CatalogConfig, NodeInfo};
use keelson_storage::{BlobPeers, BlobService, BlobStore, Uploads};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

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
    #[error("peer TLS: {0}")]
    PeerTls(String),
    #[error("API TLS: {0}")]
    ApiTls(#[from] keelson_api::tls::TlsError),
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
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::DataDir(config.data_dir.display().to_string(), e))?;
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
    let peer = match peer_listener {
        None => None,
        Some(listener) => {
            let addr = listener
                .local_addr()
                .map_err(|e| StartError::Listen(config.peer_listen.clone().unwrap_or_default(), e))?;
            Some(Listener {
                incoming: tokio_stream::wrappers::TcpListenerStream::new(listener),
                addr,
            })
        }
    };
    let api_incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|socket| {
            let _ = socket.set_nodelay(true);
        })
    });
    let api = Listener {
        incoming: api_incoming,
        addr: api_addr,
    };
    let mut env = Environment::default();
    if config.lifecycle.test_clock {
        tracing::warn!("test clock on: the cluster administrator can move this node's clock forward");
        env.clock = Arc::new(keelson_api::AdjustableClock::default());
    }
    start_with(config, api, peer, env).await
}

/// What a node takes from its surroundings besides its listeners: how it dials other nodes and
/// what time it is. The default is plain TCP and the system clock; the simulation passes its own.
#[derive(Clone)]
pub struct Environment {
    /// Opens connections to other nodes; `None` dials plain TCP.
    pub dialer: Option<Dialer>,
    /// The wall clock stamped on catalog entries.
    pub clock: Arc<dyn Clock>,
}

impl Default for Environment {
    fn default() -> Self {
        Environment {
            dialer: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// An already bound listener: the stream of connections it accepts and the address it is bound
/// to (the address this node advertises when the configuration names none).
pub struct Listener<S> {
    pub incoming: S,
    pub addr: SocketAddr,
}

/// [`start`] on listeners bound by the caller, dialling other nodes and reading the time through
/// `env`. The API listener yields any byte stream; the peer listener's streams also tell
/// tonic about the connection ([`tonic::transport::server::Connected`]). `config.listen` and
/// `config.peer_listen` are not bound here; `config.peer_listen` only says whether the node runs
/// in a cluster, and it must be `Some` exactly when `peer` is.
pub async fn start_with<A, AIo, AErr, P, PIo, PErr>(
    config: ServeConfig,
    api: Listener<A>,
    peer: Option<Listener<P>>,
    env: Environment,
) -> Result<RunningNode, StartError>
where
    A: Stream<Item = Result<AIo, AErr>> + Send + Unpin + 'static,
    AIo: AsyncRead + AsyncWrite + keelson_api::server::RemoteAddr + Unpin + Send + 'static,
    AErr: std::fmt::Display + Send + 'static,
    P: Stream<Item = Result<PIo, PErr>> + Send + 'static,
    PIo: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    PIo::ConnectInfo: Clone + Send + Sync + 'static,
    PErr: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let data_dir = &config.data_dir;
    let data_err = |e| StartError::DataDir(data_dir.display().to_string(), e);
    let api_tls = match &config.api_tls {
        None => None,
        Some(settings) => Some(ServerTls::load(&settings.cert, &settings.key)?),
    };
    let relay_tls = match &config.api_tls {
        None => None,
        Some(settings) => Some(keelson_api::tls::client_config(settings.ca.as_deref())?),
    };
    if api_tls.is_none() && config.insecure_http {
        tracing::warn!(listen = %config.listen, "serving the registry API in plain HTTP (--insecure-http): credentials and images cross the network in the clear");
    }
    std::fs::create_dir_all(data_dir).map_err(data_err)?;
    let api_addr = api.addr;
    let peer_addr = peer.as_ref().map(|p| p.addr);
    let self_node = NodeInfo {
        api_addr: config.advertise.clone().unwrap_or_else(|| api_addr.to_string()),
        peer_addr: match (&config.advertise_peer, peer_addr) {
            (Some(advertised), Some(_)) => advertised.clone(),
            (_, bound) => bound.map(|a| a.to_string()).unwrap_or_default(),
        },
        fault_domain: config.fault_domain.clone(),
    };

    let single = config.peer_listen.is_none();
    let channels = match &env.dialer {
        None => PeerChannels::default(),
        Some(d) => PeerChannels::with_dialer(d.clone()),
    };
    let channels = match &config.peer_tls {
        None => channels,
        Some(tls) => channels.with_tls(tls.clone()),
    };
    let catalog = Catalog::open_with(
        CatalogConfig {
            node_id: config.node_id,
            node: self_node.clone(),
            dir: data_dir.join("raft"),
            bootstrap_single: single,
            snapshot_every_logs: config.snapshot_every_logs,
        },
        channels,
    )
    .await?;

    let mut store = BlobStore::open(data_dir.join("blobs")).map_err(data_err)?;
    if let Some(ring) = &config.key_ring {
        store = store
            .with_key_ring(ring.clone())
            .with_decrypted_cache(config.decrypted_cache_bytes);
    }
    let upload_clock = env.clock.clone();
    let uploads = Arc::new(
        Uploads::open_with(
            data_dir.join("uploads"),
            store.clone(),
            format!("n{}", config.node_id),
            config.uploads.limits,
            Arc::new(move || upload_clock.now_ms()),
        )
        .map_err(data_err)?,
    );
    let mut tasks = Vec::new();
    if let Some(peer) = peer {
        let raft_service = PeerService::new(&catalog).into_server();
        let blob_service = BlobService::new(store.clone(), uploads.clone())
            .with_peers(BlobPeers::new(catalog.channels().clone()))
            .into_server();
        let incoming = peer.incoming;
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &config.peer_tls {
            server = server
                .tls_config(tls.server_config())
                .map_err(|e| StartError::PeerTls(e.to_string()))?;
        }
        tasks.push(tokio::spawn(async move {
            let served = server
                .tcp_nodelay(true)
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(8 << 20)
                // Replicas arrive in 1 MiB messages: let peers send them in 1 MiB frames
                // instead of 64 frames of 16 KiB each.
                .max_frame_size(1 << 20)
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
    let metrics = keelson_api::metrics::Metrics::with_raft(catalog.timings());
    let registry = Arc::new(Registry {
        self_node,
        catalog,
        store,
        uploads,
        peers,
        dialer: env.dialer.clone(),
        proxy: match (env.dialer, relay_tls) {
            (Some(d), _) => Proxy::with_dialer(d),
            (None, Some(tls)) => Proxy::with_tls(tls),
            (None, None) => Default::default(),
        },
        clock: env.clock.clone(),
        limits: Limits::default(),
        blob_health: Default::default(),
        redundancy: Redundancy {
            replicas: config.replicas,
            erasure: config.blob_jobs.erasure,
            erasure_min_bytes: config.blob_jobs.erasure_min_bytes,
            ..Default::default()
        },
        auth_mode: match config.auth {
            config::AuthSetting::Enforce => AuthMode::Enforce,
            config::AuthSetting::Off => AuthMode::Off,
        },
        token_uses: Default::default(),
        verified: Default::default(),
        max_tokens_per_user: config.max_tokens_per_user,
        console_session_secs: config.console_session_secs,
        metrics,
        audit: Default::default(),
        webhooks: Default::default(),
        storage_probe: Default::default(),
        tees: Default::default(),
        pulls: keelson_api::pulls::PullCounter::new(config.lifecycle.count_pulls),
        tls: api_tls.is_some(),
        bootstrap_token: config.bootstrap_token.clone(),
        rate_limits: keelson_api::rate_limit::RateLimits::new(config.rates, env.clock.clone()),
        replicator: Default::default(),
        pull_through: Default::default(),
        signature_checks: Default::default(),
        scan_reports: Default::default(),
        this: Default::default(),
    });
    let _ = registry.this.set(Arc::downgrade(&registry));
    if single {
        match keelson_api::bootstrap_admin(&registry, config.bootstrap_token.clone()).await {
            // Printed once, on the first start, to stdout only (never to the log).
            Ok(Some(token)) => {
                println!("keelson: cluster administrator keelson/admin, auth token (shown once): {token}")
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e.message, "could not bootstrap the administrator"),
        }
        if let Err(e) = keelson_api::bootstrap_redundancy(&registry).await {
            tracing::warn!(error = %e.message, "could not commit the default redundancy policy");
        }
    }
    if let Some(interval) = config.capacity_interval {
        tasks.push(capacity::spawn(
            registry.clone(),
            data_dir.join("blobs"),
            config.capacity_bytes,
            interval,
        ));
    }
    tasks.push(tokio::spawn(flush_token_uses(registry.clone())));
    tasks.push(lifecycle::spawn_pull_flush(
        registry.clone(),
        config.lifecycle.pull_flush,
    ));
    tasks.push(lifecycle::spawn_audit_flush(
        registry.clone(),
        config.lifecycle.audit_flush,
    ));
    tasks.push(lifecycle::spawn_webhooks(
        registry.clone(),
        config.lifecycle.webhook_poll,
    ));
    if config.lifecycle.scanner {
        tasks.push(lifecycle::spawn_scanner(registry.clone(), config.lifecycle.scan_poll));
    }
    tasks.push(lifecycle::spawn_retention(
        registry.clone(),
        config.lifecycle.retention_interval,
        config.lifecycle.audit_retention,
    ));
    tasks.push(lifecycle::spawn_identity_sync(
        registry.clone(),
        config.regions.identity_sync,
    ));
    tasks.push(lifecycle::spawn_replication(
        registry.clone(),
        config.regions.replication_poll,
        config.regions.replication_reconcile,
    ));
    tasks.push(tokio::spawn(sweep_idle_tees(registry.clone())));
    tasks.push(jobs::expire_uploads(registry.clone(), &config.uploads));
    tasks.push(jobs::shrink_rate_limits(registry.clone()));
    tasks.extend(jobs::spawn(&registry, config.blob_jobs.clone()));

    if let (Some(tls), Some(settings)) = (&api_tls, &config.api_tls) {
        tasks.push(jobs::reload_certificate(tls.clone(), settings.reload_every));
    }
    if let Some(ring) = &config.key_ring {
        tasks.push(jobs::reload_master_keys(ring.clone()));
    }
    let accept_registry = registry.clone();
    let mut api_incoming = api.incoming;
    tasks.push(tokio::spawn(async move {
        while let Some(accepted) = api_incoming.next().await {
            match accepted {
                Ok(socket) => {
                    let registry = accept_registry.clone();
                    let remote = socket.remote_ip();
                    match api_tls.clone() {
                        None => {
                            tokio::spawn(keelson_api::serve(socket, remote, registry));
                        }
                        Some(tls) => {
                            tokio::spawn(async move {
                                match tls.accept(socket).await {
                                    Ok(stream) => keelson_api::serve(stream, remote, registry).await,
                                    Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                                }
                            });
                        }
                    }
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

/// Drops the replica streams of uploads abandoned halfway (see `keelson_storage::tee`).
async fn sweep_idle_tees(registry: Arc<Registry>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        registry.tees.sweep(keelson_storage::tee::IDLE);
    }
}

/// Writes the auth-token uses this node saw to the catalog every half minute (one Raft entry for
/// all of them, never one per request).
async fn flush_token_uses(registry: Arc<Registry>) {
    // KEELSON_TOKEN_USE_FLUSH_MS shortens the period (tests); the default suits production.
    let period_ms = std::env::var("KEELSON_TOKEN_USE_FLUSH_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000u64);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(period_ms.max(10)));
    loop {
        tick.tick().await;
        let uses = registry.token_uses.take();
        if uses.is_empty() {
            continue;
        }
        let cmd = keelson_raft::CatalogCommand::Identity(keelson_raft::identity::IdentityCommand::TouchTokens { uses });
        if let Err(e) = registry.catalog.propose(cmd).await {
            tracing::debug!(error = %e, "token use flush deferred");
        }
    }
}
