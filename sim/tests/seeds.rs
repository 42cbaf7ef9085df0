//! The fixed seed set and the determinism check, run through the `keelson-sim` binary so that
//! every seed runs in its own process, exactly as sweeps and `--seed N` replays run it.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_keelson-sim");

fn trace_hash(seed: u64) -> String {
    let out = Command::new(BIN)
        .args(["--seed", &seed.to_string(), "--json"])
        .output()
        .expect("run keelson-sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("a report line");
    let report: serde_json::Value = serde_json::from_str(line).expect("a JSON report");
    report["trace_hash"].as_str().expect("a trace hash").to_string()
}

#[test]
fn fixed_seeds_hold_every_invariant() {
    let out = Command::new(BIN)
        .args(["--seeds", "8", "--from", "1", "--jobs", "2"])
        .output()
        .expect("run keelson-sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "some seeds failed:\n{stdout}");
}

#[test]
fn same_seed_same_trace() {
    let first = trace_hash(5);
    let second = trace_hash(5);
    assert_eq!(first, second, "seed 5 ran two different traces");
    assert_ne!(first, trace_hash(6), "seeds 5 and 6 ran the same trace");
}
