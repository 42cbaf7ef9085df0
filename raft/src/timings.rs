//! How long the catalog's storage work takes: log appends until durable, applies, snapshot
//! builds and installs, and the size of the last snapshot. The log store and the state machine
//! observe here; the API's metrics module registers these same handles (they share their
//! counts) in the node's Prometheus registry.

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

#[derive(Clone)]
pub struct RaftTimings {
    /// From `append` until the entries are fsynced (group commit included).
    pub append_seconds: Histogram,
    /// One batch of entries applied to the state machine.
    pub apply_seconds: Histogram,
    pub snapshot_build_seconds: Histogram,
    pub snapshot_install_seconds: Histogram,
    /// Bytes of the last snapshot built or installed.
    pub snapshot_bytes: Gauge,
}

impl Default for RaftTimings {
    fn default() -> Self {
        // 50 µs to about 27 s.
        let fast = || Histogram::new(exponential_buckets(0.000_05, 2.0, 20));
        // 1 ms to about 9 minutes.
        let slow = || Histogram::new(exponential_buckets(0.001, 2.0, 20));
        RaftTimings {
            append_seconds: fast(),
            apply_seconds: fast(),
            snapshot_build_seconds: slow(),
            snapshot_install_seconds: slow(),
            snapshot_bytes: Gauge::default(),
        }
    }
}
