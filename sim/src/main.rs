//! `keelson-sim`: runs one seed (`--seed N`, optionally `--trace`), or sweeps many (`--seeds K`,
//! `--from N`, `--budget-secs S`), each seed in its own process so that it replays exactly as
//! `--seed N` would run it, and prints the totals.

use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use keelson_sim::{Config, SeedReport, Totals};

#[derive(Parser, Debug)]
#[command(name = "keelson-sim", about = "Deterministic simulation of a Keelson cluster")]
struct Cli {
    /// Run this one seed in this process.
    #[arg(long)]
    seed: Option<u64>,
    /// With --seed: print the whole trace.
    #[arg(long)]
    trace: bool,
    /// With --seed: print the report as JSON (what sweeps read).
    #[arg(long)]
    json: bool,
    /// Sweep this many seeds.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of the sweep.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Stop starting seeds after this many seconds.
    #[arg(long)]
    budget_secs: Option<u64>,
    /// A seed still running after this many seconds of wall time counts as hung.
    #[arg(long, default_value_t = 300)]
    seed_timeout_secs: u64,
    /// Seeds run at once.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Operations per client.
    #[arg(long, default_value_t = 60)]
    ops: usize,
    /// Fault window after the cluster formed, in seconds (0: no faults).
    #[arg(long, default_value_t = 25)]
    fault_secs: u64,
    /// Never add or remove nodes (by default the seed may do both during the faults).
    #[arg(long)]
    no_membership_changes: bool,
}

impl Cli {
    fn config(&self) -> Config {
        Config {
            nodes: self.nodes,
            clients: self.clients,
            ops_per_client: self.ops,
            fault_window_ms: self.fault_secs * 1000,
            faults: if self.fault_secs == 0 {
                Vec::new()
            } else {
                keelson_sim::faults::FaultKind::ALL.to_vec()
            },
            membership_changes: !self.no_membership_changes,
            keep_trace: self.trace,
            ..Config::default()
        }
    }

    /// The flags a child process needs to run one seed of this sweep the same way.
    fn child_args(&self, seed: u64) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--seed".into(),
            seed.to_string(),
            "--json".into(),
            "--nodes".into(),
            self.nodes.to_string(),
            "--clients".into(),
            self.clients.to_string(),
            "--ops".into(),
            self.ops.to_string(),
            "--fault-secs".into(),
            self.fault_secs.to_string(),
        ];
        if self.no_membership_changes {
            args.push("--no-membership-changes".into());
        }
        args
    }
}

fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let cli = Cli::parse();
    match cli.seed {
        Some(seed) => one_seed(&cli, seed),
        None => sweep(&cli),
    }
}

fn one_seed(cli: &Cli, seed: u64) -> ExitCode {
    let outcome = match keelson_sim::run(seed, &cli.config()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("keelson-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = outcome.report;
    if cli.trace {
        for line in &outcome.trace {
            println!("{line}");
        }
    }
    if cli.json {
        match serde_json::to_string(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("keelson-sim: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        println!("{}", report.summary());
        println!("trace hash {}", report.trace_hash);
        for f in &report.failures {
            println!("  VIOLATION {}: {}", f.invariant, f.detail);
        }
        let mut totals = Totals::default();
        totals.add(&report);
        print!("{}", totals.render());
        if !report.passed() {
            println!("replay: {}", report.replay_command());
        }
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs one seed in a child process; a child that dies without a report counts as a failure.
fn run_child(cli: &Cli, seed: u64) -> SeedReport {
    let failed = |detail: String| SeedReport {
        seed,
        trace_hash: "none".into(),
        failures: vec![keelson_sim::history::Failure {
            invariant: "process".into(),
            detail,
        }],
        ..Default::default()
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return failed(format!("cannot find own executable: {e}")),
    };
    let mut child = match Command::new(exe)
        .args(cli.child_args(seed))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot start: {e}")),
    };
    // Both pipes are read on their own threads so a chatty child never blocks on a full pipe.
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + Duration::from_secs(cli.seed_timeout_secs);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => break None,
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        let mut report = failed(String::new());
        report.failures = vec![keelson_sim::history::Failure {
            invariant: "hang".into(),
            detail: format!("no result within {} s of wall time", cli.seed_timeout_secs),
        }];
        return report;
    };
    match stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<SeedReport>(l).ok())
    {
        Some(report) => report,
        None => {
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            failed(format!("{status} without a report: {}", tail.join(" / ")))
        }
    }
}

fn sweep(cli: &Cli) -> ExitCode {
    let started = Instant::now();
    let budget = cli.budget_secs.map(Duration::from_secs);
    let seeds: Vec<u64> = (cli.from..cli.from.saturating_add(cli.seeds)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..cli.jobs.max(1) {
            scope.spawn(|| loop {
                if budget.is_some_and(|b| started.elapsed() >= b) {
                    return;
                }
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(&seed) = seeds.get(i) else { return };
                let report = run_child(cli, seed);
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", report.summary());
                for f in &report.failures {
                    let _ = writeln!(out, "    {}: {}", f.invariant, f.detail);
                }
                if !report.passed() {
                    let _ = writeln!(out, "    replay: {}", report.replay_command());
                }
                if let Ok(mut r) = results.lock() {
                    r.push(report);
                }
            });
        }
    });
    let mut reports = results.into_inner().unwrap_or_default();
    reports.sort_by_key(|r| r.seed);
    let mut totals = Totals::default();
    for r in &reports {
        totals.add(r);
    }
    println!("---");
    print!("{}", totals.render());
    println!("wall time: {:.1}s", started.elapsed().as_secs_f64());
    if totals.failed_seeds.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
