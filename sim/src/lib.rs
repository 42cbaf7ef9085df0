//! Keelson's deterministic simulation.
//!
//! Several real Keelson nodes — the code the binary runs, started through
//! [`keelson::start_with`] — run inside one [turmoil] simulation, on its network and its clock.
//! A seed decides everything: the clients' operations (some through a load-balancer host), the
//! faults (partitions, one-way and lossy links, slow networks, crashes and restarts, membership
//! changes, skewed clocks), the network's latencies and every random draw the nodes make. After
//! the faults are healed the run checks that no acknowledged push was lost, that every tag's
//! history is linearizable, that no term had two leaders, that all members hold the same catalog
//! and that repair restored every blob's redundancy. A second region (one node across a WAN
//! link that is cut, slowed and healed) receives one repository by cross-region replication and
//! must equal the source after healing. Every acknowledged push reaches a webhook receiver on
//! the simulated network as a signed event, through crashes and leader changes. Every
//! acknowledged image is inventoried by the scanner exactly once. Equal seeds give equal traces (see
//! [`determinism`] and [`lockstep`] for how).
//!
//! `cargo test -p keelson-sim` runs a fixed set of seeds; the `keelson-sim` binary sweeps many.

pub mod client;
pub mod cluster;
pub mod determinism;
pub mod faults;
pub mod history;
pub mod invariants;
pub mod linearizability;
pub mod lockstep;
pub mod membership;
pub mod net;
pub mod redundancy;
pub mod regions;
pub mod report;
pub mod retention;
pub mod scanning;
pub mod scenario;
pub mod skew;
pub mod uploads;
pub mod webhooks;
pub mod workload;

pub use report::{SeedReport, Totals};
pub use scenario::{run, Config, Outcome, RunError};
