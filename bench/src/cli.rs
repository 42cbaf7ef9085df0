//! The command line: one subcommand per workload (or `run --workload`), plus
//! `bare-server` and `compare`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::compare::Pick;
use crate::units::{ByteSize, HumanDuration};
use crate::workloads::Workload;

#[derive(Debug, Parser)]
#[command(
    name = "keelson-bench",
    version,
    about = "Benchmarks a container registry over the OCI distribution (Docker V2) API",
    long_about = "Benchmarks a container registry over the OCI distribution (Docker V2) API.\n\n\
Each workload first sets up what it needs (untimed), then repeats one operation from \
--concurrency workers for --duration or --requests, and prints req/s, MB/s (10^6 B/s of \
payload), latency percentiles, errors and, with --server-pid, the server's peak RSS."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Monolithic pushes: POST, then PUT ?digest= with the whole blob (a new blob each).
    BlobPush(RunArgs),
    /// Chunked pushes: POST, PATCH --chunk sized pieces, PUT ?digest= (a new blob each).
    BlobPushChunked(RunArgs),
    /// Pushes one blob of --size, then GETs it (length checked; digest with --verify).
    BlobPull(RunArgs),
    /// Pushes a config and layer once, then PUTs distinct manifests under distinct tags.
    ManifestPut(RunArgs),
    /// Pushes one manifest, then GETs it by tag with Docker's Accept header.
    ManifestGetTag(RunArgs),
    /// Pushes one manifest, then GETs it by digest with Docker's Accept header.
    ManifestGetDigest(RunArgs),
    /// Pushes --tags tags to one repository, then GETs tags/list.
    TagsList(RunArgs),
    /// Pushes --tags images to one repository, then GETs the first page of 50 of its image
    /// list (Keelson's /api/v1, as the console's repository view asks).
    ImagesPage(RunArgs),
    /// GETs --path repeatedly, no setup (for bare-server or any HTTP server).
    Get(RunArgs),
    /// Runs the workload named by --workload.
    Run {
        #[arg(long, value_enum)]
        workload: Workload,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Serves a fixed body to every request: the hardware/hyper ceiling for GETs.
    BareServer(BareArgs),
    /// Prints side-by-side tables from reports written with --json.
    Compare(CompareArgs),
    /// The retention pass over a synthetic catalog (default 1,000,000 images), in-process:
    /// evaluation time, pass time and peak RSS.
    Retention(crate::retention::RetentionArgs),
    /// Decrypts a sealed file through the blob store's reader on one core: what encryption
    /// at rest adds to every byte a pull serves.
    Cipher(crate::cipher::CipherArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Registry base URL, e.g. http://127.0.0.1:5000 (http only).
    #[arg(long, env = "KEELSON_BENCH_URL")]
    pub url: String,
    /// Do the workload's setup (the pushes before timing starts) through this URL instead of
    /// --url, e.g. another node of the same cluster: a pull then reads from a node that got
    /// the blob from its peers, not from the client.
    #[arg(long)]
    pub setup_url: Option<String>,
    /// Compare this run with the run of target LABEL in `compare`'s relative table (e.g. a
    /// cluster row against single-node Keelson or against distribution).
    #[arg(long)]
    pub versus_label: Option<String>,
    /// The row name of the run --versus-label names (default: this run's --name).
    #[arg(long)]
    pub versus_name: Option<String>,
    /// blob-pull: generate the blob from this seed, so every run with the same seed and
    /// --size pulls the same blob (default: a new random blob per run).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Repository to use (at least two path segments); default bench/<workload>.
    #[arg(long)]
    pub repo: Option<String>,
    /// Concurrent workers (each keeps one request in flight).
    #[arg(short, long, default_value_t = 1)]
    pub concurrency: usize,
    /// How long to run (10s, 500ms, 2m). Default 10s unless --requests is given.
    #[arg(short, long, conflicts_with = "requests")]
    pub duration: Option<HumanDuration>,
    /// How many operations to run, instead of a duration.
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Blob size for pushes and pulls, layer size for manifest workloads (1KiB..1GiB).
    #[arg(long, default_value = "4KiB")]
    pub size: ByteSize,
    /// PATCH size for blob-push-chunked.
    #[arg(long, default_value = "8MiB")]
    pub chunk: ByteSize,
    /// Also check the SHA-256 of every pulled blob (costs client CPU).
    #[arg(long)]
    pub verify: bool,
    /// Number of tags tags-list pushes before listing.
    #[arg(long, default_value_t = 100)]
    pub tags: usize,
    /// Path the get workload requests.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// User for Basic auth or Docker's token flow.
    #[arg(long, env = "KEELSON_BENCH_USER", requires = "password")]
    pub user: Option<String>,
    /// Password for --user.
    #[arg(long, env = "KEELSON_BENCH_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Sample this process's VmRSS during the run and report the peak; give several
    /// (comma-separated or repeated) to sum them, e.g. the nodes of a local cluster.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Row name in reports and compare tables (default: the workload name).
    #[arg(long)]
    pub name: Option<String>,
    /// Target label in reports and compare tables.
    #[arg(long, default_value = "target")]
    pub label: String,
    /// Unmeasured run time before measuring (warms connections and caches).
    #[arg(long, default_value = "0s")]
    pub warmup: HumanDuration,
    /// Give up on one operation after this long.
    #[arg(long, default_value = "10m")]
    pub timeout: HumanDuration,
    /// Stop the run after this many errors.
    #[arg(long, default_value_t = 100)]
    pub max_errors: u64,
    /// Client runtime threads (default: the number of CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Allow a target that is not on this machine (127.0.0.0/8, localhost, [::1]).
    #[arg(long)]
    pub allow_remote: bool,
    /// Speak HTTP/2 with prior knowledge instead of HTTP/1.1.
    #[arg(long)]
    pub http2: bool,
    /// What to print on stdout: a table, one summary line, or nothing (--json still written).
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
    /// Same as --output none.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Line,
    None,
}

#[derive(Debug, Args)]
pub struct BareArgs {
    /// Address to listen on (port 0 picks one; see --addr-file).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Size of the body served to every request.
    #[arg(long, default_value = "4KiB")]
    pub size: ByteSize,
    /// Write the bound address to this file once listening.
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
    /// Server runtime threads (default: the number of CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Target labels: candidate, baseline, then reference columns (e.g. a ceiling).
    #[arg(long, value_delimiter = ',', default_value = "keelson,distribution,bare-hyper")]
    pub labels: Vec<String>,
    /// Which of a target's runs of a workload to show.
    #[arg(long, value_enum, default_value = "best")]
    pub pick: Pick,
    /// Also write the comparison as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Report files written by runs with --json.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}
