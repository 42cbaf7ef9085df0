//! What the catalog tests share: a single-node catalog opened on a directory, as a node opens it.

use std::time::Duration;

use keelson_raft::{Catalog, CatalogConfig, NodeInfo};

/// Opens (or reopens) a single-node catalog under `dir` and waits until it leads.
pub async fn open(dir: &std::path::Path) -> Catalog {
    let config = CatalogConfig {
        node_id: 1,
        node: NodeInfo::default(),
        dir: dir.to_path_buf(),
        bootstrap_single: true,
        snapshot_every_logs: 20_000,
    };
    // A just-closed node may still be releasing the rocksdb lock in its last tasks.
    let mut attempts = 0;
    let catalog = loop {
        match Catalog::open(config.clone()).await {
            Ok(c) => break c,
            Err(_) if attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("open failed: {e}"),
        }
    };
    catalog.wait_for_leader(Duration::from_secs(10)).await.expect("leader");
    catalog
}
