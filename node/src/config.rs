//! Node configuration, as given on the command line (the defaults run a complete single-node
//! registry under `./keelson-data` on 127.0.0.1:5000).

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Where the catalog, blobs and upload sessions live.
    #[arg(long, env = "KEELSON_DATA_DIR", default_value = "./keelson-data")]
    pub data_dir: PathBuf,
    /// Address of the registry API.
    #[arg(long, env = "KEELSON_LISTEN", default_value = "127.0.0.1:5000")]
    pub listen: String,
    /// This node's id in the cluster.
    #[arg(long, env = "KEELSON_NODE_ID", default_value_t = 1)]
    pub node_id: u64,
    /// Fault-domain label used by blob placement.
    #[arg(long, env = "KEELSON_FAULT_DOMAIN", default_value = "fd1")]
    pub fault_domain: String,
}
