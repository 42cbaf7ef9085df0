//! `keelson images …`, `keelson repo …` and `keelson retention …`: what a repository holds
//! (images with sizes and pull counts), its settings, and retention policies with their preview,
//! runs and deletion log — thin clients of the management API's lifecycle routes.

use clap::Subcommand;
use serde_json::{json, Value};

use crate::http_client::{say, CliError, Target};

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// List a repository's images, tagged and untagged, with sizes, times and pull counts.
    List {
        repo: String,
        /// pushed, pulled, size or pulls (newest, latest or largest first).
        #[arg(long, default_value = "pushed")]
        sort: String,
        /// Oldest or smallest first.
        #[arg(long)]
        asc: bool,
        #[arg(long, conflicts_with = "untagged")]
        tagged: bool,
        #[arg(long)]
        untagged: bool,
        /// At most this many images.
        #[arg(short = 'n', long, default_value_t = 100)]
        limit: usize,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// One image: layers, config, children of an index, referrers.
    Show {
        /// `<repo>@<digest>` or `<repo>:<tag>`.
        reference: String,
    },
    /// Delete an image by digest, with all its tags.
    Delete {
        /// `<repo>@<digest>` or `<repo>:<tag>` (the image the tag names).
        reference: String,
    },
    /// Remove one tag; the image stays (untagged, if that was its last tag).
    Untag {
        /// `<repo>:<tag>`.
        reference: String,
    },
    /// Sign an image (and each manifest of an index) in cosign's format with a key the cluster
    /// holds (`PUT /api/v1/tenancies/<ns>/signing-keys/<name>` with `generate: true`), so CI
    /// signs without holding a private key. `cosign verify --key <the key's public PEM>` accepts it.
    Sign {
        /// `<repo>@<digest>` or `<repo>:<tag>` (the image the tag names).
        reference: String,
        /// The held key's name.
        #[arg(long)]
        key: String,
    },
    /// An image's vulnerabilities: its packages matched against the imported database.
    Vulns {
        /// `<repo>@<digest>` or `<repo>:<tag>`.
        reference: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// An image's signatures and whether the keys its tenancy trusts verify them.
    Verify {
        /// `<repo>@<digest>` or `<repo>:<tag>`.
        reference: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// The repository's summary: images, tags, stored bytes, last push, pulls and settings.
    Show { repo: String },
    /// Change a repository's description, readme, retention policy or immutable tags.
    Set {
        repo: String,
        #[arg(long)]
        description: Option<String>,
        /// A markdown file to use as the readme.
        #[arg(long)]
        readme_file: Option<std::path::PathBuf>,
        /// A retention policy of the tenancy (`global` for the tenancy's global policy).
        #[arg(long)]
        retention_policy: Option<String>,
        /// `on`, `off`, or `inherit` (the tenancy's default).
        #[arg(long, value_parser = ["on", "off", "inherit"])]
        immutable_tags: Option<String>,
        /// Tags exempt from immutability (names or globs such as `latest`, `dev-*`), repeatable.
        #[arg(long = "exempt")]
        exempt: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// A tenancy's retention policies and the repositories using each.
    List {
        namespace: String,
    },
    /// Create or replace a policy (the name `global` changes the tenancy's global policy).
    Set {
        namespace: String,
        name: String,
        /// Delete images not pulled for this many days (from their push when never pulled).
        #[arg(long)]
        not_pulled_days: Option<u32>,
        /// Delete images untagged for this many days.
        #[arg(long)]
        untagged_days: Option<u32>,
        /// Delete all but the newest K images.
        #[arg(long)]
        keep_newest: Option<u32>,
        /// Tags whose images are never deleted (names or globs), repeatable.
        #[arg(long = "exempt")]
        exempt: Vec<String>,
        /// Images pushed, tagged or pulled this recently are never deleted [default: 24].
        #[arg(long)]
        cooling_hours: Option<u32>,
    },
    Show {
        namespace: String,
        name: String,
    },
    /// Delete a policy; its repositories return to the global policy.
    Delete {
        namespace: String,
        name: String,
    },
    /// Give a repository a policy (`global` for the tenancy's global policy).
    Assign {
        repo: String,
        policy: String,
    },
    /// What a policy would delete now: each image, the rule that matched and the bytes freed.
    /// Give a repository, or `--policy <namespace>/<name>` for every repository using it.
    Preview {
        repo: Option<String>,
        #[arg(long)]
        policy: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run a repository's policy now (the leader also runs every policy hourly).
    Run {
        repo: String,
    },
    /// What policies deleted in a tenancy (policy, rule, image, tags, bytes, time).
    Log {
        namespace: String,
        #[arg(long, default_value_t = 0)]
        skip: usize,
        #[arg(short = 'n', long, default_value_t = 100)]
        limit: usize,
    },
}

/// Milliseconds since the epoch as an RFC 3339 time (`-` when absent).
pub(crate) fn time(ms: &Value) -> String {
    match ms.as_u64() {
        None => "-".into(),
        Some(ms) => {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            humantime::format_rfc3339_seconds(t).to_string()
        }
    }
}

/// Bytes in the largest binary unit that keeps a number ≥ 1.
fn bytes(v: &Value) -> String {
    let Some(n) = v.as_u64() else { return "-".into() };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

fn strings(v: &Value) -> String {
    let list: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

fn pretty(value: &Value) {
    say(&serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// Splits `<repo>@<digest>` or `<repo>:<tag>`.
fn split_reference(reference: &str) -> Result<(String, Reference), CliError> {
    if let Some((repo, digest)) = reference.split_once('@') {
        return Ok((repo.to_string(), Reference::Digest(digest.to_string())));
    }
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => Ok((repo.to_string(), Reference::Tag(tag.to_string()))),
        _ => Err(CliError::Decode(format!(
            "{reference}: expected <repo>@<digest> or <repo>:<tag>"
        ))),
    }
}

enum Reference {
    Digest(String),
    Tag(String),
}

/// The digest a reference names (a tag is looked up among the repository's images).
async fn digest_of(target: &Target, repo: &str, reference: Reference) -> Result<String, CliError> {
    let tag = match reference {
        Reference::Digest(d) => return Ok(d),
        Reference::Tag(t) => t,
    };
    let list = target
        .call("GET", &format!("/api/v1/repos/{repo}/images?tagged=true&n=10000"), None)
        .await?;
    list["images"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["tags"].as_array().is_some_and(|t| t.iter().any(|x| x == &json!(tag))))
        .and_then(|i| i["digest"].as_str().map(str::to_string))
        .ok_or_else(|| CliError::Decode(format!("{repo}:{tag}: no such tag")))
}

pub async fn images(target: &Target, command: ImagesCommand) -> Result<(), CliError> {
    match command {
        ImagesCommand::List {
            repo,
            sort,
            asc,
            tagged,
            untagged,
            limit,
            json,
        } => {
            let mut query = format!("sort={sort}&n={limit}");
            if asc {
                query.push_str("&order=asc");
            }
            if tagged || untagged {
                query.push_str(&format!("&tagged={tagged}"));
            }
            let answer = target
                .call("GET", &format!("/api/v1/repos/{repo}/images?{query}"), None)
                .await?;
            if json {
                pretty(&answer);
                return Ok(());
            }
            say(&format!(
                "{:<14} {:<24} {:>10} {:<21} {:<21} {:>6} {:<16} {:>4}",
                "DIGEST", "TAGS", "SIZE", "PUSHED", "LAST PULLED", "PULLS", "PLATFORMS", "REFS"
            ));
            for i in answer["images"].as_array().into_iter().flatten() {
                say(&format!(
                    "{:<14} {:<24} {:>10} {:<21} {:<21} {:>6} {:<16} {:>4}",
                    short(i["digest"].as_str().unwrap_or("")),
                    strings(&i["tags"]),
                    bytes(&i["size"]),
                    time(&i["last_pushed_ms"]),
                    time(&i["last_pulled_ms"]),
                    i["pulls"],
                    strings(&i["platforms"]),
                    i["referrers"],
                ));
            }
            say(&format!("{} images", answer["total"]));
        }
        ImagesCommand::Show { reference } => {
            let (repo, r) = split_reference(&reference)?;
            let digest = digest_of(target, &repo, r).await?;
            pretty(
                &target
                    .call("GET", &format!("/api/v1/repos/{repo}/images/{digest}"), None)
                    .await?,
            );
        }
        ImagesCommand::Delete { reference } => {
            let (repo, r) = split_reference(&reference)?;
            let digest = digest_of(target, &repo, r).await?;
            pretty(
                &target
                    .call("DELETE", &format!("/api/v1/repos/{repo}/images/{digest}"), None)
                    .await?,
            );
        }
        ImagesCommand::Sign { reference, key } => {
            let (repo, r) = split_reference(&reference)?;
            let digest = digest_of(target, &repo, r).await?;
            let answer = target
                .call(
                    "POST",
                    &format!("/api/v1/repos/{repo}/images/{digest}/sign"),
                    Some(json!({ "key": key })),
                )
                .await?;
            for signed in answer["signed"].as_array().into_iter().flatten() {
                say(&format!(
                    "signed {repo}@{} with {key}: {} ({})",
                    signed["digest"].as_str().unwrap_or(""),
                    signed["tag"].as_str().unwrap_or(""),
                    signed["signature_manifest"].as_str().unwrap_or("")
                ));
            }
        }
        ImagesCommand::Vulns { reference, json } => {
            let (repo, r) = split_reference(&reference)?;
            let digest = digest_of(target, &repo, r).await?;
            let report = target
                .call(
                    "GET",
                    &format!("/api/v1/repos/{repo}/images/{digest}/vulnerabilities"),
                    None,
                )
                .await?;
            if json {
                pretty(&report);
                return Ok(());
            }
            say(&format!(
                "{repo}@{digest}: {} ({} packages, database generation {})",
                report["state"].as_str().unwrap_or(""),
                report["packages"],
                report["database_generation"]
            ));
            say(&format!(
                "{:<20} {:<9} {:<28} {:<22} {}",
                "ID", "SEVERITY", "PACKAGE", "INSTALLED", "FIXED IN"
            ));
            for f in report["findings"].as_array().into_iter().flatten() {
                say(&format!(
                    "{:<20} {:<9} {:<28} {:<22} {}",
                    f["id"].as_str().unwrap_or(""),
                    f["severity"].as_str().unwrap_or(""),
                    f["package"].as_str().unwrap_or(""),
                    f["installed"].as_str().unwrap_or(""),
                    f["fixed"].as_str().unwrap_or("-")
                ));
            }
        }
        ImagesCommand::Verify { reference } => {
            let (repo, r) = split_reference(&reference)?;
            let digest = digest_of(target, &repo, r).await?;
            let image = target
                .call("GET", &format!("/api/v1/repos/{repo}/images/{digest}"), None)
                .await?;
            say(&format!(
                "{repo}@{digest}: {}",
                image["signature"].as_str().unwrap_or("unknown")
            ));
            for s in image["signatures"].as_array().into_iter().flatten() {
                let verdict = match s["verified_by"].as_array().filter(|v| !v.is_empty()) {
                    Some(keys) => format!("verified by {}", strings(&json!(keys))),
                    None => s["problem"].as_str().unwrap_or("not verified").to_string(),
                };
                say(&format!(
                    "  {:<9} {}  {verdict}",
                    s["format"].as_str().unwrap_or(""),
                    short(s["manifest"].as_str().unwrap_or(""))
                ));
            }
            if image["signature"] != json!("signed") {
                return Err(CliError::Check(format!("{repo}@{digest} has no valid signature")));
            }
        }
        ImagesCommand::Untag { reference } => {
            let (repo, Reference::Tag(tag)) = split_reference(&reference)? else {
                return Err(CliError::Decode("untag takes <repo>:<tag>".into()));
            };
            pretty(
                &target
                    .call("DELETE", &format!("/api/v1/repos/{repo}/tags/{tag}"), None)
                    .await?,
            );
        }
    }
    Ok(())
}

pub async fn repo(target: &Target, command: RepoCommand) -> Result<(), CliError> {
    match command {
        RepoCommand::Show { repo } => {
            let r = target.call("GET", &format!("/api/v1/repos/{repo}"), None).await?;
            say(&format!("repository:   {repo}"));
            say(&format!(
                "visibility:   {}",
                if r["public"] == json!(true) {
                    "public"
                } else {
                    "private"
                }
            ));
            say(&format!(
                "compartment:  {}",
                r["compartment"].as_str().unwrap_or("(root)")
            ));
            say(&format!("images:       {}", r["images"]));
            say(&format!("tags:         {}", r["tags"]));
            say(&format!("stored:       {}", bytes(&r["stored_bytes"])));
            say(&format!("last push:    {}", time(&r["last_push_ms"])));
            say(&format!(
                "pulls:        {} (last {})",
                r["pulls"],
                time(&r["last_pull_ms"])
            ));
            say(&format!(
                "retention:    {}",
                r["retention_policy"].as_str().unwrap_or("-")
            ));
            let im = &r["immutable_tags"];
            say(&format!(
                "immutable:    {} (exempt: {}; from the {})",
                if im["enabled"] == json!(true) { "on" } else { "off" },
                strings(&im["exempt"]),
                im["source"].as_str().unwrap_or("-")
            ));
            say(&format!("redundancy:   {}", r["redundancy"].as_str().unwrap_or("-")));
            if let Some(d) = r["description"].as_str().filter(|d| !d.is_empty()) {
                say(&format!("description:  {d}"));
            }
        }
        RepoCommand::Set {
            repo,
            description,
            readme_file,
            retention_policy,
            immutable_tags,
            exempt,
        } => {
            let mut body = json!({});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if let Some(path) = readme_file {
                let text =
                    std::fs::read_to_string(&path).map_err(|e| CliError::Decode(format!("{}: {e}", path.display())))?;
                body["readme"] = json!(text);
            }
            if let Some(p) = retention_policy {
                body["retention_policy"] = json!(p);
            }
            if let Some(mode) = immutable_tags {
                body["immutable_tags"] = json!({
                    "enabled": mode == "on", "exempt": exempt, "inherit": mode == "inherit",
                });
            }
            pretty(
                &target
                    .call("PATCH", &format!("/api/v1/repos/{repo}"), Some(body))
                    .await?,
            );
        }
    }
    Ok(())
}

fn print_preview(answer: &Value) {
    say(&format!(
        "{:<28} {:<14} {:<24} {:<12} {:>10} {:>5}",
        "REPOSITORY", "DIGEST", "TAGS", "RULE", "FREES", "WITH"
    ));
    for i in answer["images"].as_array().into_iter().flatten() {
        say(&format!(
            "{:<28} {:<14} {:<24} {:<12} {:>10} {:>5}",
            i["repo"].as_str().unwrap_or(""),
            short(i["digest"].as_str().unwrap_or("")),
            strings(&i["tags"]),
            i["rule"].as_str().unwrap_or(""),
            bytes(&i["bytes_freed"]),
            i["with"].as_array().map_or(0, Vec::len),
        ));
    }
    let count = answer["images"].as_array().map_or(0, Vec::len);
    say(&format!(
        "{count} images would go under policy {}, freeing {}",
        answer["policy"].as_str().unwrap_or("-"),
        bytes(&answer["bytes_freed"])
    ));
}

pub async fn retention(target: &Target, command: RetentionCommand) -> Result<(), CliError> {
    let t = |ns: &str, rest: &str| format!("/api/v1/tenancies/{ns}{rest}");
    match command {
        RetentionCommand::List { namespace } => {
            let answer = target.call("GET", &t(&namespace, "/retention-policies"), None).await?;
            say(&format!(
                "{:<16} {:>11} {:>9} {:>6} {:<20} {:>8}  REPOSITORIES",
                "POLICY", "NOT-PULLED", "UNTAGGED", "NEWEST", "EXEMPT", "COOLING"
            ));
            for p in answer["policies"].as_array().into_iter().flatten() {
                let days = |v: &Value| v.as_u64().map_or("-".into(), |d| format!("{d}d"));
                say(&format!(
                    "{:<16} {:>11} {:>9} {:>6} {:<20} {:>7}h  {}",
                    p["name"].as_str().unwrap_or(""),
                    days(&p["not_pulled_days"]),
                    days(&p["untagged_days"]),
                    p["keep_newest"].as_u64().map_or("-".into(), |k| k.to_string()),
                    strings(&p["exempt_tags"]),
                    p["cooling_hours"],
                    strings(&p["repos"]),
                ));
            }
        }
        RetentionCommand::Set {
            namespace,
            name,
            not_pulled_days,
            untagged_days,
            keep_newest,
            exempt,
            cooling_hours,
        } => {
            let body = json!({
                "not_pulled_days": not_pulled_days, "untagged_days": untagged_days,
                "keep_newest": keep_newest, "exempt_tags": exempt, "cooling_hours": cooling_hours,
            });
            pretty(
                &target
                    .call(
                        "PUT",
                        &t(&namespace, &format!("/retention-policies/{name}")),
                        Some(body),
                    )
                    .await?,
            );
        }
        RetentionCommand::Show { namespace, name } => pretty(
            &target
                .call("GET", &t(&namespace, &format!("/retention-policies/{name}")), None)
                .await?,
        ),
        RetentionCommand::Delete { namespace, name } => pretty(
            &target
                .call("DELETE", &t(&namespace, &format!("/retention-policies/{name}")), None)
                .await?,
        ),
        RetentionCommand::Assign { repo, policy } => pretty(
            &target
                .call(
                    "PATCH",
                    &format!("/api/v1/repos/{repo}"),
                    Some(json!({ "retention_policy": policy })),
                )
                .await?,
        ),
        RetentionCommand::Preview { repo, policy, json } => {
            let path = match (repo, policy) {
                (Some(repo), None) => format!("/api/v1/repos/{repo}/retention/preview"),
                (None, Some(policy)) => {
                    let (ns, name) = policy
                        .split_once('/')
                        .ok_or_else(|| CliError::Decode("--policy takes <namespace>/<name>".into()))?;
                    t(ns, &format!("/retention-policies/{name}/preview"))
                }
                _ => {
                    return Err(CliError::Decode(
                        "give a repository or --policy <namespace>/<name>".into(),
                    ))
                }
            };
            let answer = target.call("GET", &path, None).await?;
            if json {
                pretty(&answer);
            } else {
                print_preview(&answer);
            }
        }
        RetentionCommand::Run { repo } => {
            let answer = target
                .call("POST", &format!("/api/v1/repos/{repo}/retention/run"), None)
                .await?;
            print_preview(&answer);
            say(&format!(
                "deleted {}, kept because they changed meanwhile {}",
                answer["deleted"].as_array().map_or(0, Vec::len),
                answer["kept_changed_meanwhile"].as_array().map_or(0, Vec::len)
            ));
        }
        RetentionCommand::Log { namespace, skip, limit } => {
            let answer = target
                .call(
                    "GET",
                    &t(&namespace, &format!("/retention-deletions?skip={skip}&n={limit}")),
                    None,
                )
                .await?;
            say(&format!(
                "{:<21} {:<28} {:<14} {:<24} {:<12} {:<12} {:>10}",
                "DELETED", "REPOSITORY", "DIGEST", "TAGS", "POLICY", "RULE", "FREED"
            ));
            for d in answer["deletions"].as_array().into_iter().flatten() {
                say(&format!(
                    "{:<21} {:<28} {:<14} {:<24} {:<12} {:<12} {:>10}",
                    time(&d["deleted_ms"]),
                    d["repo"].as_str().unwrap_or(""),
                    short(d["digest"].as_str().unwrap_or("")),
                    strings(&d["tags"]),
                    d["policy"].as_str().unwrap_or(""),
                    d["rule"].as_str().unwrap_or(""),
                    bytes(&d["bytes_freed"]),
                ));
            }
        }
    }
    Ok(())
}
