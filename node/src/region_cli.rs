//! `keelson region …`, `keelson replication …` and `keelson cache …`: this cluster's region
//! and home, its peer regions, replication rules and their status, and pull-through caches —
//! thin clients of `/api/v1/regions`, `/api/v1/replication` and `/api/v1/pull-through`.

use clap::Subcommand;
use serde_json::{json, Value};

use crate::http_client::{say, CliError, Target};

#[derive(Debug, Subcommand)]
pub enum RegionCommand {
    /// This cluster's region, its home region and its peers.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Name this cluster's region and the region identity is managed in (default: this one).
    Set {
        name: String,
        #[arg(long)]
        home: Option<String>,
    },
    /// Add or change a peer region: its API URL and who this cluster is there.
    AddPeer {
        name: String,
        #[arg(long)]
        url: String,
        /// `<namespace>/<user>` in the peer (identity is the same in every region).
        #[arg(long)]
        peer_user: String,
        /// A file holding that user's auth token.
        #[arg(long)]
        token_file: std::path::PathBuf,
        /// The CA that signed the peer's API certificate (PEM), when not a public one.
        #[arg(long)]
        peer_ca: Option<std::path::PathBuf>,
    },
    RemovePeer {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReplicationCommand {
    /// Replicate a tenancy's images matching the patterns from this region to others.
    AddRule {
        namespace: String,
        /// Target regions, repeatable.
        #[arg(long = "to", required = true)]
        targets: Vec<String>,
        /// Glob over repository names inside the namespace.
        #[arg(long, default_value = "*")]
        repos: String,
        /// Glob over tags.
        #[arg(long, default_value = "*")]
        tags: String,
        /// Remove tags in the targets when they are removed here.
        #[arg(long)]
        deletes: bool,
        /// Throttle blob bytes sent under this rule.
        #[arg(long)]
        bytes_per_second: Option<u64>,
    },
    Rules {
        #[arg(long)]
        namespace: Option<String>,
    },
    DeleteRule {
        id: String,
    },
    /// Lag, pending images and bytes and the last error per rule and target.
    Status {
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Make `<namespace>/<prefix>/…` a cache of an upstream registry.
    Add {
        namespace: String,
        prefix: String,
        /// The upstream's base URL, e.g. https://registry-1.docker.io.
        #[arg(long)]
        upstream: String,
        /// Path prepended upstream (e.g. `library` for Docker Hub's official images).
        #[arg(long, default_value = "")]
        upstream_prefix: String,
        #[arg(long)]
        upstream_user: Option<String>,
        /// A file holding the upstream password or token (kept encrypted when the cluster
        /// encrypts at rest).
        #[arg(long)]
        upstream_password_file: Option<std::path::PathBuf>,
        #[arg(long)]
        upstream_ca: Option<std::path::PathBuf>,
        /// Seconds a cached tag is served before the upstream is asked again.
        #[arg(long, default_value_t = 3600)]
        ttl_seconds: u64,
    },
    List {
        namespace: String,
    },
    Remove {
        namespace: String,
        prefix: String,
    },
}

fn read_file(path: &std::path::Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::Decode(format!("reading {}: {e}", path.display())))
}

pub async fn region(target: &Target, command: RegionCommand) -> Result<(), CliError> {
    match command {
        RegionCommand::Show { json } => {
            let answer = target.call("GET", "/api/v1/regions", None).await?;
            if json {
                say(&answer.to_string());
                return Ok(());
            }
            say(&format!(
                "region {}  home {}",
                answer["name"].as_str().unwrap_or("(not set)"),
                answer["home"].as_str().unwrap_or("(this one)")
            ));
            for p in answer["peers"].as_array().into_iter().flatten() {
                say(&format!(
                    "peer {:<12} {}  as {}",
                    p["name"].as_str().unwrap_or(""),
                    p["url"].as_str().unwrap_or(""),
                    p["username"].as_str().unwrap_or("")
                ));
            }
        }
        RegionCommand::Set { name, home } => {
            let answer = target
                .call(
                    "PUT",
                    "/api/v1/regions/self",
                    Some(json!({ "name": name, "home": home })),
                )
                .await?;
            say(&format!(
                "region {}  home {}",
                answer["name"].as_str().unwrap_or(""),
                answer["home"].as_str().unwrap_or("")
            ));
        }
        RegionCommand::AddPeer {
            name,
            url,
            peer_user,
            token_file,
            peer_ca,
        } => {
            let token = read_file(&token_file)?.trim().to_string();
            let ca_pem = peer_ca.as_deref().map(read_file).transpose()?;
            target
                .call(
                    "PUT",
                    &format!("/api/v1/regions/peers/{name}"),
                    Some(json!({ "url": url, "username": peer_user, "token": token, "ca_pem": ca_pem })),
                )
                .await?;
            say(&format!("peer {name} at {url}"));
        }
        RegionCommand::RemovePeer { name } => {
            target
                .call("DELETE", &format!("/api/v1/regions/peers/{name}"), None)
                .await?;
            say(&format!("removed peer {name}"));
        }
    }
    Ok(())
}

pub async fn replication(target: &Target, command: ReplicationCommand) -> Result<(), CliError> {
    let query = |ns: &Option<String>| ns.as_ref().map(|n| format!("?namespace={n}")).unwrap_or_default();
    match command {
        ReplicationCommand::AddRule {
            namespace,
            targets,
            repos,
            tags,
            deletes,
            bytes_per_second,
        } => {
            let answer = target
                .call(
                    "POST",
                    "/api/v1/replication/rules",
                    Some(json!({
                        "namespace": namespace, "targets": targets, "repos": repos, "tags": tags,
                        "deletes": deletes, "bytes_per_second": bytes_per_second,
                    })),
                )
                .await?;
            say(&format!("rule {}", answer["id"].as_str().unwrap_or("")));
        }
        ReplicationCommand::Rules { namespace } => {
            let answer = target
                .call("GET", &format!("/api/v1/replication/rules{}", query(&namespace)), None)
                .await?;
            say(&format!(
                "{:<14} {:<12} {:<16} {:<10} {:<16} DELETES",
                "RULE", "NAMESPACE", "REPOS", "TAGS", "TARGETS"
            ));
            for r in answer["rules"].as_array().into_iter().flatten() {
                let targets: Vec<&str> = r["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                say(&format!(
                    "{:<14} {:<12} {:<16} {:<10} {:<16} {}",
                    r["id"].as_str().unwrap_or(""),
                    r["namespace"].as_str().unwrap_or(""),
                    r["repos"].as_str().unwrap_or(""),
                    r["tags"].as_str().unwrap_or(""),
                    targets.join(","),
                    r["deletes"]
                ));
            }
        }
        ReplicationCommand::DeleteRule { id } => {
            target
                .call("DELETE", &format!("/api/v1/replication/rules/{id}"), None)
                .await?;
            say(&format!("removed rule {id}"));
        }
        ReplicationCommand::Status { namespace, json } => {
            let answer = target
                .call("GET", &format!("/api/v1/replication/status{}", query(&namespace)), None)
                .await?;
            if json {
                say(&answer.to_string());
                return Ok(());
            }
            say(&format!(
                "{:<14} {:<8} {:>8} {:>14} {:>10} {:>14}  LAST ERROR",
                "RULE", "TARGET", "PENDING", "PENDING BYTES", "LAG", "BYTES SENT"
            ));
            for t in answer["targets"].as_array().into_iter().flatten() {
                say(&format!(
                    "{:<14} {:<8} {:>8} {:>14} {:>9.1}s {:>14}  {}",
                    t["rule"].as_str().unwrap_or(""),
                    t["target"].as_str().unwrap_or(""),
                    t["pending_images"].as_u64().unwrap_or(0),
                    t["pending_bytes"].as_u64().unwrap_or(0),
                    t["lag_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
                    t["bytes_sent"].as_u64().unwrap_or(0),
                    t["last_error"].as_str().unwrap_or("-")
                ));
            }
        }
    }
    Ok(())
}

pub async fn cache(target: &Target, command: CacheCommand) -> Result<(), CliError> {
    match command {
        CacheCommand::Add {
            namespace,
            prefix,
            upstream,
            upstream_prefix,
            upstream_user,
            upstream_password_file,
            upstream_ca,
            ttl_seconds,
        } => {
            let password = upstream_password_file
                .as_deref()
                .map(read_file)
                .transpose()?
                .map(|p| p.trim().to_string());
            let ca_pem = upstream_ca.as_deref().map(read_file).transpose()?;
            target
                .call(
                    "POST",
                    "/api/v1/pull-through",
                    Some(json!({
                        "namespace": namespace, "prefix": prefix, "upstream": upstream,
                        "upstream_prefix": upstream_prefix, "username": upstream_user,
                        "password": password, "ca_pem": ca_pem, "ttl_seconds": ttl_seconds,
                    })),
                )
                .await?;
            say(&format!("{namespace}/{prefix}/… caches {upstream}"));
        }
        CacheCommand::List { namespace } => {
            let answer = target
                .call("GET", &format!("/api/v1/pull-through?namespace={namespace}"), None)
                .await?;
            say(&format!("{:<24} {:<40} {:>8}", "PREFIX", "UPSTREAM", "TTL"));
            for c in answer["caches"].as_array().into_iter().flatten() {
                say(&format!(
                    "{:<24} {:<40} {:>7}s",
                    format!(
                        "{}/{}",
                        c["namespace"].as_str().unwrap_or(""),
                        c["prefix"].as_str().unwrap_or("")
                    ),
                    c["upstream"].as_str().unwrap_or(""),
                    c["ttl_seconds"].as_u64().unwrap_or(0)
                ));
            }
        }
        CacheCommand::Remove { namespace, prefix } => {
            target
                .call(
                    "DELETE",
                    &format!("/api/v1/pull-through?namespace={namespace}&prefix={prefix}"),
                    None,
                )
                .await?;
            say(&format!("removed {namespace}/{prefix}"));
        }
    }
    Ok(())
}
