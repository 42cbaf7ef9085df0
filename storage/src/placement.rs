//! Replica placement: which nodes hold a blob's copies.
//!
//! The receiving node keeps the first copy (the bytes are already on its disk); the others go to
//! nodes in fault domains not yet used, so that the copies of a blob survive the loss of any one
//! fault domain. Among equals the choice rotates with the digest, spreading load across nodes.

use keelson_raft::NodeId;

/// A candidate holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: NodeId,
    pub fault_domain: String,
}

/// Picks up to `copies` holders: `local` first, then distinct fault domains before repeats.
pub fn choose(candidates: &[Candidate], local: NodeId, copies: usize, spread_key: &[u8]) -> Vec<NodeId> {
    let mut chosen = extend(candidates, &[local], copies, spread_key);
    chosen.truncate(copies.max(1));
    chosen
}

/// Keeps `keep` (current holders, in order) and adds candidates until there are `copies`
/// holders: fault domains not yet used first, then any other node. Repair uses it to place new
/// copies next to the surviving ones.
pub fn extend(candidates: &[Candidate], keep: &[NodeId], copies: usize, spread_key: &[u8]) -> Vec<NodeId> {
    let mut others: Vec<&Candidate> = candidates.iter().filter(|c| !keep.contains(&c.id)).collect();
    others.sort_by_key(|c| c.id);
    if !others.is_empty() {
        let rotate = spread_key
            .iter()
            .take(8)
            .fold(0usize, |acc, b| acc.wrapping_mul(31).wrapping_add(*b as usize));
        let len = others.len();
        others.rotate_left(rotate % len);
    }
    let mut chosen = keep.to_vec();
    let mut used_domains: Vec<&str> = candidates
        .iter()
        .filter(|c| keep.contains(&c.id))
        .map(|c| c.fault_domain.as_str())
        .collect();
    // First pass: new fault domains only; second pass: anything left.
    for pass in 0..2 {
        for c in &others {
            if chosen.len() >= copies {
                return chosen;
            }
            if chosen.contains(&c.id) {
                continue;
            }
            if pass == 0 && used_domains.contains(&c.fault_domain.as_str()) {
                continue;
            }
            chosen.push(c.id);
            used_domains.push(&c.fault_domain);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(spec: &[(NodeId, &str)]) -> Vec<Candidate> {
        spec.iter()
            .map(|(id, fd)| Candidate {
                id: *id,
                fault_domain: fd.to_string(),
            })
            .collect()
    }

    #[test]
    fn distinct_fault_domains_first() {
        let all = nodes(&[(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]);
        for key in 0u8..20 {
            let chosen = choose(&all, 1, 3, &[key]);
            assert_eq!(chosen.len(), 3);
            assert_eq!(chosen[0], 1);
            let mut domains: Vec<_> = chosen
                .iter()
                .map(|id| all.iter().find(|c| c.id == *id).unwrap().fault_domain.clone())
                .collect();
            domains.sort();
            domains.dedup();
            assert_eq!(domains.len(), 3, "{chosen:?}");
        }
    }

    #[test]
    fn fewer_nodes_than_copies() {
        let all = nodes(&[(1, "a"), (2, "a")]);
        assert_eq!(choose(&all, 1, 3, b"x"), vec![1, 2]);
        assert_eq!(choose(&nodes(&[(1, "a")]), 1, 3, b"x"), vec![1]);
    }

    #[test]
    fn extend_keeps_survivors_and_prefers_new_domains() {
        let all = nodes(&[(2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]);
        for key in 0u8..20 {
            let chosen = extend(&all, &[3], 3, &[key]);
            assert_eq!(chosen[0], 3);
            let domains: std::collections::BTreeSet<_> = chosen
                .iter()
                .map(|id| all.iter().find(|c| c.id == *id).unwrap().fault_domain.clone())
                .collect();
            assert_eq!(domains.len(), 3, "{chosen:?}");
        }
        assert_eq!(extend(&all, &[2, 3, 5], 3, b"x"), vec![2, 3, 5]);
    }

    #[test]
    fn spreads_over_nodes() {
        let all = nodes(&[(1, "a"), (2, "b"), (3, "c"), (4, "d")]);
        let mut seen = std::collections::BTreeSet::new();
        for key in 0u8..50 {
            seen.insert(choose(&all, 1, 2, &[key])[1]);
        }
        assert_eq!(seen.len(), 3);
    }
}
