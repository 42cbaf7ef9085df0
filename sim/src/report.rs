//! What a run reports (one seed), and the totals of a sweep.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::history::Failure;

/// The outcome of one seed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeedReport {
    pub seed: u64,
    /// Hash of the ordered trace (client operations and answers, faults, Raft status changes,
    /// verification): equal seeds give equal hashes.
    pub trace_hash: String,
    pub sim_ms: u64,
    pub wall_ms: u64,
    /// `op.<kind>.<outcome>`, `fault.<kind>`, `inv.<check>` and other counts.
    pub counters: BTreeMap<String, u64>,
    pub failures: Vec<Failure>,
}

impl SeedReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The command that replays this seed.
    pub fn replay_command(&self) -> String {
        format!("cargo run -p keelson-sim --release -- --seed {} --trace", self.seed)
    }

    fn sum(&self, prefix: &str) -> u64 {
        self.counters
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// One line: seed, verdict, hash and the main counts.
    pub fn summary(&self) -> String {
        format!(
            "seed {:>6} {} hash {} sim {:>6}ms wall {:>6}ms ops {:>4} faults {:>2} checks {:>6}{}",
            self.seed,
            if self.passed() { "ok  " } else { "FAIL" },
            &self.trace_hash[..self.trace_hash.len().min(16)],
            self.sim_ms,
            self.wall_ms,
            self.sum("op."),
            self.sum("fault."),
            self.sum("inv."),
            if self.passed() {
                String::new()
            } else {
                format!(
                    " [{}]",
                    self.failures
                        .iter()
                        .map(|f| f.invariant.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
        )
    }
}

/// Totals over many seeds.
#[derive(Debug, Default)]
pub struct Totals {
    pub seeds: u64,
    pub failed_seeds: Vec<u64>,
    pub counters: BTreeMap<String, u64>,
    /// Failures by invariant: (count, first seed).
    pub failures: BTreeMap<String, (u64, u64)>,
}

impl Totals {
    pub fn add(&mut self, report: &SeedReport) {
        self.seeds += 1;
        for (k, v) in &report.counters {
            *self.counters.entry(k.clone()).or_default() += v;
        }
        if !report.passed() {
            self.failed_seeds.push(report.seed);
        }
        for f in &report.failures {
            let entry = self.failures.entry(f.invariant.clone()).or_insert((0, report.seed));
            entry.0 += 1;
        }
    }

    /// The closing table of a sweep.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("seeds run: {}\n", self.seeds));
        let section = |out: &mut String, title: &str, prefix: &str| {
            out.push_str(&format!("{title}:\n"));
            let total: u64 = self
                .counters
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| {
                    out.push_str(&format!("  {:<44} {v}\n", &k[prefix.len()..]));
                    *v
                })
                .sum();
            out.push_str(&format!("  {:<44} {total}\n", "total"));
        };
        section(&mut out, "faults injected", "fault.");
        section(&mut out, "client operations (kind.outcome)", "op.");
        section(&mut out, "invariant checks", "inv.");
        section(
            &mut out,
            "background jobs (the leader's counters at verification)",
            "jobs.",
        );
        section(&mut out, "retention and pull counts", "retention.");
        section(&mut out, "second region (fra) and cross-region replication", "wan.");
        out.push_str(&format!(
            "raft status samples: {}\n",
            self.counters.get("raft.status_samples").copied().unwrap_or(0)
        ));
        out.push_str(&format!(
            "failed seeds: {} {:?}\n",
            self.failed_seeds.len(),
            self.failed_seeds
        ));
        for (invariant, (count, seed)) in &self.failures {
            out.push_str(&format!("  {invariant:<30} {count} failures, first at seed {seed}\n"));
        }
        out
    }
}
