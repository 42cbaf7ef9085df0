//! keelson-bench: drives any container registry over the OCI distribution (Docker V2)
//! API and reports throughput, latency, errors and server memory. `main` only parses
//! the command line, builds the runtime and hands over to the module for the command.

mod auth;
mod bare;
mod blob;
mod body;
mod cipher;
mod cli;
mod client;
mod compare;
mod load;
mod manifest;
mod ops;
mod report;
mod retention;
mod rss;
mod runner;
mod stats;
mod units;
mod workloads;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;

use crate::auth::Credentials;
use crate::cli::{Cli, Command, Output, RunArgs};
use crate::client::{HttpError, Options, Registry};
use crate::report::{ReportError, RunReport};
use crate::rss::{RssError, RssSampler};
use crate::runner::{Limit, Plan};
use crate::units::{ByteSize, GIB, KIB};
use crate::workloads::{Params, SetupError, Workload};

/// Everything that can end a keelson-bench invocation with an error.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("--size {0} is outside 1KiB..1GiB")]
    SizeRange(ByteSize),
    #[error("--concurrency must be at least 1")]
    Concurrency,
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("setting up {workload}: {source}")]
    Setup {
        workload: &'static str,
        #[source]
        source: SetupError,
    },
    #[error("--server-pid: {0}")]
    Rss(#[from] RssError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Compare(#[from] compare::CompareError),
    #[error(transparent)]
    Bare(#[from] bare::BareError),
    #[error("writing to stdout: {0}")]
    Stdout(std::io::Error),
    #[error(transparent)]
    Retention(#[from] retention::RetentionBenchError),
    #[error("measuring sealed reads: {0}")]
    Cipher(#[source] std::io::Error),
}

/// Exit status of a run that completed but stopped early on --max-errors.
const EXIT_ABORTED: u8 = 3;

fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, BenchError> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = threads {
        b.worker_threads(t.max(1));
    }
    b.enable_all().build().map_err(BenchError::Runtime)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            // Every error's message already names its cause.
            eprintln!("keelson-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Command) -> Result<ExitCode, BenchError> {
    match cmd {
        Command::BlobPush(a) => run_workload(Workload::BlobPush, a),
        Command::BlobPushChunked(a) => run_workload(Workload::BlobPushChunked, a),
        Command::BlobPull(a) => run_workload(Workload::BlobPull, a),
        Command::ManifestPut(a) => run_workload(Workload::ManifestPut, a),
        Command::ManifestGetTag(a) => run_workload(Workload::ManifestGetTag, a),
        Command::ManifestGetDigest(a) => run_workload(Workload::ManifestGetDigest, a),
        Command::TagsList(a) => run_workload(Workload::TagsList, a),
        Command::ImagesPage(a) => run_workload(Workload::ImagesPage, a),
        Command::Get(a) => run_workload(Workload::Get, a),
        Command::Run { workload, args } => run_workload(workload, args),
        Command::BareServer(a) => {
            let rt = runtime(a.threads)?;
            let size = usize::try_from(a.size.get()).unwrap_or(usize::MAX);
            rt.block_on(bare::serve(a.listen, size, a.addr_file))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Retention(a) => {
            retention::run(a)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cipher(a) => {
            cipher::run(&a).map_err(BenchError::Cipher)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare(a) => {
            let cmp = compare::build(&a.files, &a.labels, a.pick)?;
            let mut out = std::io::stdout().lock();
            compare::print(&mut out, &cmp, &a.labels, a.pick).map_err(BenchError::Stdout)?;
            if let Some(path) = a.json {
                let text = serde_json::to_string_pretty(&cmp).map_err(|e| ReportError::Write {
                    path: path.clone(),
                    source: e.into(),
                })?;
                std::fs::write(&path, text + "\n").map_err(|source| ReportError::Write { path, source })?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_workload(workload: Workload, a: RunArgs) -> Result<ExitCode, BenchError> {
    if workload != Workload::Get && !(KIB..=GIB).contains(&a.size.get()) {
        return Err(BenchError::SizeRange(a.size));
    }
    if a.concurrency == 0 {
        return Err(BenchError::Concurrency);
    }
    let repo = a.repo.clone().unwrap_or_else(|| format!("bench/{}", workload.name()));
    let limit = match (a.requests, a.duration) {
        (Some(n), _) => Limit::Requests(n),
        (None, Some(d)) => Limit::Duration(d.0),
        (None, None) => Limit::Duration(Duration::from_secs(10)),
    };
    let plan = Plan {
        concurrency: a.concurrency,
        limit,
        warmup: a.warmup.0,
        timeout: a.timeout.0,
        max_errors: a.max_errors,
    };
    let params = Params {
        repo: repo.clone(),
        size: a.size.get(),
        chunk: a.chunk.get(),
        verify: a.verify,
        tags: a.tags,
        path: a.path.clone(),
        seed: a.seed,
    };
    let credentials = match (&a.user, &a.password) {
        (Some(user), Some(password)) => Some(Credentials {
            user: user.clone(),
            password: password.clone(),
        }),
        _ => None,
    };
    let options = || Options {
        http2: a.http2,
        credentials: credentials.clone(),
        allow_remote: a.allow_remote,
    };
    let reg = Arc::new(Registry::new(&a.url, &repo, options())?);
    let setup = match &a.setup_url {
        Some(url) => Arc::new(Registry::new(url, &repo, options())?),
        None => reg.clone(),
    };
    let rt = runtime(a.threads)?;
    let sampler = if a.server_pid.is_empty() {
        None
    } else {
        Some(RssSampler::start(a.server_pid.clone(), Duration::from_millis(100))?)
    };
    let result = rt.block_on(workloads::run(workload, reg.clone(), setup.clone(), &params, &plan));
    let server_rss = sampler.map(RssSampler::finish);
    let workloads::Ran {
        mut outcome,
        blob_digest,
    } = result.map_err(|source| BenchError::Setup {
        workload: workload.name(),
        source,
    })?;
    let name = a.name.clone().unwrap_or_else(|| workload.name().to_string());

    let secs = outcome.elapsed.as_secs_f64().max(1e-9);
    let rec = &mut outcome.recorder;
    let report = RunReport {
        versus: a.versus_label.clone().map(|label| report::Versus {
            label,
            name: a.versus_name.clone().unwrap_or_else(|| name.clone()),
        }),
        name,
        label: a.label.clone(),
        workload: workload.name().to_string(),
        url: reg.base().to_string(),
        repo: if workload == Workload::Get {
            a.path.clone()
        } else {
            repo
        },
        concurrency: a.concurrency,
        size_bytes: a.size.get(),
        chunk_bytes: (workload == Workload::BlobPushChunked).then_some(a.chunk.get()),
        duration_limit_s: match limit {
            Limit::Duration(d) => Some(d.as_secs_f64()),
            Limit::Requests(_) => None,
        },
        request_limit: match limit {
            Limit::Requests(n) => Some(n),
            Limit::Duration(_) => None,
        },
        elapsed_s: secs,
        ok: rec.ok,
        errors: rec.errors,
        aborted: outcome.aborted,
        error_samples: rec.error_samples.clone(),
        bytes: rec.bytes,
        req_per_s: rec.ok as f64 / secs,
        mb_per_s: rec.bytes as f64 / secs / 1e6,
        latency: rec.latency(),
        server_rss,
        finished_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        setup_url: (!Arc::ptr_eq(&reg, &setup)).then(|| setup.base().to_string()),
        blob_digest,
    };
    // The runtime's idle pooled connections are dropped with it.
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Some(path) = &a.json {
        report.write_json(path)?;
    }
    let mut out = std::io::stdout().lock();
    match (a.quiet, a.output) {
        (true, _) | (_, Output::None) => Ok(()),
        (_, Output::Table) => report.print(&mut out),
        (_, Output::Line) => report.print_line(&mut out),
    }
    .map_err(BenchError::Stdout)?;
    Ok(if report.aborted {
        ExitCode::from(EXIT_ABORTED)
    } else {
        ExitCode::SUCCESS
    })
}
