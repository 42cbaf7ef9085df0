//! `keelson vulndb`: imports an offline OSV export (a directory of `*.json` files, searched
//! recursively, or a `.zip` as osv.dev publishes per ecosystem) into the cluster's
//! vulnerability database, in batches under a new generation that is activated only once every
//! batch is in; then prunes the previous generation. Registries often run without internet
//! access, so nothing here is fetched.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use keelson_raft::scanning::VulnPackage;
use serde_json::json;

use crate::http_client::{CliError, Target};

/// Bytes of JSON one batch carries at most (the API takes 1 MiB bodies).
const BATCH_BYTES: usize = 768 * 1024;
/// Largest OSV file read.
const MAX_FILE: u64 = 16 << 20;

#[derive(Debug, Subcommand)]
pub enum VulndbCommand {
    /// Import OSV advisories from a directory or a zip file, replacing the active database.
    Import { path: PathBuf },
    /// The active database: generation, advisories, packages, when imported.
    Show,
}

pub async fn run(target: &Target, command: VulndbCommand) -> Result<(), CliError> {
    match command {
        VulndbCommand::Show => {
            let info = target.call("GET", "/api/v1/vulndb", None).await?;
            println!("{}", serde_json::to_string_pretty(&info).unwrap_or_default());
            Ok(())
        }
        VulndbCommand::Import { path } => import(target, &path).await,
    }
}

/// Every OSV document under `path`.
fn documents(path: &Path) -> Result<Vec<serde_json::Value>, CliError> {
    let fail = |e: String| CliError::Check(format!("{}: {e}", path.display()));
    let mut out = Vec::new();
    if path.extension().is_some_and(|e| e == "zip") {
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let mut archive = zip::ZipArchive::new(file).map_err(|e| fail(e.to_string()))?;
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).map_err(|e| fail(e.to_string()))?;
            if !entry.name().ends_with(".json") || entry.size() > MAX_FILE {
                continue;
            }
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(|e| fail(e.to_string()))?;
            if let Ok(doc) = serde_json::from_slice(&text) {
                out.push(doc);
            }
        }
        return Ok(out);
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| fail(e.to_string()))? {
            let entry = entry.map_err(|e| fail(e.to_string()))?;
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "json")
                && entry.metadata().map(|m| m.len() <= MAX_FILE).unwrap_or(false)
            {
                let text = std::fs::read(&p).map_err(|e| fail(e.to_string()))?;
                match serde_json::from_slice(&text) {
                    Ok(doc) => out.push(doc),
                    Err(e) => eprintln!("skipping {}: {e}", p.display()),
                }
            }
        }
    }
    Ok(out)
}

async fn import(target: &Target, path: &Path) -> Result<(), CliError> {
    let docs = documents(path)?;
    let mut packages: BTreeMap<(String, String), VulnPackage> = BTreeMap::new();
    let mut advisories = 0u64;
    for doc in &docs {
        let named = keelson_api::scanning::osv::packages_of(doc);
        if !named.is_empty() {
            advisories += 1;
        }
        for p in named {
            packages
                .entry((p.ecosystem.clone(), p.name.clone()))
                .and_modify(|e| e.advisories.extend(p.advisories.clone()))
                .or_insert(p);
        }
    }
    let started = target.call("POST", "/api/v1/vulndb/imports", None).await?;
    let generation = started["generation"]
        .as_u64()
        .ok_or_else(|| CliError::Decode("no generation".into()))?;
    let total = packages.len() as u64;
    let mut batch: Vec<VulnPackage> = Vec::new();
    let mut bytes = 0usize;
    let send = |batch: Vec<VulnPackage>| async move {
        target
            .call(
                "POST",
                &format!("/api/v1/vulndb/imports/{generation}"),
                Some(json!({ "packages": batch })),
            )
            .await
    };
    for (_, package) in packages {
        let size = serde_json::to_vec(&package).map(|v| v.len()).unwrap_or(0);
        if !batch.is_empty() && (bytes + size > BATCH_BYTES || batch.len() >= 2_000) {
            send(std::mem::take(&mut batch)).await?;
            bytes = 0;
        }
        bytes += size;
        batch.push(package);
    }
    if !batch.is_empty() {
        send(batch).await?;
    }
    target
        .call(
            "POST",
            &format!("/api/v1/vulndb/imports/{generation}/activate"),
            Some(json!({ "advisories": advisories, "packages": total })),
        )
        .await?;
    // Older generations go a bounded number of keys per call; a few calls clear a large one.
    for _ in 0..64 {
        target.call("POST", "/api/v1/vulndb/prune", None).await?;
    }
    println!("imported {advisories} advisories for {total} packages as generation {generation}");
    Ok(())
}
