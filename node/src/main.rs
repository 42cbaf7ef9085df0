//! `keelson`: the command line.

use clap::{Parser, Subcommand};
use keelson::cluster_cli::ClusterCommand;
use keelson::ServeArgs;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "keelson", version, about = "Keelson: a container image registry cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (with no flags: a single-node registry on 127.0.0.1:5000, data in ./keelson-data).
    Serve(ServeArgs),
    /// Manage the cluster through any member's API.
    Cluster {
        /// API address of the node to talk to.
        #[arg(long, env = "KEELSON_NODE", default_value = "127.0.0.1:5000", global = true)]
        node: String,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// A round-robin TCP load balancer (for local clusters and tests).
    Lb {
        #[arg(long)]
        listen: String,
        /// Backend addresses (`host:port`), repeatable.
        #[arg(long = "backend", required = true)]
        backends: Vec<String>,
    },
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
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
                println!("keelson listening on http://{}", node.api_addr);
                shutdown_signal().await;
                tracing::info!("shutting down");
                node.shutdown().await;
            }
            Command::Cluster { node, command } => keelson::cluster_cli::run(&node, command).await?,
            Command::Lb { listen, backends } => keelson::lb::run(&listen, backends).await?,
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
