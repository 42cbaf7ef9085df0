//! `keelson cluster …`: a thin client of a node's management API (`/api/v1/cluster/…`).

use bytes::Bytes;
use clap::Subcommand;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keelson_raft::ClusterStatus;
use serde_json::json;

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

/// A failed management call.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach {0}: {1}")]
    Connect(String, String),
    #[error("{0} answered {1}: {2}")]
    Refused(String, u16, String),
    #[error("unexpected answer: {0}")]
    Decode(String),
}

async fn call(
    node: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, CliError> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let base = if node.starts_with("http://") {
        node.to_string()
    } else {
        format!("http://{node}")
    };
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let req = hyper::Request::builder()
        .method(method)
        .uri(&url)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
        .map_err(|e| CliError::Connect(url.clone(), e.to_string()))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| CliError::Connect(url.clone(), e.to_string()))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| CliError::Connect(url.clone(), e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(CliError::Refused(
            url,
            status.as_u16(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| CliError::Decode(e.to_string()))
}

pub async fn run(node: &str, command: ClusterCommand) -> Result<(), CliError> {
    match command {
        ClusterCommand::Init => {
            call(node, "POST", "/api/v1/cluster/init", None).await?;
            println!("cluster initialised with {node} as its first voter");
        }
        ClusterCommand::Add {
            id,
            peer_addr,
            api,
            fault_domain,
        } => {
            let spec = json!({ "id": id, "api_addr": api, "peer_addr": peer_addr, "fault_domain": fault_domain });
            call(node, "POST", "/api/v1/cluster/members", Some(spec)).await?;
            println!("node {id} added as a voter");
        }
        ClusterCommand::Remove { id } => {
            call(node, "DELETE", &format!("/api/v1/cluster/members/{id}"), None).await?;
            println!("node {id} removed");
        }
        ClusterCommand::Status { json } => {
            let mut status: ClusterStatus =
                serde_json::from_value(call(node, "GET", "/api/v1/cluster/status", None).await?)
                    .map_err(|e| CliError::Decode(e.to_string()))?;
            // Replication lag is known to the leader only: ask it when we asked a follower.
            if status.state != "leader" {
                if let Some(leader) = status
                    .leader
                    .and_then(|l| status.members.iter().find(|m| m.id == l))
                    .map(|m| m.api_addr.clone())
                {
                    if let Ok(v) = call(&leader, "GET", "/api/v1/cluster/status", None).await {
                        if let Ok(s) = serde_json::from_value::<ClusterStatus>(v) {
                            status = s;
                        }
                    }
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).map_err(|e| CliError::Decode(e.to_string()))?
                );
            } else {
                print!("{}", render(&status));
            }
        }
    }
    Ok(())
}

/// The human table of `cluster status`.
pub fn render(s: &ClusterStatus) -> String {
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let mut out = format!(
        "leader: {}  term: {}  last log: {}  applied: {}  (reported by node {}, {})\n",
        opt(s.leader),
        s.term,
        opt(s.last_log_index),
        opt(s.applied_index),
        s.node_id,
        s.state
    );
    out.push_str(&format!(
        "{:<4} {:<8} {:<22} {:<22} {:<14} {}\n",
        "ID", "ROLE", "API", "PEER", "FAULT-DOMAIN", "LAG"
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
            "{:<4} {:<8} {:<22} {:<22} {:<14} {}\n",
            m.id,
            role,
            m.api_addr,
            m.peer_addr,
            m.fault_domain,
            opt(m.lag)
        ));
    }
    out
}
