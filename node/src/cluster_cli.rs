//! `keelson cluster …`: a thin client of a node's management API (`/api/v1/cluster/…`).

use clap::Subcommand;
use keelson_raft::ClusterStatus;
use serde_json::json;

pub use crate::http_client::CliError;
use crate::http_client::{say, Target};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make the node the first voter of a new cluster.
    Init,
    /// Add a node: learner first, caught up, then voter.
    Add {
        /// The new node's id.
        id: u64,
        /// The new node's peer address (its --peer-listen).
        peer_addr: String,
        /// The new node's API address (its --listen).
        #[arg(long)]
        api: String,
        #[arg(long, default_value = "default")]
        fault_domain: String,
    },
    /// Remove a node from the cluster.
    Remove { id: u64 },
    /// Members, leader, term, log indexes, lag per member.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(target: &Target, command: ClusterCommand) -> Result<(), CliError> {
    let node = target.node.as_str();
    match command {
        ClusterCommand::Init => {
            let answer = target.call("POST", "/api/v1/cluster/init", None).await?;
            say(&format!("cluster initialised with {node} as its first voter"));
            if let Some(token) = answer["admin_token"].as_str() {
                say(&format!(
                    "cluster administrator: keelson/admin, auth token (shown once): {token}"
                ));
            }
        }
        ClusterCommand::Add {
            id,
            peer_addr,
            api,
            fault_domain,
        } => {
            let spec = json!({ "id": id, "api_addr": api, "peer_addr": peer_addr, "fault_domain": fault_domain });
            target.call("POST", "/api/v1/cluster/members", Some(spec)).await?;
            say(&format!("node {id} added as a voter"));
        }
        ClusterCommand::Remove { id } => {
            let answer = target
                .call("DELETE", &format!("/api/v1/cluster/members/{id}"), None)
                .await?;
            if answer["told"] == true {
                say(&format!("node {id} removed; it was told and has stopped serving"));
            } else {
                say(&format!(
                    "node {id} removed; it could not be told (unreachable): stop it, and wipe its data \
                     directory before adding it again"
                ));
            }
        }
        ClusterCommand::Status { json } => {
            let mut status: ClusterStatus =
                serde_json::from_value(target.call("GET", "/api/v1/cluster/status", None).await?)
                    .map_err(|e| CliError::Decode(e.to_string()))?;
            // Replication lag is known to the leader only: ask it when we asked a follower.
            if status.state != "leader" {
                if let Some(leader) = status
                    .leader
                    .and_then(|l| status.members.iter().find(|m| m.id == l))
                    .map(|m| m.api_addr.clone())
                {
                    if let Ok(v) = target.on(&leader).call("GET", "/api/v1/cluster/status", None).await {
                        if let Ok(s) = serde_json::from_value::<ClusterStatus>(v) {
                            status = s;
                        }
                    }
                }
            }
            if json {
                say(&serde_json::to_string_pretty(&status).map_err(|e| CliError::Decode(e.to_string()))?);
            } else {
                say(render(&status).trim_end());
            }
        }
    }
    Ok(())
}

/// The human table of `cluster status`.
pub fn render(s: &ClusterStatus) -> String {
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let mut out = format!(
        "leader: {}  term: {}  last log: {}  applied: {}  snapshot: {}  purged: {}  (reported by node {}, {})\n",
        opt(s.leader),
        s.term,
        opt(s.last_log_index),
        opt(s.applied_index),
        opt(s.snapshot_index),
        opt(s.purged_index),
        s.node_id,
        s.state
    );
    if let Some(region) = &s.region {
        let home = s.home_region.as_deref().unwrap_or(region);
        let role = if home == region {
            "home".to_string()
        } else {
            format!("identity from {home}")
        };
        out.push_str(&format!("region: {region} ({role})\n"));
    }
    out.push_str(&format!(
        "{:<4} {:<8} {:<22} {:<22} {:<14} {:<6} {}\n",
        "ID", "ROLE", "API", "PEER", "FAULT-DOMAIN", "LAG", "FREE"
    ));
    for m in &s.members {
        let role = if Some(m.id) == s.leader {
            "leader"
        } else if m.voter {
            "voter"
        } else {
            "learner"
        };
        out.push_str(&format!(
            "{:<4} {:<8} {:<22} {:<22} {:<14} {:<6} {}\n",
            m.id,
            role,
            m.api_addr,
            m.peer_addr,
            m.fault_domain,
            opt(m.lag),
            free_space(m.free_bytes, m.capacity_bytes)
        ));
    }
    out.push_str(&format!(
        "blobs: under-replicated: {}  bytes to move: {}  misplaced: {}  (leader's last repair pass)\n",
        opt(s.under_replicated),
        opt(s.bytes_to_move),
        opt(s.blob_jobs.get("repair.misplaced").copied())
    ));
    out
}

/// `12.3/100.0 GiB` (free of capacity), or `-` before the member's first capacity report.
fn free_space(free: Option<u64>, total: Option<u64>) -> String {
    match (free, total) {
        (Some(free), Some(total)) => {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            format!("{:.1}/{:.1} GiB", gib(free), gib(total))
        }
        _ => "-".to_string(),
    }
}
