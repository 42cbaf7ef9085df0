//! Repair (leader only): restores every blob to `min(replicas, live members)` live copies.
//!
//! A pass surveys all blob records against the live members ([`super::liveness`]): holders that
//! left the cluster or have been silent too long count as lost. For each blob short of copies it
//! picks new holders with the placement rule (fault domains not yet holding a copy first), asks
//! each to `Fetch` the blob from a surviving holder, and commits the new holder list with
//! `SetHolders` — a compare-and-set on the old list, so a record that changed meanwhile (a push
//! of the same blob, a GC sweep) is left alone and looked at again next pass. Nothing is kept
//! between passes beyond liveness, so a pass cut short is just redone.

use std::collections::{BTreeMap, BTreeSet};

use keelson_raft::{BlobRecord, CatalogCommand, CatalogResponse, CodedLayout, NodeId};
use tokio::time::Instant;

use super::health::RedundancyView;
use super::throttle::Throttle;
use super::{BlobJobs, JobError};
use crate::digest::Digest;
use crate::placement::{extend, Candidate};

/// One blob short of copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairItem {
    pub digest: String,
    pub size: u64,
    /// The record's holder list as read (the compare-and-set's expected value).
    pub holders: Vec<NodeId>,
    /// Holders that are alive.
    pub live: Vec<NodeId>,
    /// Copies (or shards) to add.
    pub missing: usize,
    /// For an erasure-coded blob: its layout and the shard indexes to rebuild.
    pub coded: Option<(CodedLayout, Vec<usize>)>,
}

/// What a survey found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survey {
    pub items: Vec<RepairItem>,
    pub view: RedundancyView,
}

/// Compares each record with the live members: pure, so it is tested without a cluster.
/// Each record comes with its coded layout (if coded) and the copy count it was placed for
/// (`None`: `replicas`, the node's default, for blobs pushed before copy counts were recorded).
pub fn survey<'a>(
    records: impl IntoIterator<Item = (&'a str, &'a BlobRecord, Option<&'a CodedLayout>, Option<u16>)>,
    live: &BTreeSet<NodeId>,
    replicas: usize,
) -> Survey {
    let mut out = Survey::default();
    for (digest, record, coded, copies) in records {
        let want = copies.map_or(replicas, usize::from).min(live.len()).max(1);
        if let Some(layout) = coded {
            let lost: Vec<usize> = (0..layout.shards.len())
                .filter(|i| !layout.shards[*i].is_some_and(|h| live.contains(&h)))
                .collect();
            if lost.is_empty() {
                continue;
            }
            if layout.shards.len() - lost.len() < layout.k as usize {
                out.view.unavailable += 1;
                continue;
            }
            let geometry =
                crate::erasure::Geometry::new(layout.k as usize, layout.m as usize, layout.chunk as usize, record.size);
            out.view.under_replicated += 1;
            out.view.bytes_to_move += geometry.shard_bytes() * lost.len() as u64;
            out.items.push(RepairItem {
                digest: digest.to_string(),
                size: record.size,
                holders: record.holders.clone(),
                live: layout.holders().into_iter().filter(|h| live.contains(h)).collect(),
                missing: lost.len(),
                coded: Some((layout.clone(), lost)),
            });
            continue;
        }
        let mut live_holders: Vec<NodeId> = Vec::new();
        for h in &record.holders {
            if live.contains(h) && !live_holders.contains(h) {
                live_holders.push(*h);
            }
        }
        if live_holders.len() >= want {
            continue;
        }
        if live_holders.is_empty() {
            out.view.unavailable += 1;
            continue;
        }
        let missing = want - live_holders.len();
        out.view.under_replicated += 1;
        out.view.bytes_to_move += record.size * missing as u64;
        out.items.push(RepairItem {
            digest: digest.to_string(),
            size: record.size,
            holders: record.holders.clone(),
            live: live_holders,
            missing,
            coded: None,
        });
    }
    out
}

impl BlobJobs {
    /// The members the leader considers alive right now (pinging each one).
    async fn live_members(&self) -> BTreeSet<NodeId> {
        let members = self.catalog.members();
        let me = self.node_id();
        let probes = members.iter().filter(|(id, _)| **id != me).map(|(id, (node, _))| {
            let addr = node.peer_addr.clone();
            async move { (*id, self.peers.ping(&addr, std::time::Duration::from_secs(2)).await) }
        });
        let answers = futures_util::future::join_all(probes).await;
        let now = Instant::now();
        let matched = self.catalog.replication_matched().unwrap_or_default();
        let mut liveness = self.liveness.lock().unwrap_or_else(|p| p.into_inner());
        liveness.observe_replication(now, &matched);
        for (id, alive) in answers {
            if alive {
                liveness.saw(id, now);
            }
        }
        liveness.live(now, me, members.keys().copied(), self.settings.lost_after)
    }

    /// One repair pass; returns the survey's view after the repairs it made.
    pub async fn repair_pass(&self) -> Result<Option<RedundancyView>, JobError> {
        if !self.is_leader() {
            self.liveness.lock().unwrap_or_else(|p| p.into_inner()).reset();
            self.health.set_view(None);
            return Ok(None);
        }
        let live = self.live_members().await;
        let reader = self.catalog.reader();
        let records = reader.all_blobs()?;
        let mut layouts: BTreeMap<String, CodedLayout> = BTreeMap::new();
        let mut copies: BTreeMap<String, u16> = BTreeMap::new();
        for (digest, _) in &records {
            if let Some(layout) = reader.coded(digest)? {
                layouts.insert(digest.clone(), layout);
            } else if let Some(n) = reader.blob_copies(digest)? {
                copies.insert(digest.clone(), n);
            }
        }
        let found = survey(
            records
                .iter()
                .map(|(d, r)| (d.as_str(), r, layouts.get(d), copies.get(d).copied())),
            &live,
            self.settings.replicas,
        );
        let members = self.catalog.members();
        let capacities = reader.capacities()?;
        let candidates: Vec<Candidate> = Candidate::from_members(&members, &capacities)
            .into_iter()
            .filter(|c| live.contains(&c.id))
            .collect();
        let mut view = found.view;
        if found.items.is_empty() {
            // Full redundancy everywhere: now copies crowded into one fault domain may move.
            let moves = super::rebalance::plan(
                records
                    .iter()
                    .map(|(d, r)| (d.as_str(), r, layouts.get(d), copies.get(d).copied())),
                &candidates,
                self.settings.replicas,
            );
            drop(records);
            view.misplaced = moves.len() as u64;
            view.bytes_to_move = moves.iter().map(|m| m.bytes).sum();
            self.health.set_view(Some(view));
            return Ok(Some(self.rebalance(moves, &members, view).await));
        }
        drop(records);
        self.health.set_view(Some(view));
        tracing::info!(
            under_replicated = view.under_replicated,
            bytes_to_move = view.bytes_to_move,
            unavailable = view.unavailable,
            live = ?live,
            "repair pass"
        );
        let mut throttle = Throttle::new(self.settings.repair_rate);
        for item in found.items {
            if !self.is_leader() {
                break;
            }
            let (copied, unit) = match &item.coded {
                None => (self.repair_one(&item, &candidates, &members).await, item.size),
                Some((layout, lost)) => {
                    let geometry = crate::erasure::Geometry::new(
                        layout.k as usize,
                        layout.m as usize,
                        layout.chunk as usize,
                        item.size,
                    );
                    let rebuilt = self
                        .repair_coded(&item, layout, lost, geometry, &candidates, &members)
                        .await;
                    (rebuilt, geometry.shard_bytes())
                }
            };
            if copied > 0 {
                view.bytes_to_move = view.bytes_to_move.saturating_sub(unit * copied as u64);
                if copied >= item.missing {
                    view.under_replicated = view.under_replicated.saturating_sub(1);
                }
                self.health.set_view(Some(view));
                throttle.pace(unit * copied as u64).await;
            }
        }
        Ok(Some(view))
    }

    /// Copies one blob to new holders and commits them; returns how many copies were added.
    async fn repair_one(
        &self,
        item: &RepairItem,
        candidates: &[Candidate],
        members: &BTreeMap<NodeId, (keelson_raft::NodeInfo, bool)>,
    ) -> usize {
        let Ok(digest) = Digest::parse(&item.digest) else {
            return 0;
        };
        let want = item.live.len() + item.missing;
        let targets = extend(candidates, &item.live, want, item.size, digest.hex().as_bytes());
        let sources = self.peer_addrs(&item.live);
        let fetches = targets[item.live.len().min(targets.len())..].iter().filter_map(|t| {
            let addr = members.get(t)?.0.peer_addr.clone();
            let sources = sources.clone();
            let digest = &digest;
            Some(async move { (*t, self.peers.ask_fetch(&addr, digest, item.size, sources).await) })
        });
        let mut added = Vec::new();
        for (target, result) in futures_util::future::join_all(fetches).await {
            match result {
                Ok(()) => added.push(target),
                Err(e) => tracing::warn!(%digest, target, error = %e, "repair copy failed"),
            }
        }
        if added.is_empty() {
            return 0;
        }
        // Keep every holder that is still a member (a silent one may come back with its copy).
        let mut holders: Vec<NodeId> = item
            .holders
            .iter()
            .copied()
            .filter(|h| members.contains_key(h))
            .collect();
        holders.dedup();
        for a in &added {
            if !holders.contains(a) {
                holders.push(*a);
            }
        }
        let cmd = CatalogCommand::SetHolders {
            digest: item.digest.clone(),
            expected: item.holders.clone(),
            holders: holders.clone(),
        };
        match self.catalog.propose(cmd).await {
            Ok(CatalogResponse::Applied) => {
                self.health.count("repair.copies", added.len() as u64);
                tracing::info!(%digest, ?holders, "blob repaired");
                added.len()
            }
            Ok(CatalogResponse::Rejected(r)) => {
                tracing::info!(%digest, reason = %r, "repair skipped: record changed");
                0
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "repair commit failed");
                0
            }
        }
    }
}

impl BlobJobs {
    /// Rebuilds the lost shards of one coded blob on live nodes and commits the new layout;
    /// returns how many shards were rebuilt.
    async fn repair_coded(
        &self,
        item: &RepairItem,
        layout: &CodedLayout,
        lost: &[usize],
        geometry: crate::erasure::Geometry,
        candidates: &[Candidate],
        members: &BTreeMap<NodeId, (keelson_raft::NodeInfo, bool)>,
    ) -> usize {
        let Ok(digest) = Digest::parse(&item.digest) else {
            return 0;
        };
        let targets = shard_targets(
            candidates,
            &layout.shards,
            lost.len(),
            geometry.shard_bytes(),
            digest.hex().as_bytes(),
        );
        let live: BTreeSet<NodeId> = candidates.iter().map(|c| c.id).collect();
        let sources: Vec<Option<String>> = layout
            .shards
            .iter()
            .map(|h| {
                h.filter(|h| live.contains(h))
                    .and_then(|h| members.get(&h).map(|(n, _)| n.peer_addr.clone()))
            })
            .collect();
        let rebuilds = lost.iter().zip(targets.iter()).filter_map(|(index, target)| {
            let addr = members.get(target)?.0.peer_addr.clone();
            let sources = &sources;
            let digest = &digest;
            Some(async move {
                (
                    *index,
                    *target,
                    self.peers.ask_rebuild(&addr, digest, geometry, *index, sources).await,
                )
            })
        });
        let mut shards = layout.shards.clone();
        let mut rebuilt = 0;
        for (index, target, result) in futures_util::future::join_all(rebuilds).await {
            match result {
                Ok(()) => {
                    shards[index] = Some(target);
                    rebuilt += 1;
                }
                Err(e) => tracing::warn!(%digest, index, target, error = %e, "shard rebuild failed"),
            }
        }
        if rebuilt == 0 {
            return 0;
        }
        let cmd = CatalogCommand::SetShards {
            digest: item.digest.clone(),
            expected: layout.shards.clone(),
            shards: shards.clone(),
        };
        match self.catalog.propose(cmd).await {
            Ok(CatalogResponse::Applied) => {
                self.health.count("repair.shards", rebuilt as u64);
                tracing::info!(%digest, ?shards, "coded blob repaired");
                rebuilt
            }
            Ok(CatalogResponse::Rejected(r)) => {
                tracing::info!(%digest, reason = %r, "shard repair skipped: layout changed");
                0
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "shard repair commit failed");
                0
            }
        }
    }
}

/// Live nodes for `count` rebuilt shards of `need` bytes each: each goes to the node holding the
/// fewest shards of the blob, then in the fault domain holding the fewest, the placement rank
/// (free space, digest) deciding among equals; nearly full nodes are skipped.
pub fn shard_targets(
    candidates: &[Candidate],
    shards: &[Option<NodeId>],
    count: usize,
    need: u64,
    spread_key: &[u8],
) -> Vec<NodeId> {
    let order: Vec<NodeId> = crate::placement::extend(candidates, &[], candidates.len(), need, spread_key);
    let domain = |id: NodeId| {
        candidates
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.fault_domain.as_str())
            .unwrap_or("")
    };
    let mut per_node: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut per_domain: BTreeMap<&str, usize> = BTreeMap::new();
    for holder in shards.iter().flatten() {
        if candidates.iter().any(|c| c.id == *holder) {
            *per_node.entry(*holder).or_default() += 1;
            *per_domain.entry(domain(*holder)).or_default() += 1;
        }
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let Some(best) = order.iter().copied().min_by_key(|id| {
            (
                per_node.get(id).copied().unwrap_or(0),
                per_domain.get(domain(*id)).copied().unwrap_or(0),
            )
        }) else {
            break;
        };
        *per_node.entry(best).or_default() += 1;
        *per_domain.entry(domain(best)).or_default() += 1;
        out.push(best);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_record as rec;

    #[test]
    fn rebuilt_shards_spread_over_the_least_loaded_nodes() {
        let c = |id, fd: &str| Candidate::new(id, fd);
        let live = [c(1, "a"), c(3, "c"), c(4, "d"), c(6, "f")];
        let shards = [Some(1), Some(2), Some(3), Some(4), Some(5), Some(6)];
        for key in 0u8..10 {
            let t = shard_targets(&live, &shards, 2, 10, &[key]);
            assert_eq!(t.len(), 2);
            assert_ne!(t[0], t[1], "{t:?}");
        }
        let fresh = [c(1, "a"), c(7, "c"), c(8, "c"), c(9, "d")];
        let t = shard_targets(&fresh, &[Some(1), None, None], 2, 10, b"k");
        assert!(t.contains(&9) && (t.contains(&7) || t.contains(&8)), "{t:?}");
    }

    #[test]
    fn survey_counts_lost_shards() {
        let record = rec(3 << 20, &[1, 2, 3, 4, 5, 6]);
        let layout = CodedLayout {
            k: 4,
            m: 2,
            chunk: 256 << 10,
            shards: vec![Some(1), Some(2), Some(3), Some(4), Some(5), Some(6)],
        };
        let s = survey([("x", &record, Some(&layout), None)], &BTreeSet::from([1, 2, 3, 4]), 3);
        assert_eq!(s.view.under_replicated, 1);
        assert_eq!(s.view.bytes_to_move, 2 * 3 * ((256 << 10) + 32));
        assert_eq!(
            s.items[0].coded.as_ref().map(|(_, lost)| lost.clone()),
            Some(vec![4, 5])
        );
        let s = survey([("x", &record, Some(&layout), None)], &BTreeSet::from([1, 2, 3]), 3);
        assert_eq!(s.view.unavailable, 1);
    }

    #[test]
    fn survey_counts_lost_copies() {
        let records = [
            ("a".to_string(), rec(10, &[1, 3, 5])),
            ("b".to_string(), rec(20, &[5, 6, 2])),
            ("c".to_string(), rec(30, &[5, 6])),
            ("d".to_string(), rec(40, &[1, 2, 3])),
        ];
        let live = BTreeSet::from([1, 2, 3, 4]);
        let s = survey(records.iter().map(|(d, r)| (d.as_str(), r, None, None)), &live, 3);
        assert_eq!(s.view.under_replicated, 2);
        assert_eq!(s.view.bytes_to_move, 10 + 2 * 20);
        assert_eq!(s.view.unavailable, 1);
        assert_eq!(s.items[1].live, vec![2]);
        // Two live members: two copies are all that can be had.
        let s = survey(
            records.iter().map(|(d, r)| (d.as_str(), r, None, None)),
            &BTreeSet::from([1, 3]),
            3,
        );
        assert_eq!((s.view.under_replicated, s.view.unavailable), (0, 2), "{s:?}");
        let s = survey(
            records.iter().map(|(d, r)| (d.as_str(), r, None, None)),
            &BTreeSet::from([1, 5]),
            3,
        );
        assert_eq!(s.view.under_replicated, 3, "{s:?}");
    }
}
