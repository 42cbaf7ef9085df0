//! Rebalancing (leader, after repair): moves copies and shards so that every blob regains
//! distinct fault domains once nodes in new or emptied domains are available, and drops copies
//! beyond a blob's copy count (a holder that came back after repair had replaced it).
//!
//! Repair restores the *number* of copies with whatever live nodes there are, so after losing a
//! fault domain a blob may hold two copies in one domain. When a node in a domain without a copy
//! joins (or comes back), a pass plans one move per blob ([`plan`], pure) and carries it out:
//! the new copy (or rebuilt shard) is made durable first, then the record is changed with the
//! same compare-and-set commands repair uses, and only then is the old copy deleted (a shard left
//! behind is removed by its node's scrub after the grace period). Moves run only in passes with
//! nothing under-replicated, throttled by the repair rate; a move interrupted anywhere is either
//! not committed (the new copy is an orphan scrub removes) or committed (the old copy is an
//! orphan), and the next pass plans again from the catalog.

use std::collections::{BTreeMap, BTreeSet};

use keelson_raft::{BlobRecord, CatalogCommand, CatalogResponse, CodedLayout, NodeId, NodeInfo};

use super::health::RedundancyView;
use super::throttle::Throttle;
use super::BlobJobs;
use crate::digest::Digest;
use crate::erasure::Geometry;
use crate::placement::{rebalance_copy, rebalance_shard, surplus_copy, Candidate};

/// One planned change of where a blob lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub digest: String,
    pub size: u64,
    /// Bytes the move copies.
    pub bytes: u64,
    pub kind: MoveKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveKind {
    /// Copy the blob to `to`, then replace `from` by `to` in the holders (`expected`: the record's
    /// holders as read), then delete `from`'s copy.
    Copy {
        expected: Vec<NodeId>,
        holders: Vec<NodeId>,
        from: NodeId,
        to: NodeId,
    },
    /// Drop `drop`'s surplus copy from the holders, then delete it.
    Trim {
        expected: Vec<NodeId>,
        holders: Vec<NodeId>,
        drop: NodeId,
    },
    /// Rebuild shard `index` on `to`, then point the layout's entry at it.
    Shard {
        layout: CodedLayout,
        index: usize,
        to: NodeId,
    },
}

/// Plans at most one move per blob. `candidates` are the live members (with capacities); blobs
/// with a holder that is not live are left to repair. Each record comes with its layout (if
/// coded) and copy count (`None`: `replicas`).
pub fn plan<'a>(
    records: impl IntoIterator<Item = (&'a str, &'a BlobRecord, Option<&'a CodedLayout>, Option<u16>)>,
    candidates: &[Candidate],
    replicas: usize,
) -> Vec<Move> {
    let live: BTreeSet<NodeId> = candidates.iter().map(|c| c.id).collect();
    let mut out = Vec::new();
    for (digest, record, coded, copies) in records {
        let key = digest.split_once(':').map_or(digest, |(_, hex)| hex).as_bytes();
        if let Some(layout) = coded {
            if !layout.shards.iter().all(|h| h.is_some_and(|h| live.contains(&h))) {
                continue;
            }
            let geometry = Geometry::new(layout.k as usize, layout.m as usize, layout.chunk as usize, record.size);
            let shard_bytes = geometry.shard_bytes();
            if let Some((index, to)) = rebalance_shard(candidates, &layout.shards, shard_bytes, key) {
                out.push(Move {
                    digest: digest.to_string(),
                    size: record.size,
                    bytes: shard_bytes,
                    kind: MoveKind::Shard {
                        layout: layout.clone(),
                        index,
                        to,
                    },
                });
            }
            continue;
        }
        let mut holders: Vec<NodeId> = Vec::new();
        for h in &record.holders {
            if live.contains(h) && !holders.contains(h) {
                holders.push(*h);
            }
        }
        let want = copies.map_or(replicas, usize::from).max(1);
        if holders.len() < want.min(live.len()) {
            continue; // repair's business
        }
        let replace = |from: NodeId, to: Option<NodeId>| -> Vec<NodeId> {
            holders
                .iter()
                .filter_map(|h| if *h == from { to } else { Some(*h) })
                .collect()
        };
        if let Some(drop) = surplus_copy(candidates, &holders, want) {
            out.push(Move {
                digest: digest.to_string(),
                size: record.size,
                bytes: 0,
                kind: MoveKind::Trim {
                    expected: record.holders.clone(),
                    holders: replace(drop, None),
                    drop,
                },
            });
        } else if let Some((from, to)) = rebalance_copy(candidates, &holders, record.size, key) {
            out.push(Move {
                digest: digest.to_string(),
                size: record.size,
                bytes: record.size,
                kind: MoveKind::Copy {
                    expected: record.holders.clone(),
                    holders: replace(from, Some(to)),
                    from,
                    to,
                },
            });
        }
    }
    out
}

impl BlobJobs {
    /// Carries out planned moves (throttled, stopping when leadership is lost); returns the view
    /// with what is left.
    pub(super) async fn rebalance(
        &self,
        moves: Vec<Move>,
        members: &BTreeMap<NodeId, (NodeInfo, bool)>,
        mut view: RedundancyView,
    ) -> RedundancyView {
        if moves.is_empty() {
            return view;
        }
        tracing::info!(moves = moves.len(), bytes = view.bytes_to_move, "rebalancing pass");
        let mut throttle = Throttle::new(self.settings.repair_rate);
        for mv in moves {
            if !self.is_leader() {
                break;
            }
            if self.carry_out(&mv, members).await {
                view.misplaced = view.misplaced.saturating_sub(1);
                view.bytes_to_move = view.bytes_to_move.saturating_sub(mv.bytes);
                self.health.set_view(Some(view));
                throttle.pace(mv.bytes).await;
            }
        }
        view
    }

    /// One move; true when it was committed.
    async fn carry_out(&self, mv: &Move, members: &BTreeMap<NodeId, (NodeInfo, bool)>) -> bool {
        let Ok(digest) = Digest::parse(&mv.digest) else {
            return false;
        };
        let addr = |id: &NodeId| members.get(id).map(|(n, _)| n.peer_addr.clone());
        let (cmd, delete_from, counter) = match &mv.kind {
            MoveKind::Copy {
                expected,
                holders,
                from,
                to,
            } => {
                let Some(to_addr) = addr(to) else { return false };
                let sources: Vec<String> = holders.iter().filter(|h| *h != to).filter_map(addr).collect();
                if let Err(e) = self.peers.ask_fetch(&to_addr, &digest, mv.size, sources).await {
                    tracing::warn!(%digest, target = to, error = %e, "rebalancing copy failed");
                    return false;
                }
                let cmd = CatalogCommand::SetHolders {
                    digest: mv.digest.clone(),
                    expected: expected.clone(),
                    holders: holders.clone(),
                };
                (cmd, Some(*from), "rebalance.copies")
            }
            MoveKind::Trim {
                expected,
                holders,
                drop,
            } => {
                let cmd = CatalogCommand::SetHolders {
                    digest: mv.digest.clone(),
                    expected: expected.clone(),
                    holders: holders.clone(),
                };
                (cmd, Some(*drop), "rebalance.trimmed")
            }
            MoveKind::Shard { layout, index, to } => {
                let Some(to_addr) = addr(to) else { return false };
                let sources: Vec<Option<String>> = layout.shards.iter().map(|h| h.as_ref().and_then(addr)).collect();
                let geometry = Geometry::new(layout.k as usize, layout.m as usize, layout.chunk as usize, mv.size);
                if let Err(e) = self
                    .peers
                    .ask_rebuild(&to_addr, &digest, geometry, *index, &sources)
                    .await
                {
                    tracing::warn!(%digest, index, target = to, error = %e, "rebalancing shard failed");
                    return false;
                }
                let mut shards = layout.shards.clone();
                shards[*index] = Some(*to);
                let cmd = CatalogCommand::SetShards {
                    digest: mv.digest.clone(),
                    expected: layout.shards.clone(),
                    shards,
                };
                // The old shard file is an orphan now; its node's scrub removes it after the
                // grace period (a node may hold another shard of the same blob, so no Delete).
                (cmd, None, "rebalance.shards")
            }
        };
        match self.catalog.propose(cmd).await {
            Ok(CatalogResponse::Applied) => {}
            Ok(CatalogResponse::Rejected(r)) => {
                tracing::info!(%digest, reason = %r, "rebalancing skipped: record changed");
                return false;
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "rebalancing commit failed");
                return false;
            }
        }
        self.health.count(counter, 1);
        tracing::info!(%digest, kind = ?mv.kind, "blob rebalanced");
        if let Some(old) = delete_from.as_ref().and_then(addr) {
            // Only after the commit; a refusal (pinned) or failure leaves it to the scrub.
            if let Err(e) = self.peers.ask_delete(&old, &digest).await {
                tracing::info!(%digest, error = %e, "old copy left to the scrub");
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_record as rec;

    #[test]
    fn plans_moves_into_the_empty_domain_and_trims_surplus() {
        let live = [
            Candidate::new(1, "a"),
            Candidate::new(2, "a"),
            Candidate::new(3, "b"),
            Candidate::new(7, "c"),
        ];
        let crowded = rec(10, &[1, 3, 5, 2]); // 5 was removed; 1 and 2 share domain a
        let fine = rec(20, &[1, 3, 7]);
        let surplus = rec(30, &[1, 3, 7, 2]);
        let under = rec(40, &[1, 5]); // repair first
        let records = [("d:1", &crowded), ("d:2", &fine), ("d:3", &surplus), ("d:4", &under)];
        let moves = plan(records.iter().map(|(d, r)| (*d, *r, None, None)), &live, 3);
        assert_eq!(moves.len(), 2, "{moves:?}");
        match &moves[0].kind {
            MoveKind::Copy {
                expected,
                holders,
                from,
                to,
            } => {
                assert_eq!(expected, &vec![1, 3, 5, 2]);
                assert_eq!(*to, 7);
                assert!(*from == 1 || *from == 2);
                assert_eq!(holders.len(), 3);
                assert!(holders.contains(&7) && holders.contains(&3) && !holders.contains(from));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&moves[1].kind, MoveKind::Trim { drop, holders, .. } if (*drop == 1 || *drop == 2) && holders.len() == 3)
        );
        assert_eq!(moves[0].bytes, 10);
        // A blob placed for two copies in two domains stays as it is.
        let two = rec(50, &[1, 3]);
        assert!(plan([("d:5", &two, None, Some(2))], &live, 3).is_empty());
    }
}
