//! What a run measured: per-request latencies (kept exactly, then sorted for
//! percentiles), bytes moved, successes, errors and a few error messages to show.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many error messages a run keeps to print.
const ERROR_SAMPLES: usize = 5;

/// One worker's tally; workers' tallies are merged at the end of a run.
#[derive(Debug, Default)]
pub struct Recorder {
    latencies_ns: Vec<u64>,
    pub bytes: u64,
    pub ok: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
}

impl Recorder {
    pub fn success(&mut self, latency: Duration, bytes: u64) {
        self.latencies_ns
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        self.bytes += bytes;
        self.ok += 1;
    }

    pub fn failure(&mut self, message: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push(message);
        }
    }

    pub fn merge(&mut self, mut other: Recorder) {
        self.latencies_ns.append(&mut other.latencies_ns);
        self.bytes += other.bytes;
        self.ok += other.ok;
        self.errors += other.errors;
        for m in other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES {
                self.error_samples.push(m);
            }
        }
    }

    /// Latency percentiles over the successful requests, or `None` if there were none.
    pub fn latency(&mut self) -> Option<Latency> {
        let v = &mut self.latencies_ns;
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let n = v.len();
        let at = |q: f64| {
            let idx = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            ms(v[idx])
        };
        let sum: u128 = v.iter().map(|&x| x as u128).sum();
        Some(Latency {
            min_ms: ms(v[0]),
            mean_ms: sum as f64 / n as f64 / 1e6,
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: ms(v[n - 1]),
        })
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut r = Recorder::default();
        for i in 1..=1000u64 {
            r.success(Duration::from_millis(i), 10);
        }
        let l = r.latency().expect("some");
        assert_eq!(l.p50_ms, 500.0);
        assert_eq!(l.p99_ms, 990.0);
        assert_eq!(l.p999_ms, 999.0);
        assert_eq!(l.max_ms, 1000.0);
        assert_eq!(l.min_ms, 1.0);
        assert_eq!(r.bytes, 10_000);
        assert!(Recorder::default().latency().is_none());
    }

    #[test]
    fn merge_keeps_few_samples() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for i in 0..4 {
            a.failure(format!("a{i}"));
            b.failure(format!("b{i}"));
        }
        a.merge(b);
        assert_eq!(a.errors, 8);
        assert_eq!(a.error_samples.len(), ERROR_SAMPLES);
    }
}
