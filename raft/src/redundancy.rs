//! Redundancy policies and node capacities as the catalog records them.
//!
//! The policy a push uses — `replicas=N` or Reed-Solomon `rs=k+m` — is catalog state, committed
//! through Raft, so every node places blobs the same way: one cluster default, optionally
//! overridden per repository. Nodes also report their disk capacity through Raft, so that
//! placement, which weighs nodes by free space, sees the same inputs on every node.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Most copies a `replicas=N` policy may ask for.
pub const MAX_REPLICAS: u16 = 16;
/// Most shards (`k + m`) an `rs=k+m` policy may ask for.
pub const MAX_SHARDS: u16 = 64;

/// How the blobs of a repository (or, as the default, of the cluster) are kept.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum RedundancyPolicy {
    /// Whole copies on `N` nodes in distinct fault domains.
    Replicas(u16),
    /// Reed-Solomon: `k` data and `m` parity shards on `k + m` nodes in distinct fault domains.
    /// Blobs below the small-blob threshold are still replicated (three copies).
    Erasure { k: u16, m: u16 },
}

impl Default for RedundancyPolicy {
    fn default() -> Self {
        RedundancyPolicy::Replicas(3)
    }
}

/// Why a policy text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redundancy policy must be replicas=N (1 <= N <= {MAX_REPLICAS}) or rs=k+m (k, m >= 1, k + m <= {MAX_SHARDS}): {0:?}")]
pub struct PolicyParseError(pub String);

impl FromStr for RedundancyPolicy {
    type Err = PolicyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PolicyParseError(s.to_string());
        let (kind, value) = s.trim().split_once('=').ok_or_else(bad)?;
        match kind.trim() {
            "replicas" => {
                let n: u16 = value.trim().parse().map_err(|_| bad())?;
                if n == 0 || n > MAX_REPLICAS {
                    return Err(bad());
                }
                Ok(RedundancyPolicy::Replicas(n))
            }
            "rs" => {
                let (k, m) = value.split_once('+').ok_or_else(bad)?;
                let k: u16 = k.trim().parse().map_err(|_| bad())?;
                let m: u16 = m.trim().parse().map_err(|_| bad())?;
                // Checked: `rs=65535+1` must not wrap around to a small total.
                if k == 0 || m == 0 || k.checked_add(m).is_none_or(|total| total > MAX_SHARDS) {
                    return Err(bad());
                }
                Ok(RedundancyPolicy::Erasure { k, m })
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for RedundancyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedundancyPolicy::Replicas(n) => write!(f, "replicas={n}"),
            RedundancyPolicy::Erasure { k, m } => write!(f, "rs={k}+{m}"),
        }
    }
}

/// A node's disk as it last reported it: bytes Keelson may use in all, and bytes still free.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct NodeCapacity {
    pub total: u64,
    pub free: u64,
    /// The reporter's clock when it measured.
    pub reported_ms: u64,
    /// Ids (hex) of the master keys the reporter holds, the active one first; empty when it
    /// does not encrypt at rest. Catalog secrets are sealed only once every member reports the
    /// active key, so no member is ever handed a secret it cannot open.
    pub key_ids: Vec<String>,
}

/// Whether every member in `members` has reported holding master key `key_id` (hex). No
/// members (a node not yet in a cluster knows none) proves nothing: false.
pub fn all_hold_key(
    capacities: &std::collections::BTreeMap<crate::NodeId, NodeCapacity>,
    members: impl IntoIterator<Item = crate::NodeId>,
    key_id: &str,
) -> bool {
    let mut members = members.into_iter().peekable();
    members.peek().is_some()
        && members.all(|id| {
            capacities
                .get(&id)
                .is_some_and(|c| c.key_ids.iter().any(|k| k == key_id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for text in ["replicas=3", "replicas=1", "rs=4+2", "rs=10+4"] {
            let p: RedundancyPolicy = text.parse().unwrap();
            assert_eq!(p.to_string(), text);
        }
        assert_eq!(" rs = 4 + 2 ".parse(), Ok(RedundancyPolicy::Erasure { k: 4, m: 2 }));
        for bad in [
            "",
            "replicas",
            "replicas=0",
            "replicas=17",
            "rs=4",
            "rs=0+2",
            "rs=4+0",
            "rs=60+5",
            // Regression: k + m overflowed u16 and wrapped to 0, so this was accepted.
            "rs=65535+1",
            "rs=1+65535",
            "ec=4+2",
        ] {
            assert!(bad.parse::<RedundancyPolicy>().is_err(), "{bad}");
        }
    }
}
