//! `keelson`: the command line.

use clap::{Parser, Subcommand};
use keelson::admin_cli::AdminCommand;
use keelson::cluster_cli::ClusterCommand;
use keelson::http_client::Target;
use keelson::lifecycle_cli::{ImagesCommand, RepoCommand, RetentionCommand};
use keelson::region_cli::{CacheCommand, RegionCommand, ReplicationCommand};
use keelson::ServeArgs;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "keelson", version = VERSION, about = "Keelson: a container image registry cluster")]
struct Cli {
    /// How log lines are written to stderr: `text` (coloured only on a terminal) or `json`
    /// (one object per line, with the request id of the request that caused it).
    #[arg(long, global = true, env = "KEELSON_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The version and the commit it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("KEELSON_COMMIT"), ")");

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (with no flags: a single-node registry on 127.0.0.1:5000, data in ./keelson-data).
    Serve(Box<ServeArgs>),
    /// Manage the cluster through any member's API.
    Cluster {
        #[command(flatten)]
        target: TargetArgs,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Manage tenancies, users, groups, policies, auth tokens and repositories.
    Admin {
        #[command(flatten)]
        target: TargetArgs,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// A repository's images: list (with sizes and pull counts), show, delete, untag.
    Images {
        #[command(flatten)]
        target: TargetArgs,
        #[command(subcommand)]
        command: ImagesCommand,
    },
    /// The vulnerability database: import OSV files (offline), show the active one.
    Vulndb {
        #[command(flatten)]
        target: TargetArgs,
        #[command(subcommand)]
        command: keelson::vulndb_cli::VulndbCommand,
    },
    /// A repository's summary and settings (description, readme, retention, immutable tags).
    Repo {
        #[command(flatten)]
        target: TargetArgs,
        #[command(subcommand)]
        command: RepoCommand,
    },
    /// Retention (cleanup) policies: define, assign, preview, run, and the deletion log.
    Retention {
        #[command(flatten)]
        target: TargetArgs,
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// This cluster's region, its home region (where identity is managed) and its peer regions.
    Region {
        #[command(flatten)]
        target: TargetArgs,
        #[command(subcommand)]
        command: RegionCommand,
    },
    /// Cross-region replication rules and their status.
    Replication {
        #[command(flatten)]
        target: TargetArgs,
        #[command(subcommand)]
        command: ReplicationCommand,
    },
    /// Pull-through caches: repository prefixes that mirror an upstream registry.
    Cache {
        #[command(flatten)]
        target: TargetArgs,
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// The audit log: changes and failed logins, newest first.
    Audit {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        args: keelson::audit_cli::AuditArgs,
    },
    /// A round-robin TCP load balancer (for local clusters and tests).
    Lb {
        #[arg(long)]
        listen: String,
        /// Backend addresses (`host:port`), repeatable.
        #[arg(long = "backend", required = true)]
        backends: Vec<String>,
        /// Probe the backends' `/readyz` over HTTPS (the nodes serve TLS).
        #[arg(long)]
        probe_tls: bool,
        /// CA that signed the nodes' API certificates, for HTTPS probes.
        #[arg(long)]
        probe_ca: Option<std::path::PathBuf>,
        /// Milliseconds between two readiness probes of each backend.
        #[arg(long, default_value_t = 1000)]
        probe_ms: u64,
    },
}

/// Which node to talk to, and as whom.
#[derive(Debug, clap::Args)]
struct TargetArgs {
    /// API address of the node to talk to.
    #[arg(long, env = "KEELSON_NODE", default_value = "127.0.0.1:5000", global = true)]
    node: String,
    /// CA certificate (PEM) to trust when --node is `https://…` [default: the system's trust
    /// store].
    #[arg(long, env = "KEELSON_CA", global = true)]
    ca: Option<std::path::PathBuf>,
    /// User to authenticate as (`<namespace>/<user>`, or `keelson/admin`).
    #[arg(id = "auth_user", long = "user", env = "KEELSON_USER", global = true)]
    auth_user: Option<String>,
    /// That user's auth token.
    #[arg(
        id = "auth_token",
        long = "token",
        env = "KEELSON_TOKEN",
        global = true,
        hide_env_values = true
    )]
    auth_token: Option<String>,
}

impl TargetArgs {
    fn target(self) -> Target {
        let credentials = match (self.auth_user, self.auth_token) {
            (Some(u), Some(t)) => Some((u, t)),
            (None, Some(t)) => Some(("keelson/admin".to_string(), t)),
            _ => None,
        };
        Target {
            node: self.node,
            credentials,
            ca: self.ca,
        }
    }
}

/// Anything that ends the command with an error.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Start(#[from] keelson::StartError),
    #[error(transparent)]
    Config(#[from] keelson::config::ConfigError),
    #[error(transparent)]
    Cluster(#[from] keelson::cluster_cli::CliError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().with_current_span(true).with_span_list(false).init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keelson: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result: Result<(), Failure> = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                let node = keelson::start(args.resolve()?).await?;
                let scheme = if node.registry.tls { "https" } else { "http" };
                println!("keelson listening on {scheme}://{}", node.api_addr);
                shutdown_signal().await;
                tracing::info!("shutting down");
                node.shutdown().await;
            }
            Command::Cluster { target, command } => keelson::cluster_cli::run(&target.target(), command).await?,
            Command::Admin { target, command } => keelson::admin_cli::run(&target.target(), command).await?,
            Command::Images { target, command } => keelson::lifecycle_cli::images(&target.target(), command).await?,
            Command::Repo { target, command } => keelson::lifecycle_cli::repo(&target.target(), command).await?,
            Command::Vulndb { target, command } => keelson::vulndb_cli::run(&target.target(), command).await?,
            Command::Cache { target, command } => keelson::region_cli::cache(&target.target(), command).await?,
            Command::Region { target, command } => keelson::region_cli::region(&target.target(), command).await?,
            Command::Replication { target, command } => {
                keelson::region_cli::replication(&target.target(), command).await?
            }
            Command::Retention { target, command } => {
                keelson::lifecycle_cli::retention(&target.target(), command).await?
            }
            Command::Audit { target, args } => keelson::audit_cli::run(&target.target(), args).await?,
            Command::Lb {
                listen,
                backends,
                probe_tls,
                probe_ca,
                probe_ms,
            } => {
                let probe = keelson::lb::Probe {
                    tls: probe_tls || probe_ca.is_some(),
                    ca: probe_ca,
                    every: std::time::Duration::from_millis(probe_ms.max(50)),
                };
                keelson::lb::run(&listen, backends, probe).await?
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keelson: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
