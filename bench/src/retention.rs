//! `keelson-bench retention`: the retention pass over a large catalog, measured in-process.
//!
//! A catalog of `--repos` × `--images-per-repo` images is written straight into a fresh store
//! (pushing a million images would take hours), a node's catalog is opened on it, the tenancy's
//! global policy is set (delete images not pulled for 30 days or untagged for 7), and then:
//! first every repository's policy is evaluated (the preview, what the leader computes before it
//! commits), then the real pass runs (evaluation plus the compare-and-set deletions through
//! Raft). Each phase reports its time and this process's peak RSS (the high-water mark is reset
//! after seeding, so it measures the pass, not the seeding).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keelson_raft::lifecycle::RetentionPolicy;
use keelson_raft::{retention, synthetic, Catalog, CatalogCommand, CatalogConfig, NodeInfo};

#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    #[arg(long, default_value_t = 1000)]
    pub repos: usize,
    #[arg(long, default_value_t = 1000)]
    pub images_per_repo: usize,
    /// Scratch directory for the catalog (removed afterwards) [default: a temp dir].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Evaluate only; commit no deletions.
    #[arg(long)]
    pub no_commit: bool,
    /// Run the pass with deletions over only the first N repositories [default: all].
    #[arg(long)]
    pub commit_repos: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionBenchError {
    #[error("scratch directory: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Catalog(#[from] keelson_raft::CatalogError),
    #[error(transparent)]
    Read(#[from] keelson_raft::catalog::ReadError),
    #[error(transparent)]
    Run(#[from] retention::RunError),
    #[error("the policy was refused: {0}")]
    Refused(String),
}

/// This process's peak RSS since the last reset, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets the peak RSS to the current RSS (Linux: `5` to /proc/self/clear_refs).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn run(args: RetentionArgs) -> Result<(), RetentionBenchError> {
    let scratch = match &args.dir {
        Some(d) => tempfile::Builder::new().prefix("keelson-retention-").tempdir_in(d)?,
        None => tempfile::Builder::new().prefix("keelson-retention-").tempdir()?,
    };
    let dir = scratch.path().join("raft");
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let started = Instant::now();
    let seeded = synthetic::seed(
        &dir,
        &synthetic::Shape {
            repos: args.repos,
            images_per_repo: args.images_per_repo,
            now_ms,
        },
    )?;
    println!(
        "retention: seeded {} images ({} tagged) in {} repositories in {:.1} s",
        seeded.images,
        seeded.tags,
        args.repos,
        started.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let catalog = Catalog::open(CatalogConfig {
            node_id: 1,
            node: NodeInfo::default(),
            dir: dir.clone(),
            bootstrap_single: true,
            snapshot_every_logs: 20_000,
        })
        .await?;
        catalog.wait_for_leader(Duration::from_secs(30)).await?;
        let policy = RetentionPolicy {
            not_pulled_days: Some(30),
            untagged_days: Some(7),
            ..Default::default()
        };
        let cmd = CatalogCommand::SetRetentionPolicy {
            namespace: "bench".into(),
            name: "global".into(),
            policy: Some(policy),
        };
        if let keelson_raft::CatalogResponse::Rejected(r) = catalog.propose(cmd).await? {
            return Err(RetentionBenchError::Refused(r.to_string()));
        }
        let repos: Vec<String> = (0..args.repos).map(|r| format!("bench/r{r}")).collect();
        reset_peak_rss();
        let t = Instant::now();
        let mut planned = 0usize;
        let mut freed = 0u64;
        for repo in &repos {
            let preview = retention::preview(catalog.reader(), repo, now_ms)?;
            planned += preview.units.len();
            freed += preview.units.iter().map(|u| u.bytes_freed).sum::<u64>();
            tokio::task::yield_now().await;
        }
        let eval = t.elapsed();
        let eval_rss = peak_rss_kib();
        println!(
            "retention evaluation: {} images judged, {planned} to delete ({:.1} GiB freed): {:.1} s, {:.0} images/s, peak RSS {:.0} MiB",
            seeded.images,
            freed as f64 / (1u64 << 30) as f64,
            eval.as_secs_f64(),
            seeded.images as f64 / eval.as_secs_f64().max(1e-9),
            mib(eval_rss)
        );
        if !args.no_commit {
            reset_peak_rss();
            let repos = &repos[..args.commit_repos.unwrap_or(repos.len()).min(repos.len())];
            let before: u64 = repos
                .iter()
                .map(|r| catalog.reader().repo_usage(r).map(|u| u.images))
                .sum::<Result<u64, _>>()?;
            let t = Instant::now();
            let (mut entries, mut refused) = (0usize, 0usize);
            for repo in repos {
                let (_, outcome) = retention::run(&catalog, repo, now_ms).await?;
                entries += outcome.entries;
                refused += outcome.rejected_entries;
            }
            let pass = t.elapsed();
            let left: u64 = repos
                .iter()
                .map(|r| catalog.reader().repo_usage(r).map(|u| u.images))
                .sum::<Result<u64, _>>()?;
            println!(
                "retention pass with deletions over {} repositories ({before} images): {} deleted in {entries} Raft entries ({refused} refused): {:.1} s, peak RSS {:.0} MiB",
                repos.len(),
                before - left,
                pass.as_secs_f64(),
                mib(peak_rss_kib())
            );
        }
        catalog.shutdown().await;
        Ok(())
    })
}
