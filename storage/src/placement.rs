//! Placement: which nodes hold a blob's copies or shards, and which copies rebalancing moves.
//!
//! Copies go to distinct fault domains first, so that a blob survives the loss of any one fault
//! domain. Among the nodes that qualify, the choice is a weighted rendezvous hash of the blob's
//! digest and the node id, weighted by the node's reported free bytes: a node with twice the free
//! space receives about twice the copies, and every node computes the same answer from the same
//! inputs (digest, members, reported capacities). A node whose free space would drop below
//! [`RESERVE_PERCENT`] of its capacity is never chosen. The receiving node keeps the first copy
//! when it has room (the bytes are already on its disk).

use std::collections::{BTreeMap, BTreeSet};

use keelson_raft::{NodeCapacity, NodeId, NodeInfo};

/// Share of a node's capacity (in percent) that new copies never use: a node at or below it is
/// nearly full and receives nothing.
pub const RESERVE_PERCENT: u64 = 5;

/// A candidate holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: NodeId,
    pub fault_domain: String,
    /// Its last reported capacity (`None`: not reported yet; weighted like an average node).
    pub capacity: Option<NodeCapacity>,
}

impl Candidate {
    pub fn new(id: NodeId, fault_domain: &str) -> Candidate {
        Candidate {
            id,
            fault_domain: fault_domain.to_string(),
            capacity: None,
        }
    }

    /// The members as candidates, with their reported capacities.
    pub fn from_members(
        members: &BTreeMap<NodeId, (NodeInfo, bool)>,
        capacities: &BTreeMap<NodeId, NodeCapacity>,
    ) -> Vec<Candidate> {
        members
            .iter()
            .map(|(id, (node, _))| Candidate {
                id: *id,
                fault_domain: node.fault_domain.clone(),
                capacity: capacities.get(id).cloned(),
            })
            .collect()
    }

    /// Free bytes left after storing `need` more and keeping the reserve (`None`: it does not
    /// fit, or the node is nearly full).
    fn room_after(&self, need: u64) -> Option<u64> {
        match &self.capacity {
            None => Some(u64::MAX),
            Some(c) => c
                .free
                .checked_sub(need)
                .and_then(|left| left.checked_sub(c.total / 100 * RESERVE_PERCENT)),
        }
    }

    /// True when the node may receive `need` more bytes.
    pub fn accepts(&self, need: u64) -> bool {
        self.room_after(need).is_some()
    }
}

/// The rendezvous weights of the candidates that accept `need` bytes: their room after storing
/// it; nodes that have not reported yet weigh as much as the average reported one.
fn weights(candidates: &[Candidate], need: u64) -> BTreeMap<NodeId, f64> {
    let known: Vec<f64> = candidates
        .iter()
        .filter(|c| c.capacity.is_some())
        .filter_map(|c| c.room_after(need))
        .map(|r| r as f64)
        .collect();
    let average = if known.is_empty() {
        1.0
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    candidates
        .iter()
        .filter_map(|c| {
            let room = c.room_after(need)?;
            let w = if c.capacity.is_some() { room as f64 } else { average };
            Some((c.id, w.max(1.0)))
        })
        .collect()
}

/// A uniform number in (0, 1) from the blob's key and a node id (FNV-1a, then a splitmix64
/// finaliser): the same on every node and every run.
fn unit_hash(key: &[u8], id: NodeId) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.iter().chain(id.to_be_bytes().iter()) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// Weighted rendezvous score: the candidate with the highest one wins; the chance of winning is
/// proportional to the weight.
fn score(weight: f64, key: &[u8], id: NodeId) -> f64 {
    -weight / unit_hash(key, id).ln()
}

/// The candidates in preference order for this blob: accepting ones only, best score first.
fn ranked<'a>(candidates: &'a [Candidate], need: u64, spread_key: &[u8]) -> Vec<&'a Candidate> {
    let weights = weights(candidates, need);
    let mut out: Vec<(&Candidate, f64)> = candidates
        .iter()
        .filter_map(|c| weights.get(&c.id).map(|w| (c, score(*w, spread_key, c.id))))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.id.cmp(&b.0.id)));
    out.into_iter().map(|(c, _)| c).collect()
}

fn domain_of(candidates: &[Candidate], id: NodeId) -> Option<&str> {
    candidates.iter().find(|c| c.id == id).map(|c| c.fault_domain.as_str())
}

/// Picks up to `copies` holders for a blob of `need` bytes: `local` first when it has room,
/// then distinct fault domains before repeats.
pub fn choose(candidates: &[Candidate], local: NodeId, copies: usize, need: u64, spread_key: &[u8]) -> Vec<NodeId> {
    let keep: Vec<NodeId> = candidates
        .iter()
        .filter(|c| c.id == local && c.accepts(need))
        .map(|c| c.id)
        .collect();
    let mut chosen = extend(candidates, &keep, copies, need, spread_key);
    chosen.truncate(copies.max(1));
    chosen
}

/// Keeps `keep` (current holders, in order) and adds candidates until there are `copies`
/// holders: fault domains not yet used first, then any other node with room. Repair uses it to
/// place new copies next to the surviving ones.
pub fn extend(candidates: &[Candidate], keep: &[NodeId], copies: usize, need: u64, spread_key: &[u8]) -> Vec<NodeId> {
    let order = ranked(candidates, need, spread_key);
    let mut chosen = keep.to_vec();
    let mut used_domains: BTreeSet<&str> = keep.iter().filter_map(|id| domain_of(candidates, *id)).collect();
    // First pass: new fault domains only; second pass: anything left.
    for pass in 0..2 {
        for c in &order {
            if chosen.len() >= copies {
                return chosen;
            }
            if chosen.contains(&c.id) || (pass == 0 && used_domains.contains(c.fault_domain.as_str())) {
                continue;
            }
            chosen.push(c.id);
            used_domains.insert(&c.fault_domain);
        }
    }
    chosen
}

/// Rebalancing of a replicated blob: when two of its `holders` share a fault domain and a node
/// with room sits in a domain holding no copy, returns `(from, to)` — move the copy on `from`
/// (in the crowded domain, the node with the least room) to `to`. `None` when the copies already
/// span as many domains as they can.
pub fn rebalance_copy(
    candidates: &[Candidate],
    holders: &[NodeId],
    need: u64,
    spread_key: &[u8],
) -> Option<(NodeId, NodeId)> {
    let mut per_domain: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
    for h in holders {
        per_domain.entry(domain_of(candidates, *h)?).or_default().push(*h);
    }
    let crowded = per_domain
        .values()
        .filter(|hs| hs.len() >= 2)
        .max_by_key(|hs| hs.len())?;
    let to = ranked(candidates, need, spread_key)
        .into_iter()
        .find(|c| !per_domain.contains_key(c.fault_domain.as_str()))?;
    let from = least_room(candidates, crowded)?;
    Some((from, to.id))
}

/// Of `ids`, the node with the least free space (unknown counts as most), lowest id on ties.
fn least_room(candidates: &[Candidate], ids: &[NodeId]) -> Option<NodeId> {
    ids.iter().copied().min_by_key(|id| {
        let free = candidates
            .iter()
            .find(|c| c.id == *id)
            .and_then(|c| c.capacity.clone())
            .map_or(u64::MAX, |c| c.free);
        (free, *id)
    })
}

/// Rebalancing of a coded blob: returns `(shard index, to)` when moving one shard lowers the
/// crowding — from a fault domain holding two or more shards to a domain holding none, or else
/// from a node holding two or more shards to a node holding none in a domain no fuller than the
/// source's. `shards[i]` is shard `i`'s holder.
pub fn rebalance_shard(
    candidates: &[Candidate],
    shards: &[Option<NodeId>],
    need: u64,
    spread_key: &[u8],
) -> Option<(usize, NodeId)> {
    let mut per_domain: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_node: BTreeMap<NodeId, usize> = BTreeMap::new();
    for h in shards.iter().flatten() {
        *per_domain.entry(domain_of(candidates, *h)?).or_default() += 1;
        *per_node.entry(*h).or_default() += 1;
    }
    let order = ranked(candidates, need, spread_key);
    // The shard to move: on the most crowded node of the most crowded domain, last index first.
    let pick = |from_domain: &str| -> Option<usize> {
        (0..shards.len())
            .rev()
            .filter(|i| shards[*i].is_some())
            .max_by_key(|i| {
                let h = shards[*i].unwrap_or_default();
                let in_domain = domain_of(candidates, h) == Some(from_domain);
                (in_domain, per_node.get(&h).copied().unwrap_or(0))
            })
    };
    let (crowded_domain, crowded) = per_domain.iter().max_by_key(|(d, n)| (**n, std::cmp::Reverse(**d)))?;
    if *crowded >= 2 {
        if let Some(to) = order.iter().find(|c| !per_domain.contains_key(c.fault_domain.as_str())) {
            return Some((pick(crowded_domain)?, to.id));
        }
    }
    let (node, count) = per_node.iter().max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))?;
    if *count < 2 {
        return None;
    }
    let from_domain = domain_of(candidates, *node)?;
    let from_count = per_domain.get(from_domain).copied().unwrap_or(0);
    let to = order.iter().find(|c| {
        !per_node.contains_key(&c.id)
            && (c.fault_domain == from_domain
                || per_domain.get(c.fault_domain.as_str()).copied().unwrap_or(0) < from_count)
    })?;
    let index = (0..shards.len()).rev().find(|i| shards[*i] == Some(*node))?;
    Some((index, to.id))
}

/// Of `holders`, one whose copy is surplus when the blob wants `want` copies: from the most
/// crowded fault domain, the node with the least room. `None` when there is no surplus.
pub fn surplus_copy(candidates: &[Candidate], holders: &[NodeId], want: usize) -> Option<NodeId> {
    if holders.len() <= want {
        return None;
    }
    let mut per_domain: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
    for h in holders {
        per_domain
            .entry(domain_of(candidates, *h).unwrap_or(""))
            .or_default()
            .push(*h);
    }
    let crowded = per_domain.values().max_by_key(|hs| hs.len())?;
    least_room(candidates, crowded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(spec: &[(NodeId, &str)]) -> Vec<Candidate> {
        spec.iter().map(|(id, fd)| Candidate::new(*id, fd)).collect()
    }

    fn with_free(mut all: Vec<Candidate>, free: &[(NodeId, u64, u64)]) -> Vec<Candidate> {
        for (id, total, free) in free {
            if let Some(c) = all.iter_mut().find(|c| c.id == *id) {
                c.capacity = Some(NodeCapacity {
                    total: *total,
                    free: *free,
                    reported_ms: 0,
                    key_ids: vec![],
                });
            }
        }
        all
    }

    fn domains(all: &[Candidate], chosen: &[NodeId]) -> BTreeSet<String> {
        chosen
            .iter()
            .map(|id| domain_of(all, *id).unwrap().to_string())
            .collect()
    }

    #[test]
    fn distinct_fault_domains_first() {
        let all = nodes(&[(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]);
        for key in 0u8..20 {
            let chosen = choose(&all, 1, 3, 10, &[key]);
            assert_eq!(chosen.len(), 3);
            assert_eq!(chosen[0], 1);
            assert_eq!(domains(&all, &chosen).len(), 3, "{chosen:?}");
        }
    }

    #[test]
    fn fewer_nodes_than_copies() {
        let all = nodes(&[(1, "a"), (2, "a")]);
        assert_eq!(choose(&all, 1, 3, 10, b"x"), vec![1, 2]);
        assert_eq!(choose(&nodes(&[(1, "a")]), 1, 3, 10, b"x"), vec![1]);
    }

    #[test]
    fn extend_keeps_survivors_and_prefers_new_domains() {
        let all = nodes(&[(2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]);
        for key in 0u8..20 {
            let chosen = extend(&all, &[3], 3, 10, &[key]);
            assert_eq!(chosen[0], 3);
            assert_eq!(domains(&all, &chosen).len(), 3, "{chosen:?}");
        }
        assert_eq!(extend(&all, &[2, 3, 5], 3, 10, b"x"), vec![2, 3, 5]);
    }

    #[test]
    fn spreads_over_nodes() {
        let all = nodes(&[(1, "a"), (2, "b"), (3, "c"), (4, "d")]);
        let mut seen = BTreeSet::new();
        for key in 0u8..50 {
            seen.insert(choose(&all, 1, 2, 10, &[key])[1]);
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn follows_free_space_within_a_domain() {
        // Domain b: node 3 has 9x the free space of node 4. Domain c: equal.
        let gib = 1u64 << 30;
        let all = with_free(
            nodes(&[(1, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]),
            &[
                (1, 100 * gib, 50 * gib),
                (3, 100 * gib, 90 * gib),
                (4, 100 * gib, 15 * gib),
                (5, 100 * gib, 50 * gib),
                (6, 100 * gib, 50 * gib),
            ],
        );
        let mut count: BTreeMap<NodeId, usize> = BTreeMap::new();
        let n = 4000;
        for key in 0..n {
            let chosen = choose(&all, 1, 3, 1 << 20, format!("blob{key}").as_bytes());
            assert_eq!(domains(&all, &chosen).len(), 3, "{chosen:?}");
            for id in chosen {
                *count.entry(id).or_default() += 1;
            }
        }
        assert_eq!(count[&1], n);
        // Room after the reserve: 85 GiB vs 10 GiB, so about 89% / 11%.
        let share3 = count[&3] as f64 / n as f64;
        assert!((0.85..0.93).contains(&share3), "node 3 got {share3:.3}: {count:?}");
        let share5 = count[&5] as f64 / n as f64;
        assert!((0.45..0.55).contains(&share5), "node 5 got {share5:.3}: {count:?}");
    }

    #[test]
    fn never_a_nearly_full_node() {
        let all = with_free(
            nodes(&[(1, "a"), (2, "b"), (3, "b"), (4, "c")]),
            // Node 3: 4% free, under the 5% reserve. Node 4: room, but not for 2 MiB.
            &[
                (1, 1000 << 20, 500 << 20),
                (2, 1000 << 20, 600 << 20),
                (3, 1000 << 20, 40 << 20),
                (4, 100 << 20, 6 << 20),
            ],
        );
        for key in 0u8..100 {
            let chosen = choose(&all, 1, 3, 2 << 20, &[key]);
            assert!(!chosen.contains(&3) && !chosen.contains(&4), "{chosen:?}");
            assert_eq!(chosen, vec![1, 2]);
        }
        // A full receiving node does not keep the first copy either.
        let full_local = with_free(nodes(&[(1, "a"), (2, "b"), (3, "c")]), &[(1, 100, 0)]);
        assert_eq!(choose(&full_local, 1, 3, 10, b"k").len(), 2);
        assert!(!choose(&full_local, 1, 3, 10, b"k").contains(&1));
    }

    #[test]
    fn deterministic_given_the_inputs() {
        let all = with_free(
            nodes(&[(1, "a"), (2, "b"), (3, "b"), (4, "c"), (5, "c")]),
            &[(2, 1 << 40, 1 << 39), (3, 1 << 40, 1 << 38)],
        );
        for key in 0u8..50 {
            assert_eq!(choose(&all, 1, 3, 5, &[key]), choose(&all.clone(), 1, 3, 5, &[key]));
        }
    }

    #[test]
    fn rebalances_copies_onto_an_empty_domain() {
        // After losing domain c, repair put the third copy in domain a; c is back (node 5 new).
        let all = nodes(&[(1, "a"), (2, "a"), (3, "b"), (5, "c")]);
        assert_eq!(rebalance_copy(&all, &[1, 3, 2], 10, b"k").map(|(_, to)| to), Some(5));
        let (from, _) = rebalance_copy(&all, &[1, 3, 2], 10, b"k").unwrap();
        assert!(from == 1 || from == 2);
        // Already distinct, or nowhere better to go: nothing to do.
        assert_eq!(rebalance_copy(&all, &[1, 3, 5], 10, b"k"), None);
        assert_eq!(
            rebalance_copy(&nodes(&[(1, "a"), (2, "a"), (3, "b")]), &[1, 2, 3], 10, b"k"),
            None
        );
        // A full node in the empty domain is no target.
        let full = with_free(all.clone(), &[(5, 100, 1)]);
        assert_eq!(rebalance_copy(&full, &[1, 3, 2], 10, b"k"), None);
        // The surplus copy of four comes from the crowded domain.
        let s = surplus_copy(&all, &[1, 3, 5, 2], 3).unwrap();
        assert!(s == 1 || s == 2);
        assert_eq!(surplus_copy(&all, &[1, 3, 5], 3), None);
    }

    #[test]
    fn rebalances_shards_until_domains_are_distinct() {
        // rs 4+2 after two nodes were lost: nodes 1 and 3 hold two shards each.
        let mut all = nodes(&[(1, "a"), (3, "c"), (4, "d"), (6, "f")]);
        let mut shards = vec![Some(1), Some(3), Some(3), Some(4), Some(1), Some(6)];
        assert_eq!(rebalance_shard(&all, &shards, 10, b"k"), None);
        all.extend(nodes(&[(7, "b"), (8, "e")]));
        let mut moves = 0;
        while let Some((index, to)) = rebalance_shard(&all, &shards, 10, b"k") {
            shards[index] = Some(to);
            moves += 1;
            assert!(moves <= 2, "{shards:?}");
        }
        let holders: BTreeSet<NodeId> = shards.iter().flatten().copied().collect();
        assert_eq!(holders.len(), 6, "{shards:?}");
        assert_eq!(domains(&all, &holders.into_iter().collect::<Vec<_>>()).len(), 6);
    }
}
