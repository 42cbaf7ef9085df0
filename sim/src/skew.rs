//! Clock skew where it matters. Every node reads wall time through the injectable `Clock`; the
//! seed gives some nodes a clock up to [`MAX_SKEW_MS`] ahead or behind. What depends on wall time
//! in a node without authentication is garbage collection: a blob record carries the wall time of
//! the node that created it, and the leader marks and sweeps by its own wall time. The simulation
//! runs GC for real (short [`GC_GRACE_MS`], pass every [`GC_INTERVAL_MS`]) and checks:
//!
//! - no blob referenced by an acknowledged, never deleted manifest is ever collected (its bytes
//!   stay readable from every node, see [`crate::invariants`]);
//! - a manifest push naming a blob whose push started less than [`never_collected_within_ms`]
//!   earlier is never refused as naming an unknown blob: no clock within the skew bound can have
//!   made it garbage yet.
//!
//! Repair's "lost after" and upload-pin lifetimes run on the monotonic clock and are not skewed.

use rand::rngs::StdRng;
use rand::Rng;

/// How far a node's wall clock may be off.
pub const MAX_SKEW_MS: i64 = 4_000;
/// The nodes' GC grace period in the simulation.
pub const GC_GRACE_MS: u64 = 12_000;
/// The nodes' GC pass period in the simulation.
pub const GC_INTERVAL_MS: u64 = 2_000;

/// One skew per node: about half the nodes keep true time.
pub fn draw(rng: &mut StdRng, nodes: usize) -> Vec<i64> {
    (0..nodes)
        .map(|_| {
            if rng.gen_bool(0.5) {
                rng.gen_range(-MAX_SKEW_MS..=MAX_SKEW_MS)
            } else {
                0
            }
        })
        .collect()
}

/// How long after its push started a blob cannot have been collected, whatever the clocks within
/// the bound. A mark needs the record to look `grace` old on the leader's clock (at least
/// `grace - 2·skew` of real time, the record being stamped by another node's clock), and the sweep
/// needs another `grace` on the then leader's clock since the mark (again at least
/// `grace - 2·skew`).
pub fn never_collected_within_ms() -> u64 {
    2 * (GC_GRACE_MS - 2 * MAX_SKEW_MS as u64)
}
