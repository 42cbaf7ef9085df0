//! `keelson admin …`: tenancies, compartments, users, groups, policies, auth tokens and
//! repositories, through any node's management API (`/api/v1/…`). Credentials come from
//! `--user`/`--token` or `KEELSON_USER`/`KEELSON_TOKEN` (the cluster administrator is
//! `keelson/admin`; tenancy administrators manage their own tenancy).

use clap::Subcommand;
use serde_json::{json, Value};

use crate::http_client::{CliError, Target};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a tenancy (its namespace is the first path segment of its repositories).
    TenancyCreate {
        namespace: String,
    },
    /// Show a tenancy's compartments, users, groups and policies.
    TenancyShow {
        namespace: String,
    },
    /// Create a compartment (under the root unless --parent).
    CompartmentCreate {
        namespace: String,
        name: String,
        #[arg(long)]
        parent: Option<String>,
    },
    UserCreate {
        namespace: String,
        user: String,
    },
    UserDelete {
        namespace: String,
        user: String,
    },
    GroupCreate {
        namespace: String,
        group: String,
    },
    GroupAdd {
        namespace: String,
        group: String,
        user: String,
    },
    GroupRemove {
        namespace: String,
        group: String,
        user: String,
    },
    /// Create or replace a policy: one or more statements such as
    /// "allow group devs to manage repos in compartment team".
    PolicySet {
        namespace: String,
        name: String,
        #[arg(required = true)]
        statements: Vec<String>,
        #[arg(long)]
        compartment: Option<String>,
    },
    PolicyDelete {
        namespace: String,
        name: String,
    },
    /// Generate an auth token (shown once) — the password for `docker login`.
    TokenCreate {
        namespace: String,
        user: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List a user's tokens (ids, descriptions, creation and last use; never the secrets).
    TokenList {
        namespace: String,
        user: String,
    },
    TokenRevoke {
        namespace: String,
        user: String,
        id: String,
    },
    /// Create an empty repository (pushing also creates one, private, in the root compartment).
    RepoCreate {
        name: String,
        #[arg(long)]
        public: bool,
        #[arg(long)]
        compartment: Option<String>,
        /// Its redundancy policy, `replicas=N` or `rs=k+m` [default: the cluster's].
        #[arg(long)]
        redundancy: Option<String>,
    },
    /// Set how a repository's blobs are kept: `replicas=N`, `rs=k+m` (e.g. rs=4+2; blobs under
    /// 1 MiB stay replicated), or `default` for the cluster's policy. Applies to blobs pushed
    /// from now on; a blob already stored keeps its layout.
    RepoRedundancy {
        name: String,
        policy: String,
    },
    /// Show (without POLICY) or set the cluster's default redundancy policy.
    Redundancy {
        policy: Option<String>,
    },
    RepoShow {
        name: String,
    },
    /// Make a repository public (anonymous pulls) or private again.
    RepoVisibility {
        name: String,
        #[arg(value_parser = ["public", "private"])]
        visibility: String,
    },
    /// Move a repository to another compartment ("" for the root).
    RepoMove {
        name: String,
        compartment: String,
    },
    RepoDelete {
        name: String,
    },
    /// Start signing registry tokens with a new key (tokens already issued stay valid).
    RotateSigningKey,
    /// Show a tenancy's limits and usage, or set them (cluster administrator): repositories
    /// [default 500], images per repository [default 100000], stored bytes [default unlimited].
    Limits {
        namespace: String,
        #[arg(long)]
        max_repos: Option<u64>,
        #[arg(long)]
        max_images_per_repo: Option<u64>,
        /// A number of bytes, or `unlimited`.
        #[arg(long)]
        max_stored_bytes: Option<String>,
        /// Requests per second each user of the tenancy may make on one node, or `default`
        /// (the node's --rate-limit-per-user).
        #[arg(long)]
        requests_per_second: Option<String>,
    },
    /// A tenancy's repositories with their images, sizes and pulls, and its usage and limits.
    TenancySummary {
        namespace: String,
    },
    /// The tenancy's default for immutable tags (repositories may set their own).
    ImmutableDefault {
        namespace: String,
        #[arg(value_parser = ["on", "off", "unset"])]
        mode: String,
        /// Tags exempt from immutability (names or globs such as `latest`), repeatable.
        #[arg(long = "exempt")]
        exempt: Vec<String>,
    },
}

fn show(value: &Value) {
    crate::http_client::say(&serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

pub async fn run(target: &Target, command: AdminCommand) -> Result<(), CliError> {
    use AdminCommand::*;
    let t = |ns: &str, rest: &str| format!("/api/v1/tenancies/{ns}{rest}");
    let answer = match command {
        TenancyCreate { namespace } => {
            target
                .call("POST", "/api/v1/tenancies", Some(json!({ "namespace": namespace })))
                .await?
        }
        TenancyShow { namespace } => target.call("GET", &t(&namespace, ""), None).await?,
        CompartmentCreate {
            namespace,
            name,
            parent,
        } => {
            target
                .call(
                    "POST",
                    &t(&namespace, "/compartments"),
                    Some(json!({ "name": name, "parent": parent })),
                )
                .await?
        }
        UserCreate { namespace, user } => {
            target
                .call("POST", &t(&namespace, "/users"), Some(json!({ "name": user })))
                .await?
        }
        UserDelete { namespace, user } => {
            target
                .call("DELETE", &t(&namespace, &format!("/users/{user}")), None)
                .await?
        }
        GroupCreate { namespace, group } => {
            target
                .call("POST", &t(&namespace, "/groups"), Some(json!({ "name": group })))
                .await?
        }
        GroupAdd { namespace, group, user } => {
            target
                .call("PUT", &t(&namespace, &format!("/groups/{group}/members/{user}")), None)
                .await?
        }
        GroupRemove { namespace, group, user } => {
            target
                .call(
                    "DELETE",
                    &t(&namespace, &format!("/groups/{group}/members/{user}")),
                    None,
                )
                .await?
        }
        PolicySet {
            namespace,
            name,
            statements,
            compartment,
        } => {
            let body = json!({ "statements": statements, "compartment": compartment });
            target
                .call("PUT", &t(&namespace, &format!("/policies/{name}")), Some(body))
                .await?
        }
        PolicyDelete { namespace, name } => {
            target
                .call("DELETE", &t(&namespace, &format!("/policies/{name}")), None)
                .await?
        }
        TokenCreate {
            namespace,
            user,
            description,
        } => {
            let body = json!({ "description": description });
            target
                .call("POST", &t(&namespace, &format!("/users/{user}/tokens")), Some(body))
                .await?
        }
        TokenList { namespace, user } => {
            target
                .call("GET", &t(&namespace, &format!("/users/{user}/tokens")), None)
                .await?
        }
        TokenRevoke { namespace, user, id } => {
            target
                .call("DELETE", &t(&namespace, &format!("/users/{user}/tokens/{id}")), None)
                .await?
        }
        RepoCreate {
            name,
            public,
            compartment,
            redundancy,
        } => {
            let body = json!({ "name": name, "public": public, "compartment": compartment, "redundancy": redundancy });
            target.call("POST", "/api/v1/repos", Some(body)).await?
        }
        RepoRedundancy { name, policy } => {
            target
                .call(
                    "PATCH",
                    &format!("/api/v1/repos/{name}"),
                    Some(json!({ "redundancy": policy })),
                )
                .await?
        }
        Redundancy { policy: None } => target.call("GET", "/api/v1/cluster/redundancy", None).await?,
        Redundancy { policy: Some(policy) } => {
            target
                .call(
                    "PUT",
                    "/api/v1/cluster/redundancy",
                    Some(json!({ "redundancy": policy })),
                )
                .await?
        }
        RepoShow { name } => target.call("GET", &format!("/api/v1/repos/{name}"), None).await?,
        RepoVisibility { name, visibility } => {
            let body = json!({ "public": visibility == "public" });
            target
                .call("PATCH", &format!("/api/v1/repos/{name}"), Some(body))
                .await?
        }
        RepoMove { name, compartment } => {
            target
                .call(
                    "PATCH",
                    &format!("/api/v1/repos/{name}"),
                    Some(json!({ "compartment": compartment })),
                )
                .await?
        }
        RepoDelete { name } => target.call("DELETE", &format!("/api/v1/repos/{name}"), None).await?,
        RotateSigningKey => target.call("POST", "/api/v1/signing-keys/rotate", None).await?,
        Limits {
            namespace,
            max_repos,
            max_images_per_repo,
            max_stored_bytes,
            requests_per_second,
        } => {
            if max_repos.is_none()
                && max_images_per_repo.is_none()
                && max_stored_bytes.is_none()
                && requests_per_second.is_none()
            {
                target.call("GET", &t(&namespace, "/limits"), None).await?
            } else {
                let mut body = json!({ "max_repos": max_repos, "max_images_per_repo": max_images_per_repo });
                set_optional_number(&mut body, "max_stored_bytes", max_stored_bytes.as_deref(), "unlimited")?;
                set_optional_number(
                    &mut body,
                    "requests_per_second",
                    requests_per_second.as_deref(),
                    "default",
                )?;
                target.call("PUT", &t(&namespace, "/limits"), Some(body)).await?
            }
        }
        TenancySummary { namespace } => target.call("GET", &t(&namespace, "/summary"), None).await?,
        ImmutableDefault {
            namespace,
            mode,
            exempt,
        } => {
            let body = json!({ "enabled": mode == "on", "exempt": exempt, "inherit": mode == "unset" });
            target
                .call("PUT", &t(&namespace, "/immutable-tags"), Some(body))
                .await?
        }
    };
    show(&answer);
    Ok(())
}

/// Puts `--<key> N` into `body[key]` as a number, or as `null` when the flag says `unset` (the
/// word that removes the limit); an absent flag leaves `body` alone.
fn set_optional_number(body: &mut Value, key: &str, flag: Option<&str>, unset: &str) -> Result<(), CliError> {
    match flag {
        None => {}
        Some(word) if word == unset => body[key] = Value::Null,
        Some(n) => {
            let n: u64 = n
                .parse()
                .map_err(|_| CliError::Decode(format!("--{} {n}: a number or {unset}", key.replace('_', "-"))))?;
            body[key] = json!(n);
        }
    }
    Ok(())
}
