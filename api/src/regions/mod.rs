//! Regions: how this cluster works with the clusters of other regions — identity copied from
//! the home region, images replicated by rules, repositories that cache an upstream — over the other regions' public APIs
//! (`client.rs`). The records (peers, rules, marks, the change queue) are catalog state in
//! `keelson_raft::regions`; the routes are in `handlers/regions.rs`; the timers in the node.

pub mod client;
pub mod identity;
pub mod pull_through;
pub mod replicate;
pub mod status;
